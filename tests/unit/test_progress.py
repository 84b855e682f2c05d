"""The progress line of ``usagehub rebuild`` and ``usagehub import``, and when it is written."""

from __future__ import annotations

import io
import re

from hypothesis import given
from hypothesis import strategies as st

from services.progress import PLAIN_LINE_EVERY, ProgressBar, render_progress


def percent(line: str) -> int:
    found = re.search(r"(\d+)% ", line)
    assert found is not None, line
    return int(found.group(1))


def test_a_line_has_the_bar_the_share_the_counts_the_rate_and_the_eta() -> None:
    line = render_progress("rebuild links", 2500, 10_000, 2.0, "events", 80)
    assert line.startswith("rebuild links [")
    assert " 25%  2500/10000 events   1.2k/s  ETA    0:06" in line
    bar = line[line.index("[") + 1 : line.index("]")]
    assert set(bar) == {"#", "-"} and bar.count("#") == len(bar) // 4
    assert len(line) == 80


def test_a_finished_line_says_how_long_it_took() -> None:
    line = render_progress("import demo", 7, 7, 75.0, "commits", 80, finished=True)
    assert line.endswith("100% 7/7 commits    0.1/s  in     1:15")
    assert "-" not in line[line.index("[") : line.index("]")]


def test_before_any_rate_is_known_the_eta_is_unknown() -> None:
    assert render_progress("rebuild x", 0, 50, 0.0, "events", 80).endswith(
        "0%  0/50 events      0/s  ETA       ?"
    )


def test_nothing_to_do_is_done() -> None:
    assert percent(render_progress("rebuild x", 0, 0, 0.0, "events", 80)) == 100


def test_more_than_estimated_raises_the_total_rather_than_passing_100_percent() -> None:
    line = render_progress("rebuild x", 120, 100, 1.0, "events", 80)
    assert " 100% 120/120 events" in line


def test_long_durations_show_hours() -> None:
    assert render_progress("r", 1, 10_000, 1.0, "events", 100).endswith("ETA 2:46:39")


def test_a_narrow_terminal_drops_the_bar_then_cuts_the_line() -> None:
    narrow = render_progress("rebuild heartbeat", 5, 10, 1.0, "events", 50)
    assert "[" not in narrow and narrow.startswith("rebuild heartbeat  50%  5/10")
    assert len(render_progress("rebuild heartbeat", 5, 10, 1.0, "events", 12)) == 12


@given(
    done=st.integers(min_value=-10, max_value=10**12),
    total=st.integers(min_value=-10, max_value=10**12),
    elapsed=st.floats(min_value=0, max_value=10**7, allow_nan=False),
    width=st.integers(min_value=0, max_value=400),
    finished=st.booleans(),
)
def test_never_more_than_100_percent_and_never_wider_than_asked(
    done: int, total: int, elapsed: float, width: int, finished: bool
) -> None:
    line = render_progress("rebuild links", done, total, elapsed, "events", width, finished=finished)
    assert len(line) <= width
    assert "\n" not in line and "\r" not in line
    wide = render_progress("rebuild links", done, total, elapsed, "events", 400, finished=finished)
    assert 0 <= percent(wide) <= 100
    if "[" in wide:
        bar = wide[wide.index("[") + 1 : wide.index("]")]
        assert len(bar) >= 10 and bar == "#" * bar.count("#") + "-" * bar.count("-")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_gets_an_occasional_plain_line_and_the_last_one() -> None:
    clock, log = Clock(), io.StringIO()
    bar = ProgressBar(log, "rebuild links", "events", 100, clock=clock)
    for done in range(0, 100, 10):
        clock.now += 2.0
        bar.update(done)
    bar.finish(100)
    lines = log.getvalue().splitlines()
    # 20 s of work: one line after PLAIN_LINE_EVERY seconds, one at 20 s, and the last one.
    assert PLAIN_LINE_EVERY == 10.0 and len(lines) == 3
    assert "\r" not in log.getvalue() and "\x1b" not in log.getvalue()
    assert lines[-1].endswith("100% 100/100 events      5/s  in     0:20")


def test_a_terminal_is_redrawn_in_place() -> None:
    clock, tty = Clock(), Terminal()
    bar = ProgressBar(tty, "import demo", "commits", 0, clock=clock)
    bar.update(0, 40)
    for done in range(1, 41):
        clock.now += 0.05
        bar.update(done)
    bar.finish()
    text = tty.getvalue()
    assert text.count("\n") == 1 and text.endswith("\x1b[K\n")
    draws = text.split("\r")[1:]
    assert 10 <= len(draws) <= 22  # about one draw per 0.1 s of the 2 s, never one per update
    assert "100% 40/40 commits" in draws[-1]


def test_a_disabled_bar_writes_nothing() -> None:
    log = io.StringIO()
    bar = ProgressBar(log, "rebuild links", "events", 10, enabled=False)
    bar.update(5)
    bar.finish(10)
    assert log.getvalue() == ""


def test_a_bar_left_unfinished_ends_its_line_so_an_error_has_its_own() -> None:
    clock, tty = Clock(), Terminal()
    try:
        with ProgressBar(tty, "rebuild links", "events", 10, clock=clock) as bar:
            bar.update(3)
            raise OSError("lost")
    except OSError:
        tty.write("usagehub: lost\n")
    assert tty.getvalue().endswith("\x1b[K\nusagehub: lost\n")
    finished = Terminal()
    with ProgressBar(finished, "rebuild links", "events", 10, clock=clock) as bar:
        bar.finish(10)
    assert finished.getvalue().count("\n") == 1


def test_the_bar_keeps_its_length_as_the_counts_grow() -> None:
    lines = [render_progress("rebuild x", done, 50_000, 1.5, "events", 90) for done in (0, 7, 512, 49_999)]
    assert {len(line) for line in lines} == {90}
    assert len({line.index("]") for line in lines}) == 1
