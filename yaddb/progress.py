"""Progress bars for long work (a backup, a restore, a bench, a slave's full sync), drawn by
tqdm on standard error only when it is a terminal: pipes, files and logs get none."""
from __future__ import annotations

from typing import Optional

__all__ = ["Progress"]


class Progress:
    """Fed with (done, total) as work goes on; total may be an estimate, or None."""

    def __init__(self, description: str, unit: str = "items", unit_scale: bool = False) -> None:
        self._options = {"desc": description, "unit": unit, "unit_scale": unit_scale,
                         "disable": None, "leave": False}
        self._bar = None

    def __call__(self, done: int, total: Optional[int] = None) -> None:
        if self._bar is None:
            from tqdm import tqdm  # paid only by work long enough to report on
            self._bar = tqdm(total=total, **self._options)
        if self._bar.total is not None and self._bar.total < done:  # an estimate ran short
            self._bar.total = done
        self._bar.update(done - self._bar.n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
