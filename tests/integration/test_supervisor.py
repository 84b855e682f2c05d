"""``usagehub up`` never gives up on a crashing process: it restarts it after pauses that grow to a
cap, says why in one line, and the other processes keep running meanwhile."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from services.local.supervisor import Backoff, Supervised, describe_exit, supervise


def test_pauses_double_to_the_cap_and_start_over_after_a_stable_run() -> None:
    backoff = Backoff(first=0.5, cap=30.0, stable=60.0)
    pauses = [backoff.pause_after(ran_for=1.0) for _ in range(9)]
    assert pauses == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert backoff.pause_after(ran_for=61.0) == 0.5
    assert backoff.pause_after(ran_for=1.0) == 1.0


@pytest.mark.parametrize(("returncode", "said"), [(3, "exit status 3"), (-9, "killed by SIGKILL")])
def test_an_exit_is_described(returncode: int, said: str) -> None:
    assert describe_exit(returncode) == said


def python(code: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE)


def test_a_crashing_child_is_restarted_with_growing_pauses_while_the_rest_keeps_running() -> None:
    crashing = Supervised(
        "crasher",
        lambda: python("import sys; print('starting', file=sys.stderr); sys.exit('bad configuration: x')"),
        Backoff(first=0.1, cap=0.8, stable=60.0),
    )
    steady = Supervised("steady", lambda: python("import time; time.sleep(60)"))
    crashing.start()
    steady.start()
    stop = threading.Event()
    runner = threading.Thread(target=supervise, args=([crashing, steady], stop.is_set, 0.02))
    runner.start()
    try:
        deadline = time.monotonic() + 30
        while len(crashing.starts) < 7 and time.monotonic() < deadline:
            time.sleep(0.05)
        steady_running = steady.process is not None and steady.process.poll() is None
    finally:
        stop.set()
        runner.join()
        for p in (crashing, steady):
            p.stop()
    assert len(crashing.starts) >= 7, "the crashing child was not restarted, or the supervisor gave up"
    gaps = [b - a for a, b in zip(crashing.starts, crashing.starts[1:], strict=False)]
    # Each gap is the child's short run plus the pause: 0.1, 0.2, 0.4, then the cap, 0.8.
    for gap, pause in zip(gaps, [0.1, 0.2, 0.4, 0.8, 0.8, 0.8], strict=False):
        assert pause <= gap < pause + 2.0
    assert gaps[2] > gaps[0] and gaps[3] > gaps[1]
    # Why, in one line: the exit status and the last line the child wrote to stderr.
    assert crashing.last_exit == "exit status 1; last stderr line: bad configuration: x"
    # The other child ran all along, never restarted.
    assert steady_running and len(steady.starts) == 1


def test_each_exited_run_is_reported_by_its_pid_before_the_restart() -> None:
    exited: list[int] = []
    child = Supervised(
        "worker",
        lambda: python("import sys; sys.exit(3)"),
        Backoff(first=0.05, cap=0.05),
        on_exit=exited.append,
    )
    child.start()
    stop = threading.Event()
    runner = threading.Thread(target=supervise, args=([child], stop.is_set, 0.02))
    runner.start()
    try:
        deadline = time.monotonic() + 30
        while len(child.starts) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        runner.join()
        child.stop()
    assert len(child.starts) >= 3
    # Every run but possibly the last, which may still be running when the loop stopped.
    assert len(exited) >= len(child.starts) - 1 and len(set(exited)) == len(exited)
