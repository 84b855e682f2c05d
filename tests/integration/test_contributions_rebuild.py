"""Rebuilding the contributions read model from the event stream gives the same rows, byte for byte,
after directory changes that moved records between users, companies and project types."""

from __future__ import annotations

from pathlib import Path

import asyncpg
from nats.js import JetStreamContext

import shared.migrations
from services.gateway import keys
from services.projector.consumer import lock_batches
from services.projector.contributions import TABLES
from services.projector.projections import PROJECTIONS
from services.projector.rebuild import rebuild
from shared.db import checkpoints
from tests.conftest import SECRET
from tests.integration.contributions_data import DIRECTORY, Client, load, post
from tests.integration.contributions_repos import projected
from tests.integration.helpers import dump_tables

# Each table with its primary key (a total order, so the dump is byte-exact).
KEYS = {
    "contribution_users": "user_id",
    "contribution_user_emails": "email",
    "contribution_companies": "company_name",
    "contribution_releases": "release_name",
    "contribution_modules": "module",
    "contribution_project_types": "project_type",
    "contribution_module_groups": "module_group",
    "contribution_project_type_modules": "project_type, module",
    "contribution_records": "primary_key",
    "contribution_month_sums": "rollup, kind, project_type, module, company, user_id",
    "contribution_day_sums": "rollup, kind, month, project_type, module, company, user_id",
}


async def change_the_directory(client: Client) -> None:
    """Changes after the records: each moves some of them."""
    john = {**DIRECTORY["users"][0], "companies": [{"company_name": "OldCo", "end_date": "2013-Aug-01"}]}  # type: ignore[dict-item]
    alice = {"launchpad_id": "alice-lp", "user_name": "Alice", "emails": ["alice@corp.com"]}
    carol = {"launchpad_id": "carol", "emails": ["bob@home.net"], "user_name": "Carol and Bob"}
    await post(client, "/directory", {"users": [john, alice, carol]})
    await post(client, "/directory", {"companies": [{"company_name": "Home", "domains": ["home.net"]}]})
    await post(
        client,
        "/directory",
        {"module_groups": [{"module_group_name": "storage", "modules": ["swift", "nova"]}]},
    )
    await post(client, "/directory", {"repos": [{"module": "docs", "organization": "openstack"}]})
    resp = await client.delete("/api/1.0/directory/user/carol", headers={"Authorization": SECRET})
    assert resp.status == 204
    await post(client, "/directory", {"companies": [{"company_name": "Corp", "domains": []}]})


async def test_rebuild_gives_identical_rows(client: Client, js: JetStreamContext) -> None:
    await load(client)
    await change_the_directory(client)
    assert set(KEYS) == set(TABLES)
    conn = await asyncpg.connect(client.app[keys.SETTINGS].database_url)
    try:
        last = await projected(conn, js)
        before = await dump_tables(conn, KEYS)
        assert before["contribution_month_sums"].count(b"\n") > 50
        assert b"storage-type\tswift" in before["contribution_project_type_modules"]
        assert b"storage-type\tnova" in before["contribution_project_type_modules"]

        position = await rebuild(conn, js, PROJECTIONS["contributions"])

        assert position == last
        after = await dump_tables(conn, KEYS)
        for table in KEYS:
            assert after[table] == before[table], table
        assert (await checkpoints(conn))["contributions"] == last
    finally:
        await conn.close()
    # The rebuilt model answers as before: Bob is his own user again, Alice kept her directory name.
    resp = await client.get("/api/1.0/stats/engineers?release=all")
    assert [(r["id"], r["name"], r["metric"]) for r in (await resp.json())["stats"]] == [
        ("bob@home.net", "Bob", 2),
        ("jdoe", "John Doe", 2),
        ("alice-lp", "Alice", 1),
    ]
    resp = await client.get("/api/1.0/stats/companies?release=all")
    assert [(r["id"], r["metric"]) for r in (await resp.json())["stats"]] == [
        ("Home", 2),
        ("OldCo", 2),
        ("*independent", 1),
    ]


# The rows migration 0010 adds up from those that were there, rather than replaying the stream.
BACKFILLED = {
    "contribution_day_sums": "rollup <> 0",
    "contribution_month_sums": "rollup = 6",
}


async def test_migration_backfill_gives_the_projectors_rows(client: Client, js: JetStreamContext) -> None:
    """The statements migration 0010 filled the new rollups with, run on a model the projector built
    (after directory changes moved records between project types), give the projector's rows."""
    migration = Path(shared.migrations.__file__).parent / "0010_contribution_day_rollups.sql"
    backfill = migration.read_text().split("-- backfill:", 1)[1].split("\n", 1)[1]
    await load(client)
    await change_the_directory(client)
    conn = await asyncpg.connect(client.app[keys.SETTINGS].database_url)
    try:
        await projected(conn, js)
        tables = {t: KEYS[t] for t in BACKFILLED}
        async with conn.transaction():
            await lock_batches(conn, "contributions")  # the live projector waits
            for table, rows in BACKFILLED.items():
                assert await conn.fetchval(f"SELECT count(*) FROM {table} WHERE {rows}") > 3, table
            before = await dump_tables(conn, tables)
            for table, rows in BACKFILLED.items():
                await conn.execute(f"DELETE FROM {table} WHERE {rows}")
            await conn.execute(backfill)
            after = await dump_tables(conn, tables)
        for table in tables:
            assert after[table] == before[table], table
    finally:
        await conn.close()
