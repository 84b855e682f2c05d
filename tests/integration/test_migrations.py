"""Migrations at start-up are safe when several processes start at once."""

from __future__ import annotations

import asyncio

import asyncpg

from shared.db import migrate, migrations, pending_migrations


async def test_concurrent_migrations_apply_each_file_once(database_url: str) -> None:
    conns = [await asyncpg.connect(database_url) for _ in range(6)]
    try:
        applied = await asyncio.gather(*(migrate(c) for c in conns))
        names = [name for _, name, _ in migrations()]
        assert sorted(n for run in applied for n in run) == sorted(names)  # each applied by exactly one
        assert await pending_migrations(conns[0]) == []
        assert await migrate(conns[0]) == []
        count = await conns[0].fetchval("SELECT count(*) FROM schema_migrations")
        assert count == len(names)
    finally:
        for c in conns:
            await c.close()
