"""What the running stack costs: CPU seconds and memory (RSS and PSS) of every process the bench
started (NATS, Postgres with its backends, the services), read from /proc, grouped by role."""

from __future__ import annotations

import os
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")
ROLES = ("nats-server", "postgres", "gateway", "ingest", "projector")


def _children(pid: int) -> list[int]:
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return out


def descendants(root: int) -> list[int]:
    """Every process below ``root`` (not ``root`` itself)."""
    found, todo = [], _children(root)
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += _children(pid)
    return found


def role(pid: int) -> str | None:
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return None
    for name in ROLES:
        if name in command or f"services.{name}" in command:
            return name
    return None


def _by_role(root: int) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for pid in descendants(root):
        name = role(pid)
        if name is not None:
            out.setdefault(name, []).append(pid)
    return out


def cpu_seconds(root: int) -> dict[str, float]:
    """User and system CPU seconds used so far, per role, by the processes running now."""
    out: dict[str, float] = {}
    for name, pids in _by_role(root).items():
        total = 0.0
        for pid in pids:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime
        out[name] = total
    return out


def memory_mib(root: int) -> dict[str, dict[str, float]]:
    """RSS and PSS per role (PSS shares Postgres' shared buffers fairly among its backends)."""
    out: dict[str, dict[str, float]] = {}
    for name, pids in _by_role(root).items():
        rss = pss = 0
        for pid in pids:
            try:
                rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
            except OSError:
                continue
            for line in rollup.splitlines():
                key, _, value = line.partition(":")
                if key == "Rss":
                    rss += int(value.split()[0])
                elif key == "Pss":
                    pss += int(value.split()[0])
        out[name] = {"rss": round(rss / 1024, 1), "pss": round(pss / 1024, 1)}
    out["all"] = {
        "rss": round(sum(v["rss"] for v in out.values()), 1),
        "pss": round(sum(v["pss"] for v in out.values()), 1),
    }
    return out
