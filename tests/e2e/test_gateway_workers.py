"""``usagehub up`` with two gateway workers: both serve the one port, a worker killed under a stream of
beats is restarted while the other keeps answering, nothing acknowledged is lost or doubled, and any
worker's /metrics counts the requests of both."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

from services.local.servers import free_port
from tests.e2e.test_local_run import SECRET, call, start, stop, up_environment, wait_until

WORKERS = 2


def logged(log: Path, event: str, **fields: object) -> list[dict[str, object]]:
    """The JSON log lines of ``event`` with these fields, oldest first (supervisor and children)."""
    found = []
    for line in log.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        wanted = {"event": event, **fields}
        if isinstance(record, dict) and all(record.get(k) == v for k, v in wanted.items()):
            found.append(record)
    return found


def started_pids(log: Path, process: str) -> list[int]:
    """The pids the supervisor started ``process`` as, oldest first."""
    return [int(str(r["pid"])) for r in logged(log, "started", process=process)]


def next_start(log: Path, process: str, after: int, seconds: float = 30) -> int:
    """The pid ``process`` is started as next after the run of pid ``after``."""
    deadline = time.monotonic() + seconds
    while True:
        pids = started_pids(log, process)
        if after in pids and pids[-1] != after:
            return pids[pids.index(after) + 1]
        assert time.monotonic() < deadline, f"{process} was not started again"
        time.sleep(0.05)


def wait_listening(log: Path, pids: list[int], seconds: float = 60) -> None:
    """Until every one of ``pids`` has said it listens (/readyz answers as soon as one does)."""
    deadline = time.monotonic() + seconds
    while not set(pids) <= {r["pid"] for r in logged(log, "gateway listening")}:
        assert time.monotonic() < deadline, f"not all of {pids} listen"
        time.sleep(0.2)


def socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes


def server_side_inodes(port: int) -> dict[int, str]:
    """Client port -> inode of the accepted socket at our gateway port (loopback TCP connections)."""
    found = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            fields = row.split()
            local, remote, inode = fields[1], fields[2], fields[9]
            if int(local.rsplit(":", 1)[1], 16) == port and inode != "0":
                found[int(remote.rsplit(":", 1)[1], 16)] = inode
    return found


def answering_pids(port: int, workers: list[int], connections: int = 40) -> dict[int, int]:
    """Open ``connections`` kept-alive connections, send a request on each, and count by worker pid
    which process holds the server side of each answered one."""
    opened = [http.client.HTTPConnection("127.0.0.1", port, timeout=10) for _ in range(connections)]
    try:
        for conn in opened:
            conn.request("GET", "/healthz")
            answer = conn.getresponse()
            assert answer.status == 200 and json.loads(answer.read()) == {"alive": True}
        by_client_port = server_side_inodes(port)
        held = {pid: socket_inodes(pid) for pid in workers}
        served: dict[int, int] = {}
        for conn in opened:
            assert conn.sock is not None
            inode = by_client_port[conn.sock.getsockname()[1]]
            [pid] = [pid for pid, inodes in held.items() if inode in inodes]
            served[pid] = served.get(pid, 0) + 1
        return served
    finally:
        for conn in opened:
            conn.close()


def sample(text: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    match = re.search(re.escape(name) + r"\{" + re.escape(wanted) + r"\} ([0-9.e+-]+)", text)
    return float(match.group(1)) if match else 0.0


def scrape_each(port: int, workers: list[int], tries: int = 60) -> dict[int, str]:
    """/metrics as each worker answers it (connections land where Linux puts them: try until each
    worker has answered one)."""
    answers: dict[int, str] = {}
    for _ in range(tries):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.connect()
            assert conn.sock is not None
            client_port = conn.sock.getsockname()[1]
            conn.request("GET", "/metrics")
            answer = conn.getresponse()
            body = answer.read().decode()
            inode = server_side_inodes(port)[client_port]
            [pid] = [pid for pid in workers if inode in socket_inodes(pid)]
            answers.setdefault(pid, body)
        finally:
            conn.close()
        if len(answers) == len(workers):
            break
    assert set(answers) == set(workers), f"only {sorted(answers)} of {workers} answered /metrics"
    return answers


class BeatStreams:
    """``count`` threads sending beats one after another, each with a key of its own that is sent
    again until it is acknowledged (a try whose answer is lost never counts twice); after each
    acknowledgement the stream reads the statistics back, which must show every beat acknowledged
    before the read began (read-your-writes, on whichever worker answers)."""

    def __init__(self, base: str, token: str, count: int) -> None:
        self.base, self.token, self.count = base, token, count
        self.failures: list[float] = []  # when each failed try happened
        self.errors: list[str] = []  # broken promises: a read that missed an acknowledged beat
        self._acknowledged_at: list[float] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(count)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stopping.set()
        for thread in self._threads:
            thread.join(60)

    def acknowledged(self) -> int:
        with self._lock:
            return len(self._acknowledged_at)

    def acknowledged_between(self, start: float, end: float) -> int:
        with self._lock:
            return sum(start < at < end for at in self._acknowledged_at)

    def wait_acknowledged(self, n: int, seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while self.acknowledged() < n:
            assert not self.errors, self.errors
            assert time.monotonic() < deadline, f"{self.acknowledged()} of {n} beats acknowledged"
            time.sleep(0.05)

    def _run(self) -> None:
        while not self._stopping.is_set():
            key = f"beat-{uuid.uuid4().hex}"
            while True:
                try:
                    call(
                        self.base + "/api/beat", "POST", {"Authorization": self.token, "Idempotency-Key": key}
                    )
                    break
                except OSError:  # refused, reset, or an HTTP error (HTTPError is an OSError)
                    with self._lock:
                        self.failures.append(time.monotonic())
                    time.sleep(0.05)
            with self._lock:
                self._acknowledged_at.append(time.monotonic())
                seen_before_read = len(self._acknowledged_at)
            while True:
                try:
                    total = call(self.base + "/api/stats")["total_beats"]
                    break
                except OSError:
                    time.sleep(0.05)
            if total < seen_before_read:
                self.errors.append(f"read {total} beats after {seen_before_read} were acknowledged")


def test_two_workers_share_the_port_survive_a_kill_and_count_together(tmp_path: Path) -> None:
    data, port = tmp_path / "data", free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "up.log"
    env = {**up_environment(data, port), "USAGEHUB_HTTP_WORKERS": str(WORKERS)}
    with log.open("wb") as sink:
        up = start(env, sink)
    try:
        wait_until(lambda: call(base + "/readyz"), 90)
        names = [f"gateway-{i}" for i in range(1, WORKERS + 1)]
        workers = [started_pids(log, name)[0] for name in names]
        assert len(set(workers)) == WORKERS
        wait_listening(log, workers)

        # Both workers answer on the one port.
        served = answering_pids(port, workers)
        assert set(served) == set(workers), served

        # Any worker's /metrics is the sum of both: 40 requests spread over the two are 40 in each answer.
        health = {"route": "/healthz", "method": "GET", "status": "200"}
        before = scrape_each(port, workers)
        counted_before = {
            pid: sample(text, "usagehub_http_requests_total", **health) for pid, text in before.items()
        }
        assert len(set(counted_before.values())) == 1, counted_before
        served = answering_pids(port, workers)
        assert set(served) == set(workers) and sum(served.values()) == 40
        after = scrape_each(port, workers)
        for pid, text in after.items():
            counted = sample(text, "usagehub_http_requests_total", **health)
            assert counted - counted_before[pid] == 40, (pid, counted_before[pid], counted)
            # No per-process metric of whichever worker answered: those would be half the story.
            assert "process_cpu_seconds_total" not in text

        # Streams of beats, each beat retried with its key until acknowledged; gateway-1 is killed
        # while they run, so some of its requests are in flight.
        device = call(base + "/api/devices", "POST", {"Authorization": SECRET}, b'{"name": "Laptop"}')
        streams = BeatStreams(base, device["token"], count=4)
        streams.start()
        try:
            streams.wait_acknowledged(40)
            killed_at = time.monotonic()
            os.kill(workers[0], signal.SIGKILL)
            restarted = next_start(log, "gateway-1", after=workers[0])
            # Acknowledged before the supervisor even started the new process: the survivor's alone.
            restart_seen_at = time.monotonic()
            now = [restarted, workers[1]]
            wait_listening(log, now)
            streams.wait_acknowledged(streams.acknowledged() + 40)
        finally:
            streams.stop()
        assert streams.errors == []
        assert streams.acknowledged_between(killed_at, restart_seen_at) > 0
        # Only tries in flight on the killed worker, or queued at its socket, failed.
        assert len(streams.failures) <= 2 * streams.count, streams.failures
        assert all(killed_at <= at for at in streams.failures)

        # The supervisor restarted gateway-1 alone, said why, and the new one serves the port.
        assert started_pids(log, "gateway-2") == [workers[1]]
        assert "gateway-1 stopped (killed by SIGKILL;" in log.read_text()
        served = answering_pids(port, now)
        assert set(served) == set(now), served

        # Every acknowledged beat is there exactly once.
        beats = streams.acknowledged()
        stats = call(base + "/api/stats")
        assert stats["total_beats"] == beats
        assert [d["num_beats"] for d in stats["devices"]] == [beats]
        # The killed worker's counts stay in the sum (its files outlive it).
        beat_ok = {"route": "/api/beat", "method": "POST", "status": "200"}
        for text in scrape_each(port, now).values():
            assert sample(text, "usagehub_http_requests_total", **beat_ok) >= beats
            assert sample(text, "usagehub_http_requests_total", **health) >= counted_before[workers[0]] + 40
    finally:
        stop(up)
    assert up.returncode is not None
    assert not any(Path(f"/proc/{pid}").exists() for pid in [*workers, *started_pids(log, "gateway-1")]), (
        "a gateway worker outlived usagehub up"
    )


def test_one_worker_binds_alone_and_keeps_its_process_metrics(tmp_path: Path) -> None:
    data, port = tmp_path / "data", free_port()
    base = f"http://127.0.0.1:{port}"
    log = tmp_path / "up.log"
    with log.open("wb") as sink:
        up = start({**up_environment(data, port), "USAGEHUB_HTTP_WORKERS": "1"}, sink)
    try:
        wait_until(lambda: call(base + "/readyz"), 90)
        [pid] = started_pids(log, "gateway")
        wait_listening(log, [pid])
        assert set(answering_pids(port, [pid], connections=5)) == {pid}
        assert "process_cpu_seconds_total" in call(base + "/metrics")
        assert not (data / "gateway-metrics").exists()
        # Not shared: another process cannot bind the port beside it.
        taken = subprocess.run(
            [
                sys.executable,
                "-c",
                f"import socket; socket.create_server(('127.0.0.1', {port}), reuse_port=True)",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert taken.returncode != 0 and "Address already in use" in taken.stderr
    finally:
        stop(up)
