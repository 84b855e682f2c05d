"""Progress bars of the long ``usagehub`` commands (rebuild, import) on stderr.

The line is a pure function of what is done, the total and the time taken (``render_progress``);
``ProgressBar`` only decides when to write it: redrawn in place on a terminal, and as an occasional
plain line otherwise, so that a log or a CI transcript stays readable."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from types import TracebackType
from typing import Self, TextIO

# A terminal is redrawn at most this often (seconds); a redraw per event would cost more than the work.
REDRAW_EVERY = 0.1
# Anything else (a pipe, a log file) gets a plain line at most this often, and one at the end.
PLAIN_LINE_EVERY = 10.0
# Narrower than this, the bar is left out and the line is cut to the width.
_MIN_BAR = 10


def _count(n: float) -> str:
    """``950``, ``12.5k``, ``3.1M``: short enough that the line keeps its shape as numbers grow."""
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= limit:
            return f"{n / limit:.1f}{suffix}"
    return f"{n:.1f}" if 0 < n < 10 and n != int(n) else f"{int(n)}"


def _duration(seconds: float) -> str:
    """``0:07``, ``12:30``, ``3:04:05``."""
    whole = int(max(0.0, seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def render_progress(
    label: str, done: int, total: int, elapsed: float, what: str, width: int, *, finished: bool = False
) -> str:
    """One line: ``label [####----]  42%  4200/10000 events   1.2k/s  ETA    0:05``, at most ``width``
    characters. Work found larger than its estimate (events appended during a rebuild) raises the
    total rather than passing 100 %; a finished line shows the time taken instead of the ETA."""
    done = max(0, done)
    total = max(total, done)
    fraction = 1.0 if total == 0 else done / total
    percent = int(fraction * 100)  # floor: 100 % only once everything is done
    rate = done / elapsed if elapsed > 0 else 0.0
    if finished:
        tail = f"in {_duration(elapsed):>8}"
    elif rate > 0:
        tail = f"ETA {_duration((total - done) / rate):>7}"
    else:
        tail = f"ETA {'?':>7}"
    # Padded to the total's width and the rate's usual one, so that the bar keeps its length.
    numbers = f"{percent:3d}% {done:>{len(str(total))}}/{total} {what}  {_count(rate):>5}/s  {tail}"
    room = width - len(label) - len(numbers) - 4  # the spaces and the brackets around the bar
    if room >= _MIN_BAR:
        filled = int(room * fraction)
        line = f"{label} [{'#' * filled}{'-' * (room - filled)}] {numbers}"
    else:
        line = f"{label} {numbers}"
    return line[: max(0, width)]


class ProgressBar:
    """Writes ``render_progress`` lines to ``stream`` as ``update`` and ``finish`` are called."""

    def __init__(
        self,
        stream: TextIO,
        label: str,
        what: str,
        total: int,
        *,
        enabled: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stream = stream
        self._label = label
        self._what = what
        self.total = total
        self._enabled = enabled
        self._clock = clock
        self._tty = stream.isatty()
        self._started = clock()
        # Nothing is written at the start: a plain line comes only once the work has taken a while.
        self._written = self._started if not self._tty else self._started - REDRAW_EVERY
        self._done = 0
        # A bar drawn on a terminal and not ended yet: the cursor is still on its line.
        self._open = False

    def _width(self) -> int:
        return shutil.get_terminal_size((100, 24)).columns - 1 if self._tty else 100

    def _write(self, finished: bool) -> None:
        line = render_progress(
            self._label,
            self._done,
            self.total,
            self._clock() - self._started,
            self._what,
            self._width(),
            finished=finished,
        )
        if self._tty:
            # Back to the start of the line, the new text, and the rest of the old one erased.
            self._stream.write("\r" + line + "\x1b[K" + ("\n" if finished else ""))
            self._open = not finished
        else:
            self._stream.write(line + "\n")
        self._stream.flush()

    def update(self, done: int, total: int | None = None) -> None:
        if total is not None:
            self.total = total
        self._done = done
        if not self._enabled:
            return
        now = self._clock()
        if now - self._written >= (REDRAW_EVERY if self._tty else PLAIN_LINE_EVERY):
            self._written = now
            self._write(finished=False)

    def finish(self, done: int | None = None) -> None:
        """The last line, always written (when enabled): what was done and how long it took."""
        if done is not None:
            self._done = done
        if self._enabled:
            self._write(finished=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        """Unfinished (the work failed): end the bar's line, so that the error has a line of its own."""
        if self._open:
            self._stream.write("\n")
            self._stream.flush()
            self._open = False
