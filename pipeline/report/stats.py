"""What a few seeds can say: a model's spread over them, and whether two models differ.

Three seeds are few, and two models' spreads need not be equal: Welch's t-test fits both, where
a rule such as "beyond twice the standard error" calls differences that chance makes often.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass

from scipy import stats

LEVEL = 0.05  # two-sided: "better" or "worse" only where chance alone would do it less than 5 % of the time
NOT_MEASURED = "not measured (two seeds or more of each)"
NO_DIFFERENCE = "no measurable difference"


@dataclass(frozen=True)
class Spread:
    mean: float
    std: float | None  # the sample standard deviation; none for one value
    n: int


def spread(values: list[float]) -> Spread:
    std = statistics.stdev(values) if len(values) > 1 else None
    return Spread(statistics.mean(values), std, len(values))


@dataclass(frozen=True)
class Verdict:
    answer: str
    difference: float | None = None  # mean of the model minus mean of the baseline
    low: float | None = None  # the difference's 95 % confidence interval
    high: float | None = None
    p: float | None = None


def verdict(model: list[float], baseline: list[float]) -> Verdict:
    """Welch's t-test of two samples, two-sided at 5 %: is `model` better or worse than `baseline`?
    The interval uses the Welch-Satterthwaite degrees of freedom, as the test does."""
    if len(model) < 2 or len(baseline) < 2:
        return Verdict(NOT_MEASURED)
    test = stats.ttest_ind(model, baseline, equal_var=False)
    interval = test.confidence_interval(1 - LEVEL)
    difference = statistics.mean(model) - statistics.mean(baseline)
    answer = NO_DIFFERENCE
    if test.pvalue < LEVEL:
        answer = "better" if difference > 0 else "worse"
    return Verdict(answer, difference, float(interval.low), float(interval.high), float(test.pvalue))
