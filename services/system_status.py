"""``usagehub status``: what runs, where to open it, how far each projection has come.

Gathered from the gateway's own ``/readyz`` (the one judge of readiness, so the two never disagree),
the event streams' sizes and the projections' checkpoints; rendered by a pure function."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

from shared.settings import Settings


@dataclass(frozen=True, slots=True)
class SystemStatus:
    url: str
    ready: bool
    # The gateway's /readyz answer; empty when the gateway did not answer (and why, in ``problem``).
    readiness: dict[str, Any] = field(default_factory=dict)
    problem: str = ""
    # Stream name -> messages it holds; empty when NATS could not be asked.
    streams: dict[str, int] = field(default_factory=dict)
    # Projection -> the stream position its read model has reached.
    positions: dict[str, int] = field(default_factory=dict)


def _readyz(url: str) -> tuple[dict[str, Any], str]:
    try:
        with urllib.request.urlopen(url + "readyz", timeout=5) as answer:
            return dict(json.loads(answer.read())), ""
    except urllib.error.HTTPError as exc:  # 503: not ready, and the body says why
        try:
            return dict(json.loads(exc.read())), ""
        except ValueError:
            return {}, f"the gateway answered {exc.code}"
    except (OSError, ValueError) as exc:
        return {}, f"the gateway at {url} does not answer ({exc})"


async def gather_status(settings: Settings, url: str) -> SystemStatus:
    from shared.bus import STREAMS, connect
    from shared.db import checkpoints, create_pool

    readiness, problem = await asyncio.to_thread(_readyz, url)
    streams: dict[str, int] = {}
    if settings.nats_url:
        try:
            nc = await asyncio.wait_for(connect(settings, "usagehub-status"), 10)
        except Exception as exc:  # any failure to connect is reported, not raised
            problem = problem or f"NATS does not answer ({type(exc).__name__})"
        else:
            try:
                js = nc.jetstream()
                for stream in STREAMS:
                    try:
                        streams[stream] = int(
                            (await asyncio.wait_for(js.stream_info(stream), 5)).state.messages
                        )
                    except Exception:  # not created yet, or not this user's to see
                        continue
            finally:
                await nc.close()
    positions: dict[str, int] = {}
    if settings.database_url:
        try:
            pool = await asyncio.wait_for(create_pool(settings.database_url, max_size=1), 10)
        except Exception as exc:
            problem = problem or f"Postgres does not answer ({type(exc).__name__})"
        else:
            try:
                positions = await checkpoints(pool)
            except Exception:  # no migrations yet: no checkpoints to show
                positions = {}
            finally:
                await pool.close()
    return SystemStatus(
        url=url,
        ready=bool(readiness.get("ready")),
        readiness=readiness,
        problem=problem,
        streams=streams,
        positions=positions,
    )


def _ok(value: object) -> str:
    return "ok" if value is True else "DOWN" if value is False else "?"


def render_status(status: SystemStatus) -> str:
    """The status as a person reads it: the address, each part up or down, the projections' lag."""
    r = status.readiness
    lines = [f"usagehub at {status.url}  {'ready' if status.ready else 'NOT READY'}"]
    if status.problem:
        lines.append(f"  problem: {status.problem}")
    lines.append(f"  gateway   {'ok' if r else 'DOWN'}")
    lines.append(f"  ingest    {_ok(r.get('ingest'))}")
    lines.append(f"  nats      {_ok(r.get('nats'))}")
    postgres = _ok(r.get("postgres"))
    pending = r.get("pending_migrations") or []
    lines.append(
        f"  postgres  {postgres}" + (f" (pending migrations: {', '.join(pending)})" if pending else "")
    )
    for stream, count in sorted(status.streams.items()):
        lines.append(f"  stream    {stream}: {count} messages")
    lag: dict[str, Any] = r.get("projection_lag") or {}
    quarantined: dict[str, Any] = r.get("quarantined") or {}
    stuck: dict[str, Any] = r.get("stuck") or {}
    names = sorted(set(lag) | set(status.positions))
    if names:
        width = max(len("projection"), *(len(n) for n in names))
        lines.append(f"  {'projection':<{width}}  {'position':>10}  {'lag':>8}  {'quarantined':>11}")
        for name in names:
            behind = lag.get(name)
            shown = "no consumer" if behind is None else str(behind)
            note = f"  stuck for {stuck[name]} s" if name in stuck else ""
            lines.append(
                f"  {name:<{width}}  {status.positions.get(name, 0):>10}  {shown:>8}"
                f"  {quarantined.get(name, 0):>11}{note}"
            )
    return "\n".join(lines) + "\n"
