"""Progress of long operations (rebuilds, replays, catch-ups): counts, rate and ETA.

A live bar on a terminal (one line rewritten in place), and one plain line per
interval elsewhere (a log file, CI, ``kubectl logs``), so a long run never floods
a log with carriage returns nor stays silent.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Counts, rate and ETA: a live line on a terminal, one line per interval elsewhere.

    On a terminal the line is redrawn in place (``\\r``) at most every 0.2 s. Written to
    a file or a pipe (a log, CI, ``| tee``), redrawing would leave a line per update, so
    a line is written only once per ``interval`` (5 s), the first after one interval,
    and the end is one "done" line with the totals: a short run writes just that line,
    never the same figures twice.
    """

    def __init__(self, label: str, total: int, *, done: int = 0, stream: TextIO | None = None,
                 interval: float | None = None, width: int = 24):
        self.label = label
        self.total = total
        self.start_done = done
        self.done = done
        self.aggregates = 0
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.interval = interval if interval is not None else (0.2 if self.tty else 5.0)
        self.width = width
        self.started = time.monotonic()
        # Off a terminal the first line waits one interval; on one the bar shows at once.
        self.last_shown = float("-inf") if self.tty else self.started
        self.shown_width = 0

    @property
    def rate(self) -> float:
        elapsed = time.monotonic() - self.started
        return (self.done - self.start_done) / elapsed if elapsed > 0 else 0.0

    def eta(self) -> str:
        rate = self.rate
        if rate <= 0:
            return "--:--"
        return _clock(max(0.0, (self.total - self.done) / rate))

    def line(self) -> str:
        fraction = min(1.0, self.done / self.total) if self.total else 1.0
        filled = int(fraction * self.width)
        bar = "#" * filled + "." * (self.width - filled)
        aggregates = f"{self.aggregates:,} aggregates, " if self.aggregates else ""
        return (f"{self.label} [{bar}] {fraction:4.0%} {self.done:,}/{self.total:,} events, "
                f"{aggregates}{self.rate:,.0f} events/s, ETA {self.eta()}")

    def update(self, events: int, aggregates: int = 0, *, force: bool = False) -> None:
        self.done += events
        self.aggregates += aggregates
        now = time.monotonic()
        if force or now - self.last_shown >= self.interval:
            self.last_shown = now
            self.show()

    def show(self) -> None:
        line = self.line()
        if self.tty:
            # Pad over what a longer previous line left on the screen.
            self.stream.write("\r" + line.ljust(self.shown_width))
            self.shown_width = len(line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def finish(self) -> None:
        elapsed = time.monotonic() - self.started
        if self.tty:
            self.show()  # the live line ends at its final figures
            self.stream.write("\n")
        aggregates = f", {self.aggregates:,} aggregates" if self.aggregates else ""
        self.stream.write(f"{self.label}: done, {self.done:,}/{self.total:,} events{aggregates} in "
                          f"{_clock(elapsed)} ({self.rate:,.0f} events/s)\n")
        self.stream.flush()


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"
