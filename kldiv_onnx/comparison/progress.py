"""Progress of a comparison on stderr: a bar on a terminal, plain lines elsewhere."""

from __future__ import annotations

import os
import sys
import time

PROGRESS_SECONDS_VAR = "KLDIV_ONNX_PROGRESS_SECONDS"
"""Seconds between progress lines when stderr is not a terminal (default 5)."""


class Progress:
    """Progress on stderr: a bar redrawn in place on a terminal; elsewhere (a CI log, a file) a
    plain line every few seconds (:data:`PROGRESS_SECONDS_VAR`) and one at the end (none for a
    run shorter than the interval). The rate and
    the ETA count from :meth:`begin` (the sessions built), not from the start."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total = total
        self.enabled = enabled
        self.terminal = enabled and sys.stderr.isatty()
        self.interval = 0.2
        if enabled and not self.terminal:
            try:
                self.interval = float(os.environ.get(PROGRESS_SECONDS_VAR, "5"))
            except ValueError:
                self.interval = 5.0
        self.start = time.perf_counter()
        self.began: float | None = None
        self.done_at_begin = 0
        self.last = self.start
        self.done = 0
        self.printed = False

    def begin(self) -> None:
        """The sessions are built: the rate and ETA count from here (called once)."""
        if self.began is None:
            self.began = time.perf_counter()
            self.done_at_begin = self.done

    def update(self, rows: int) -> None:
        self.done += rows
        if not self.enabled:
            return
        now = time.perf_counter()
        # the bar is drawn at the end too; off a terminal a run shorter than the interval
        # prints nothing
        due = now - self.last >= self.interval or (self.terminal and self.done >= self.total)
        if not due:
            return
        self.last = now
        self.printed = True
        frac = self.done / self.total if self.total else 1.0
        rate = self._rate(now)
        eta = "-:--" if rate is None else _clock((self.total - self.done) / rate if rate else 0)
        if self.terminal:
            bar = "#" * int(30 * frac)
            sys.stderr.write(
                f"\rcompare [{bar:<30}] {self.done}/{self.total} rows {100 * frac:5.1f}% ETA {eta} "
            )
        else:
            speed = "-" if rate is None else f"{rate:.0f}"
            sys.stderr.write(
                f"compare: {self.done}/{self.total} rows ({100 * frac:.1f} %), {speed} rows/s, "
                f"ETA {eta}\n"
            )
        sys.stderr.flush()

    def _rate(self, now: float) -> float | None:
        """Rows/s since :meth:`begin` (None before it, or before any row after it)."""
        if self.began is None or now <= self.began or self.done <= self.done_at_begin:
            return None
        return (self.done - self.done_at_begin) / (now - self.began)

    def close(self, finished: bool = True) -> None:
        """Clear the bar; off a terminal, a closing line after the progress lines of a run that
        ``finished`` (a failed one ends with its error line alone)."""
        if not self.enabled or not self.printed:
            return
        if self.terminal:
            sys.stderr.write("\r" + " " * 79 + "\r")
        elif finished:
            wall = time.perf_counter() - self.start
            sys.stderr.write(f"compare: {self.done}/{self.total} rows in {wall:.1f} s\n")
        sys.stderr.flush()


def _clock(seconds: float) -> str:
    s = int(seconds)
    return (
        f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"
    )


# ---------------------------------------------------------------------------------------------
# local
