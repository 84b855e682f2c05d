"""Postgres: the pool, versioned SQL migrations applied at start-up, and projection checkpoints."""

from __future__ import annotations

import hashlib
from importlib import resources

import asyncpg

from shared.logging import get_logger

log = get_logger(__name__)

# A plain connection or one borrowed from a pool: everything here accepts either.
Conn = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy

# Any fixed number works; it only has to be the same in every process that migrates.
_MIGRATION_LOCK = 0x75736167  # "usag"


async def _keep_session(_: asyncpg.Connection) -> None:
    """A returned connection keeps its session: asyncpg still rolls back an open transaction first."""


async def create_pool(
    url: str,
    min_size: int = 1,
    max_size: int = 10,
    *,
    reset_sessions: bool = True,
    server_settings: dict[str, str] | None = None,
) -> asyncpg.Pool:
    """``reset_sessions=False`` is for callers that never leave session state behind (no ``SET``,
    no session advisory lock, no ``LISTEN``, no cursor): it saves asyncpg's reset query, a round
    trip to Postgres on every release, which was a fifth of the gateway's CPU on a read.
    ``server_settings`` are set on every connection as it starts (no round trip of their own)."""
    pool = await asyncpg.create_pool(
        url,
        min_size=min_size,
        max_size=max_size,
        command_timeout=60,
        reset=None if reset_sessions else _keep_session,
        server_settings=server_settings,
    )
    assert pool is not None
    return pool


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) of every file in shared/migrations, in order."""
    out = []
    for entry in resources.files("shared.migrations").iterdir():
        name = entry.name
        if not name.endswith(".sql"):
            continue
        version = int(name.split("_", 1)[0])
        out.append((version, name, entry.read_text(encoding="utf-8")))
    return sorted(out)


async def migrate(conn: Conn) -> list[str]:
    """Apply pending migrations; several processes may call this at once (an advisory lock serialises)."""
    applied: list[str] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {
            r["version"]: r["checksum"]
            for r in await conn.fetch("SELECT version, checksum FROM schema_migrations")
        }
        for version, name, sql in migrations():
            checksum = hashlib.sha256(sql.encode()).hexdigest()
            if version in done:
                if done[version] != checksum:
                    raise RuntimeError(f"migration {name} was changed after it was applied")
                continue
            await conn.execute(sql)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                version,
                name,
                checksum,
            )
            applied.append(name)
    if applied:
        log.info("migrations applied", migrations=applied)
    return applied


async def pending_migrations(conn: Conn) -> list[str]:
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    done = (
        set()
        if not exists
        else {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
    )
    return [name for version, name, _ in migrations() if version not in done]


async def checkpoints(conn: Conn | asyncpg.Pool) -> dict[str, int]:
    rows = await conn.fetch("SELECT projection, position FROM projection_checkpoints")
    return {r["projection"]: int(r["position"]) for r in rows}
