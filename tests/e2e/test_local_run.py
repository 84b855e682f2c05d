"""``usagehub up`` as a newcomer runs it: everything starts, survives a crashed embedded server,
stops on SIGTERM with no process left behind, and the next start keeps the data."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Any

from services.local.servers import free_port

SECRET = "local-run-admin-secret-0123456789abcdef"


def call(
    url: str, method: str = "GET", headers: dict[str, str] | None = None, body: bytes | None = None
) -> Any:
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    with urllib.request.urlopen(request, timeout=10) as response:
        text = response.read().decode()
        return json.loads(text) if response.headers.get_content_type() == "application/json" else text


def wait_until(check: Any, seconds: float) -> Any:
    deadline = time.monotonic() + seconds
    while True:
        try:
            return check()
        except (OSError, urllib.error.HTTPError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.25)


def processes_using(path: Path) -> list[str]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if str(path) in cmdline:
                found.append(f"{proc.name}: {cmdline}")
    return found


def up_environment(data: Path, port: int, secret: str | None = SECRET) -> dict[str, str]:
    """The environment of a ``usagehub up`` of its own: this data dir and port, embedded servers
    (no server URLs), JSON logs, and the admin secret unless ``secret`` is None."""
    env = {
        **os.environ,
        "USAGEHUB_DATA_DIR": str(data),
        "USAGEHUB_HTTP_PORT": str(port),
        "USAGEHUB_LOG_FORMAT": "json",
    }
    for name in ("USAGEHUB_NATS_URL", "USAGEHUB_DATABASE_URL", "USAGEHUB_SECRET_KEY"):
        env.pop(name, None)
    if secret is not None:
        env["USAGEHUB_SECRET_KEY"] = secret
    return env


def start(env: dict[str, str], stderr: IO[bytes] | int = subprocess.DEVNULL) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "services", "up"],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=stderr,
    )


def stop(up: subprocess.Popen[bytes]) -> None:
    os.killpg(up.pid, signal.SIGTERM)  # as Ctrl-C or `kill -TERM -- -PGID` would
    up.wait(30)


def test_up_runs_recovers_stops_cleanly_and_keeps_data(tmp_path: Path) -> None:
    data, port = tmp_path / "data", free_port()
    base = f"http://127.0.0.1:{port}"
    up = start(up_environment(data, port))
    try:
        wait_until(lambda: call(base + "/readyz"), 90)
        device = call(base + "/api/devices", "POST", {"Authorization": SECRET}, b'{"name": "Laptop"}')
        beat = {"Authorization": device["token"]}
        call(base + "/api/beat", "POST", beat)
        first = call(base + "/api/stats")

        # The embedded NATS dies: the supervisor starts it again, on the same port and data.
        nats = [line for line in processes_using(data / "nats") if "nats-server" in line]
        os.kill(int(nats[0].split(":")[0]), signal.SIGKILL)
        time.sleep(1)
        wait_until(lambda: call(base + "/api/beat", "POST", beat), 60)

        # The embedded Postgres dies too. A beat needs only ingest and NATS, so it is still taken;
        # its answer waits (bounded) for the read model, and the count catches up afterwards.
        postmaster = int((data / "postgres" / "data" / "postmaster.pid").read_text().split()[0])
        os.kill(postmaster, signal.SIGKILL)
        call(base + "/api/beat", "POST", beat)
        wait_until(lambda: call(base + "/api/stats"), 60)
    finally:
        stop(up)
    assert up.returncode is not None
    assert processes_using(data) == []

    up = start(up_environment(data, port))
    try:
        wait_until(lambda: call(base + "/readyz"), 60)
        again = call(base + "/api/stats")
    finally:
        stop(up)
    assert processes_using(data) == []
    assert again["total_beats"] == 3 and again["devices"][0]["name"] == "Laptop"
    assert again["uptime"] >= first["uptime"] + 1


def usagehub(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """A ``usagehub`` command as a newcomer types it: no server URLs or NATS user in the environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("USAGEHUB_")}
    env["USAGEHUB_DATA_DIR"] = str(data)
    return subprocess.run(
        [sys.executable, "-m", "services", *args], env=env, capture_output=True, text=True, timeout=120
    )


def test_usagehub_commands_find_the_system_up_runs(tmp_path: Path) -> None:
    data, port = tmp_path / "data", free_port()
    base = f"http://127.0.0.1:{port}"
    refused = usagehub(data, "rebuild", "heartbeat")
    assert refused.returncode == 2
    assert "USAGEHUB_NATS_URL is required" in refused.stderr and "make up" in refused.stderr

    log = tmp_path / "up.log"
    with log.open("wb") as sink:
        up = start(up_environment(data, port), sink)
    try:
        wait_until(lambda: call(base + "/readyz"), 90)
        running = data / "running.json"
        assert running.stat().st_mode & 0o777 == 0o600
        assert json.loads(running.read_text())["http_url"] == base + "/"
        device = call(base + "/api/devices", "POST", {"Authorization": SECRET}, b'{"name": "Laptop"}')
        call(base + "/api/beat", "POST", {"Authorization": device["token"]})

        added = usagehub(data, "links", "add", "Docs", "https://example.org/docs")
        assert added.returncode == 0, added.stderr
        assert json.loads(added.stdout)["name"] == "Docs"
        printer = usagehub(data, "devices", "add", "Printer")
        assert printer.returncode == 0, printer.stderr
        first_token = json.loads(printer.stdout)["token"]
        call(base + "/api/beat", "POST", {"Authorization": first_token})
        renewed = usagehub(data, "devices", "token", str(json.loads(printer.stdout)["id"]))
        assert renewed.returncode == 0, renewed.stderr
        call(base + "/api/beat", "POST", {"Authorization": json.loads(renewed.stdout)["token"]})
        try:
            call(base + "/api/beat", "POST", {"Authorization": first_token})
            raise AssertionError("the replaced token still beats")
        except urllib.error.HTTPError as exc:
            assert exc.code == 401
        rebuilt = usagehub(data, "rebuild", "heartbeat", "links")
        assert rebuilt.returncode == 0, rebuilt.stderr
        assert "rebuilt heartbeat up to stream position" in rebuilt.stdout
        # Not a terminal: each replay's progress is a plain line, the last one saying it is done.
        assert re.search(
            r"^rebuild heartbeat \[#+\] 100% \d+/\d+ events .* in +\d+:\d\d$", rebuilt.stderr, re.M
        )
        # The reads find the running system's Postgres as the writes find its NATS.
        links = usagehub(data, "links", "list")
        assert links.returncode == 0, links.stderr
        assert [link["name"] for link in json.loads(links.stdout)["items"]] == ["Docs"]
        devices = json.loads(usagehub(data, "devices", "list").stdout)["items"]
        assert [(d["name"], d["num_beats"]) for d in devices] == [("Laptop", 1), ("Printer", 2)]
        assert call(base + "/api/stats")["total_beats"] == 3
        status = usagehub(data, "status")
        assert status.returncode == 0, status.stdout + status.stderr
        assert status.stdout.startswith(f"usagehub at {base}/  ready")
        assert "USAGEHUB_EVENTS:" in status.stdout and "heartbeat" in status.stdout
        as_json = json.loads(usagehub(data, "status", "--json").stdout)
        assert as_json["ready"] and as_json["readiness"]["projection_lag"]["heartbeat"] == 0
        assert call(base + f"/api/links/{json.loads(added.stdout)['id']}")["name"] == "Docs"

        # A second `up` on the same data dir, or on the same port, is one clear line, not tracebacks.
        again = subprocess.run(
            [sys.executable, "-m", "services", "up"],
            env={**os.environ, "USAGEHUB_DATA_DIR": str(data), "USAGEHUB_HTTP_PORT": str(free_port())},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert again.returncode == 1
        assert again.stderr.strip().splitlines() == [
            f"usagehub: the data dir {data} is in use by another usagehub up (pid {up.pid}, {base}/);"
            " stop it first, or give this one its own USAGEHUB_DATA_DIR"
        ]
        elsewhere = subprocess.run(
            [sys.executable, "-m", "services", "up"],
            env={**os.environ, "USAGEHUB_DATA_DIR": str(tmp_path / "other"), "USAGEHUB_HTTP_PORT": str(port)},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert elsewhere.returncode == 1
        assert len(elsewhere.stderr.strip().splitlines()) == 1
        assert elsewhere.stderr.startswith(f"usagehub: cannot listen on 127.0.0.1:{port} (")

        # Announced once the gateway is ready, with the address to open.
        deadline = time.monotonic() + 30
        while f"usagehub is up at {base}/" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        announced = [line for line in log.read_text().splitlines() if "usagehub is up at" in line]
        assert len(announced) == 1, log.read_text()[-2000:]
    finally:
        stop(up)
    assert not (data / "running.json").exists()
    assert usagehub(data, "rebuild", "heartbeat").returncode == 2
    down = usagehub(data, "status")
    assert down.returncode == 1 and "NOT READY" in down.stdout and "does not answer" in down.stdout


def test_an_unset_admin_secret_is_one_warning_saying_what_it_turns_off(tmp_path: Path) -> None:
    log = tmp_path / "up.log"
    with log.open("wb") as sink:
        up = start(up_environment(tmp_path / "data", free_port(), secret=None), sink)
    try:
        deadline = time.monotonic() + 60
        while "USAGEHUB_SECRET_KEY is not set" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        stop(up)
    warnings = [json.loads(line) for line in log.read_text().splitlines() if "SECRET_KEY" in line]
    assert len(warnings) == 1 and warnings[0]["level"] == "warning"
    assert "the admin routes are off" in warnings[0]["event"] and "openssl rand" in warnings[0]["event"]
