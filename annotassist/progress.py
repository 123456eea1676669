"""Progress on long work: a tqdm bar on a terminal, plain lines when the output is a log file.

tqdm redraws its bar with carriage returns, which a log file keeps as one line per redraw. When stderr is not
a terminal, `progress` prints a plain line instead: at the start, every 10% or 30 s (whichever comes later),
and at the end, each with the rate and the time left.
"""
from __future__ import annotations

import sys
import time
from typing import Iterable, Iterator

from tqdm import tqdm


def _duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class LineProgress:
    """The subset of tqdm's interface annotassist uses, printing plain lines."""

    def __init__(self, iterable: Iterable | None = None, total: int | None = None, desc: str = "",
                 unit: str = "it", initial: int = 0, stream=None, min_seconds: float = 30.0, **_):
        self.iterable = iterable
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.desc, self.unit, self.n, self.start_n = desc, unit, initial, initial
        self.stream = stream or sys.stderr
        self.t0 = self.t_last = time.monotonic()
        self.min_seconds = min_seconds
        self.next_share = 0.1
        self.postfix = ""
        self._say(start=True)

    def _say(self, start: bool = False, end: bool = False) -> None:
        done = self.n - self.start_n
        elapsed = time.monotonic() - self.t0
        parts = [f"{self.desc}: {self.n}" + (f"/{self.total} {self.unit}" if self.total else f" {self.unit}")]
        if self.total:
            parts[0] += f" ({100 * self.n / self.total:.0f}%)"
        if not start and done and elapsed > 0:
            rate = elapsed / done
            parts.append(f"{rate:.2f} s/{self.unit}" if rate >= 1 else f"{1 / rate:.1f} {self.unit}/s")
            if self.total and not end:
                parts.append(f"{_duration(rate * (self.total - self.n))} left")
            if end:
                parts.append(f"took {_duration(elapsed)}")
        if self.postfix:
            parts.append(self.postfix)
        print(", ".join(parts), file=self.stream, flush=True)

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        share = self.n / self.total if self.total else 0.0
        if (self.total and share >= self.next_share and now - self.t_last >= self.min_seconds) or \
                (not self.total and now - self.t_last >= self.min_seconds):
            self.t_last = now
            while self.total and self.next_share <= share:
                self.next_share += 0.1
            self._say()

    def set_postfix(self, values: dict | None = None, **kw) -> None:
        values = {**(values or {}), **kw}
        self.postfix = " ".join(f"{k}={v}" for k, v in values.items())

    def set_description(self, desc: str) -> None:
        self.desc = desc

    def close(self) -> None:
        if self.n > self.start_n or self.total == 0:
            self._say(end=True)
        self.start_n = self.n  # closing twice says nothing more

    def __iter__(self) -> Iterator:
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def progress(iterable: Iterable | None = None, *, total: int | None = None, desc: str = "", unit: str = "it",
             disable: bool = False, initial: int = 0, leave: bool = True, stream=None):
    """A progress bar for `iterable` (or a manual one with `total`): tqdm on a terminal, plain lines in a log."""
    stream = stream or sys.stderr
    if disable or stream.isatty():
        return tqdm(iterable, total=total, desc=desc, unit=unit, disable=disable, initial=initial, leave=leave,
                    dynamic_ncols=True, file=stream)
    return LineProgress(iterable, total=total, desc=desc, unit=unit, initial=initial, stream=stream)
