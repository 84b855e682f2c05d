"""The admin subcommands of every API against a live system: writes through ingest, reads from the
read models, and each refusal one line on stderr with a non-zero exit status."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from services.gateway import keys
from services.local.servers import free_port
from shared.settings import Settings
from tests.conftest import admin, with_settings
from tests.integration.helpers import run_usagehub
from tests.media_bodies import MEDIA, digital, print_record

Client = TestClient[web.Request, web.Application]


def cli(settings: Settings) -> Callable[..., Awaitable[tuple[int, Any, str]]]:
    async def usagehub(*args: str) -> tuple[int, Any, str]:
        code, out, err = await run_usagehub(*args, settings=settings)  # the gateway's user sends commands
        return code, json.loads(out) if code == 0 else out, err

    return usagehub


async def until(read: Callable[[], Awaitable[tuple[int, Any, str]]], ok: Callable[[Any], bool]) -> Any:
    """The CLI does not wait for the read model (the gateway does): read until it has caught up."""
    for _ in range(100):
        code, answer, err = await read()
        if code == 0 and ok(answer):
            return answer
        await asyncio.sleep(0.05)
    raise AssertionError(f"never caught up: {code} {answer!r} {err}")


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if not line.startswith("{")]  # JSON logs aside
    assert len(lines) == 1 and lines[0].startswith("usagehub: "), err
    assert "Traceback" not in err
    return lines[0]


async def test_devices_add_token_and_list(client: Client) -> None:
    usagehub = cli(client.app[keys.SETTINGS])
    code, laptop, err = await usagehub("devices", "add", "Laptop")
    assert code == 0 and laptop["name"] == "Laptop" and laptop["token"], err
    assert (await client.post("/api/beat", headers={"Authorization": laptop["token"]})).status == 200
    code, renewed, err = await usagehub("devices", "token", str(laptop["id"]))
    assert code == 0 and renewed["token"] != laptop["token"], err
    code, _, err = await usagehub("devices", "add", "Printer")
    assert code == 0, err

    listed = await until(lambda: usagehub("devices", "list"), lambda a: a["total"] == 2)
    first = listed["items"][0]
    assert (first["id"], first["name"], first["num_beats"]) == (laptop["id"], "Laptop", 1)
    assert first["last_beat"] and first["registered_at"]
    assert "token" not in json.dumps(listed) and laptop["token"] not in json.dumps(listed)
    code, page, err = await usagehub("devices", "list", "--limit", "1", "--offset", "1")
    assert code == 0 and [d["name"] for d in page["items"]] == ["Printer"] and page["next_offset"] is None

    code, _, err = await usagehub("devices", "token", "999")
    assert code == 1 and "404" in one_line(err)
    code, out, err = await usagehub("devices", "list", "--limit", "0")
    assert code == 2 and out == "" and "between 1 and 1000" in err


async def test_links_add_list_show_update_delete(client: Client) -> None:
    usagehub = cli(client.app[keys.SETTINGS])
    code, docs, err = await usagehub("links", "add", "Docs", "https://example.org/docs")
    assert code == 0, err
    code, _, err = await usagehub("links", "add", "Wiki", "https://example.org/wiki", "--description", "w")
    assert code == 0, err

    listed = await until(lambda: usagehub("links", "list"), lambda a: a["total"] == 2)
    assert [link["name"] for link in listed["items"]] == ["Docs", "Wiki"]
    code, page, err = await usagehub("links", "list", "--limit", "1")
    assert code == 0 and len(page["items"]) == 1 and page["next_offset"] == 1, err
    code, shown, err = await usagehub("links", "show", str(docs["id"]))
    assert code == 0 and shown == docs, err

    code, updated, err = await usagehub(
        "links", "update", str(docs["id"]), "--url", "https://example.org/new"
    )
    assert code == 0 and updated["url"] == "https://example.org/new" and updated["name"] == "Docs", err
    shown = await until(
        lambda: usagehub("links", "show", str(docs["id"])), lambda a: a["url"] == "https://example.org/new"
    )
    assert (await (await client.get(f"/api/links/{docs['id']}")).json()) == shown

    code, deleted, err = await usagehub("links", "delete", str(docs["id"]))
    assert code == 0 and deleted == {"deleted": docs["id"]}, err
    await until(lambda: usagehub("links", "list"), lambda a: a["total"] == 1)
    code, out, err = await usagehub("links", "show", str(docs["id"]))
    assert (code, out) == (1, "") and one_line(err) == f"usagehub: no link {docs['id']}"

    code, _, err = await usagehub("links", "update", str(docs["id"]), "--name", "Gone")
    assert code == 1 and "404" in one_line(err)
    code, _, err = await usagehub("links", "update", "1")
    assert code == 1 and "nothing to change" in one_line(err)
    code, _, err = await usagehub("links", "delete", "424242")
    assert code == 1 and "404" in one_line(err)
    code, _, err = await usagehub("links", "update", "2", "--url", "not-a-url")
    assert code == 1 and "url" in one_line(err)


async def test_orgs_create_list_show_and_keys_list(client: Client) -> None:
    usagehub = cli(client.app[keys.SETTINGS])
    code, acme, err = await usagehub("orgs", "create", "acme", "--name", "Acme", "--time-zone", "UTC")
    assert code == 0 and acme["id"] == "acme" and acme["parent"] is None, err
    code, eu, err = await usagehub(
        "orgs", "create", "acme-eu", "--name", "EU", "--time-zone", "Europe/Paris", "--parent", "acme"
    )
    assert code == 0 and eu["parent"] == "acme", err

    listed = await until(lambda: usagehub("orgs", "list"), lambda a: a["total"] == 2)
    assert [o["id"] for o in listed["items"]] == ["acme", "acme-eu"]
    code, shown, err = await usagehub("orgs", "show", "acme-eu")
    assert code == 0 and (shown["name"], shown["time_zone"], shown["parent"]) == (
        "EU",
        "Europe/Paris",
        "acme",
    )
    assert (await (await client.get("/api/orgs/acme-eu", headers=admin())).json()) == shown

    code, issued, err = await usagehub("keys", "add", "acme", "--name", "ci")
    assert code == 0 and issued["key"], err
    listed = await until(lambda: usagehub("keys", "list", "acme"), lambda a: a["total"] == 1)
    assert listed["items"][0]["id"] == issued["id"] and listed["items"][0]["name"] == "ci"
    assert issued["key"] not in json.dumps(listed)
    code, _, err = await usagehub("keys", "revoke", issued["id"])
    assert code == 0, err
    await until(lambda: usagehub("keys", "list", "acme"), lambda a: a["items"][0]["revoked_at"] is not None)
    code, empty, err = await usagehub("keys", "list", "acme-eu")
    assert code == 0 and empty["items"] == [], err

    code, out, err = await usagehub("orgs", "show", "nobody")
    assert (code, out) == (1, "") and one_line(err) == "usagehub: no org 'nobody'"
    code, _, err = await usagehub("keys", "list", "nobody")
    assert code == 1 and one_line(err) == "usagehub: no org 'nobody'"
    code, _, err = await usagehub(
        "orgs", "create", "x", "--name", "X", "--time-zone", "UTC", "--parent", "no"
    )
    assert code == 1 and one_line(err) == "usagehub: org no does not exist (404)"


async def test_reads_without_a_database_or_with_a_broken_one_are_one_line(
    client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = client.app[keys.SETTINGS]
    monkeypatch.delenv("USAGEHUB_DATABASE_URL", raising=False)
    monkeypatch.setenv("USAGEHUB_DATA_DIR", str(tmp_path))  # where no `usagehub up` runs
    code, out, err = await run_usagehub("orgs", "list", settings=with_settings(settings, database_url=""))
    assert (code, out) == (2, "") and "USAGEHUB_DATABASE_URL is required" in one_line(err)
    unreachable = with_settings(settings, database_url="postgresql://nobody@127.0.0.1:1/none")
    code, out, err = await run_usagehub("links", "list", settings=unreachable)
    assert (code, out) == (1, "") and "the read models in Postgres cannot be read" in one_line(err)


async def media_usages(client: Client) -> list[Any]:
    resp = await client.get(f"/usages/media/{MEDIA}")
    if resp.status == 404:
        return []
    assert resp.status == 200, await resp.text()
    return list((await resp.json(content_type=None))["data"])


async def settled(client: Client, count: int) -> list[Any]:
    for _ in range(100):
        usages = await media_usages(client)
        if len(usages) == count:
            return usages
        await asyncio.sleep(0.05)
    raise AssertionError(f"expected {count} usages of {MEDIA}, have {usages}")


async def test_media_record_from_files_and_delete(client: Client, tmp_path: Path) -> None:
    usagehub = cli(client.app[keys.SETTINGS])
    files = {
        "digital": digital(),
        "print": {"printUsageRecords": [print_record()]},
        "front": {
            "data": {"addedBy": "ed", "front": "uk", "mediaId": MEDIA, "dateAdded": "2018-01-02T03:04:05Z"}
        },
    }
    for kind, body in files.items():
        (tmp_path / f"{kind}.json").write_text(json.dumps(body))
        code, answer, err = await usagehub("media", "record", kind, str(tmp_path / f"{kind}.json"))
        assert code == 0 and answer == {"recorded": kind}, err
    usages = await settled(client, 3)
    assert sorted(u["data"]["platform"] for u in usages) == ["digital", "front", "print"]

    front = next(u["data"]["id"] for u in usages if u["data"]["platform"] == "front")
    code, answer, err = await usagehub("media", "delete", MEDIA, front)
    assert code == 0 and answer == {"deleted": MEDIA, "usage": front}, err
    await settled(client, 2)
    code, answer, err = await usagehub("media", "delete", MEDIA)
    assert code == 0 and answer == {"deleted": MEDIA}, err
    await settled(client, 0)

    (tmp_path / "bad.json").write_text(json.dumps({"data": {"front": "uk"}}))
    code, out, err = await usagehub("media", "record", "front", str(tmp_path / "bad.json"))
    assert (code, out) == (1, "") and "(400)" in one_line(err)
    (tmp_path / "text.json").write_text("not json")
    code, _, err = await usagehub("media", "record", "front", str(tmp_path / "text.json"))
    assert code == 1 and "is not JSON" in one_line(err)
    (tmp_path / "big.json").write_text(json.dumps({"data": "x" * 70_000}))
    code, _, err = await usagehub("media", "record", "syndication", str(tmp_path / "big.json"))
    assert code == 1 and "larger than 65536 bytes" in one_line(err)
    deep: Any = "x"
    for _ in range(40):
        deep = [deep]
    (tmp_path / "deep.json").write_text(json.dumps({"data": deep}))
    code, _, err = await usagehub("media", "record", "download", str(tmp_path / "deep.json"))
    assert code == 1 and "nested more than 32 deep" in one_line(err)
    code, _, err = await usagehub("media", "record", "front", str(tmp_path / "missing.json"))
    assert code == 1 and "cannot read" in one_line(err)


async def test_a_write_to_an_unreachable_nats_is_one_line_after_a_bounded_wait(
    client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("USAGEHUB_LOG_LEVEL", raising=False)  # the CLI's own level: errors only
    nowhere = with_settings(client.app[keys.SETTINGS], nats_url=f"nats://127.0.0.1:{free_port()}")
    code, out, err = await run_usagehub("links", "add", "Docs", "https://example.org/", settings=nowhere)
    assert (code, out) == (1, "")
    assert err.splitlines() == ["usagehub: NATS does not answer (waited 10 s)"]
