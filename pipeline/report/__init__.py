"""Stage report: reports/results.md, the README's figures and tables, rebuilt from every recorded run.

`collect` reads the runs, `stats` says what their seeds can tell, `tables` writes the markdown,
and pipeline.visualize.compare draws the figures.
"""
from __future__ import annotations

from pipeline import paths
from pipeline.atomic import write_text_atomically
from pipeline.config import Config
from pipeline.errors import PipelineError
from pipeline.report import collect, tables

RESULTS = paths.REPORTS_DIR / "results.md"


def run(config: Config) -> None:
    runs = collect.runs(config)
    if not tables.README.exists():
        raise PipelineError(f"{tables.README} is missing (run the report in the project's root)")
    # Built first: a README without its markers stops the stage before it changes anything.
    readme = tables.readme_with_tables(tables.README.read_text(), runs)
    from pipeline.visualize import compare  # loads Keras with its package: only once the tables are sure

    figures = compare.draw(collect.measured(runs), config.seed, tables.ORIGINAL_STUDY, tables.TASK_NAMES)
    write_text_atomically(RESULTS, tables.results(config, runs, collect.splits(), figures))
    write_text_atomically(tables.README, readme)
    print(f"wrote {RESULTS} and the tables of {tables.README}")
