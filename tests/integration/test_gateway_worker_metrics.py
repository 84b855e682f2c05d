"""Metrics of gateway workers sharing a port (prometheus_client's multiprocess mode), with real
processes: any one's /metrics body is the sum of all, a dead worker's counts stay in it and its
WebSocket clients leave it once the supervisor hands it back; alone, a process renders its own."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from prometheus_client.multiprocess import mark_process_dead

from shared.metrics import MULTIPROCESS_DIR_ENV

# One worker's life: some requests, some WebSocket clients; prints its pid.
WORKER = """
import os, sys
from shared import metrics
metrics.HTTP_REQUESTS.labels("/api/stats", "GET", "200").inc(int(sys.argv[1]))
metrics.WEBSOCKET_CLIENTS.set(int(sys.argv[2]))
print(os.getpid())
"""
# What /metrics answers (ops_http.metrics_response sends this body).
RENDER = "import sys; from shared import metrics; sys.stdout.write(metrics.render()[0].decode())"


def python(code: str, *args: str, metrics_dir: Path | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != MULTIPROCESS_DIR_ENV}
    if metrics_dir is not None:
        env[MULTIPROCESS_DIR_ENV] = str(metrics_dir)
    done = subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout


def value(text: str, line_start: str) -> float:
    match = re.search("^" + re.escape(line_start) + r" ([0-9.e+-]+)$", text, re.M)
    assert match, f"no {line_start} in:\n{text}"
    return float(match.group(1))


REQUESTS = 'usagehub_http_requests_total{method="GET",route="/api/stats",status="200"}'


def test_any_worker_renders_the_sum_and_a_dead_one_leaves_only_its_clients(tmp_path: Path) -> None:
    first = int(python(WORKER, "2", "3", metrics_dir=tmp_path))
    python(WORKER, "5", "4", metrics_dir=tmp_path)

    both = python(RENDER, metrics_dir=tmp_path)
    assert value(both, REQUESTS) == 7
    assert value(both, "usagehub_websocket_clients") == 7
    # Whichever worker answers, it is the sum, not one process's view of itself.
    assert "process_cpu_seconds_total" not in both and "pid=" not in both

    mark_process_dead(first, str(tmp_path))  # type: ignore[no-untyped-call]
    after = python(RENDER, metrics_dir=tmp_path)
    assert value(after, REQUESTS) == 7  # counters never go back
    assert value(after, "usagehub_websocket_clients") == 4


def test_a_process_of_its_own_renders_its_own_registry(tmp_path: Path) -> None:
    alone = python(WORKER + "\n" + RENDER, "2", "3", metrics_dir=None)
    assert value(alone.split("\n", 1)[1], REQUESTS) == 2
    assert value(alone, "usagehub_websocket_clients") == 3
    assert "process_cpu_seconds_total" in alone
    assert list(tmp_path.iterdir()) == []
