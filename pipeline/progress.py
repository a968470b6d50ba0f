"""The progress bar every long step shows on stderr: downloads, checksums, extraction, splits."""
from __future__ import annotations

from collections.abc import Iterable

from tqdm import tqdm


def progress_bar(description: str, iterable: Iterable | None = None, total: int | None = None,
                 unit: str = "B") -> tqdm:
    """A tqdm bar over `iterable`, or one to update by hand up to `total`; bytes show as KB, MB, GB."""
    in_bytes = unit == "B"
    return tqdm(iterable, total=total, desc=description, unit=unit, unit_scale=in_bytes, unit_divisor=1024)
