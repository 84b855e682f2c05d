"""Metering through HTTP: the admin routes, TR50 ``POST /api`` (the seed's shapes, sessions, every
parameter and error of ``usage.api.history``), its REST twin, and the gateway counting its own calls."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from services.gateway import keys
from services.gateway.app import init_app
from services.gateway.metering_history import MAX_BUCKETS
from shared.bus import Appender
from shared.events import new_event_id, now
from shared.events.metering import ApiCallCount, ApiCallsCounted
from tests.conftest import Services, admin, with_settings
from tests.integration.helpers import run_usagehub

Client = TestClient[web.Request, web.Application]
NEW_YORK = "America/New_York"


async def org(client: Client, org_id: str, zone: str = NEW_YORK, parent: str | None = None) -> Any:
    body = {"id": org_id, "name": org_id.title(), "time_zone": zone, **({"parent": parent} if parent else {})}
    resp = await client.post("/api/orgs", json=body, headers=admin())
    assert resp.status == 201, await resp.text()
    return await resp.json()


async def new_key(client: Client, org_id: str, principal: str | None = None) -> str:
    body = {"principal": principal} if principal else {}
    resp = await client.post(f"/api/orgs/{org_id}/keys", json=body, headers=admin())
    assert resp.status == 201, await resp.text()
    return str((await resp.json())["key"])


async def super_ops_key(client: Client, org_id: str) -> str:
    resp = await client.post("/api/principals", json={"id": "ops", "super_ops": True}, headers=admin())
    assert resp.status == 201, await resp.text()
    return await new_key(client, org_id, "ops")


async def tr50(client: Client, body: Any, headers: dict[str, str] | None = None) -> Any:
    resp = await client.post("/api", json=body, headers=headers or {})
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def history(client: Client, params: dict[str, Any], **auth: str) -> Any:
    """``usage.api.history`` in the seed's shape (id ``get``), with a session or an org key."""
    body: dict[str, Any] = {"get": {"command": "usage.api.history", "params": params}}
    if "session" in auth:
        body["auth"] = {"sessionId": auth["session"]}
    headers = {"X-Api-Key": auth["key"]} if "key" in auth else {}
    reply = await tr50(client, body, headers)
    assert set(reply) == {"get"}
    return reply["get"]


async def rest(client: Client, params: dict[str, Any], key: str) -> tuple[int, Any]:
    query = {k: (str(v).lower() if isinstance(v, bool) else v) for k, v in params.items()}
    resp = await client.get("/api/usage/history", params=query, headers={"X-Api-Key": key})
    return resp.status, await resp.json()


async def agreeing(client: Client, params: dict[str, Any], key: str) -> Any:
    """The answer's params, after checking that the REST twin answers exactly the same."""
    reply = await history(client, params, key=key)
    assert reply["success"] is True, reply
    status, body = await rest(client, params, key)
    assert status == 200 and body == reply["params"]
    return reply["params"]


async def append_calls(client: Client, nc: NATS, calls: list[tuple[str, str, datetime, int]]) -> None:
    """Counted calls appended straight to the event log (as if counted at their time), then projected:
    tests can place calls on any day, which ingest's time bounds would refuse today. ``nc`` may
    append events (only ingest, and the tests' superuser, may)."""
    entries = tuple(ApiCallCount(org_id=o, service=s, at=at, count=n) for o, s, at, n in calls)
    async with Appender(nc) as appender:
        appended = await appender.append(
            ApiCallsCounted(event_id=new_event_id(), occurred_at=now(), counts=entries), new_event_id()
        )
    assert await client.app[keys.WATCH].wait(("api_calls",), appended.seq, 10)


def error_of(reply: Any, code: int) -> str:
    assert reply["success"] is False and reply["errorCodes"] == [code], reply
    [message] = reply["errorMessages"]
    return str(message)


# --- admin ------------------------------------------------------------------------------------


async def test_admin_routes_make_orgs_sub_orgs_keys_and_principals(client: Client) -> None:
    acme = await org(client, "acme")
    assert acme == {
        "id": "acme",
        "name": "Acme",
        "time_zone": NEW_YORK,
        "parent": None,
        "created_at": acme["created_at"],
    }
    eu = await org(client, "acme-eu", "Europe/Paris", parent="acme")
    assert eu["parent"] == "acme"
    refusals: list[tuple[dict[str, Any], int, str]] = [
        ({"id": "acme", "name": "A", "time_zone": "UTC"}, 409, "already exists"),
        ({"id": "x", "name": "X", "time_zone": "UTC", "parent": "nope"}, 404, "org nope does not exist"),
        ({"id": "x", "name": "X", "time_zone": "Mars/Base"}, 400, "time_zone"),
        ({"id": "X!", "name": "X", "time_zone": "UTC"}, 400, "org id"),
        ({"id": "x", "time_zone": "UTC"}, 400, "name is required"),
        ({"id": "x", "name": 7, "time_zone": "UTC"}, 400, "name must be a string"),
        ({"id": "x", "name": "X", "time_zone": "UTC", "colour": "red"}, 400, "unknown fields"),
    ]
    for body, status, reason in refusals:
        resp = await client.post("/api/orgs", json=body, headers=admin())
        assert resp.status == status and reason in (await resp.json())["error"], (body, await resp.text())
    assert (await client.post("/api/orgs", data=b"[1]", headers=admin())).status == 400

    page = await (await client.get("/api/orgs?limit=1", headers=admin())).json()
    assert (page["total"], page["next_offset"], [o["id"] for o in page["items"]]) == (2, 1, ["acme"])
    assert await (await client.get("/api/orgs/acme-eu", headers=admin())).json() == eu
    assert (await client.get("/api/orgs/nope", headers=admin())).status == 404
    assert (await client.get("/api/orgs?limit=0", headers=admin())).status == 400

    principal = await client.post("/api/principals", json={"id": "ops", "super_ops": True}, headers=admin())
    assert principal.status == 201 and (await principal.json())["super_ops"] is True
    again = await client.post("/api/principals", json={"id": "ops"}, headers=admin())
    assert again.status == 409
    bad = await client.post("/api/principals", json={"id": "ops2", "super_ops": "yes"}, headers=admin())
    assert bad.status == 400

    resp = await client.post("/api/orgs/acme/keys", json={"principal": "ops", "name": "ci"}, headers=admin())
    assert resp.status == 201
    issued = await resp.json()
    assert set(issued) == {"id", "org", "principal", "name", "created_at", "key"}
    assert (issued["org"], issued["principal"], issued["name"]) == ("acme", "ops", "ci")
    plain = await client.post("/api/orgs/acme/keys", headers=admin())  # no body at all
    assert plain.status == 201
    for path, body, status in (
        ("/api/orgs/nope/keys", {}, 404),
        ("/api/orgs/acme/keys", {"principal": "nobody"}, 404),
        ("/api/orgs/acme/keys", {"secret": "x"}, 400),
    ):
        assert (await client.post(path, json=body, headers=admin())).status == status
    listed = await (await client.get("/api/orgs/acme/keys", headers=admin())).json()
    assert [k["id"] for k in listed["items"]] == [issued["id"], (await plain.json())["id"]]
    assert "key" not in listed["items"][0] and listed["items"][0]["revoked_at"] is None
    assert (await client.get("/api/orgs/nope/keys", headers=admin())).status == 404

    assert (await client.delete(f"/api/keys/{issued['id']}", headers=admin())).status == 204
    assert (await client.delete(f"/api/keys/{issued['id']}", headers=admin())).status == 204
    assert (await client.delete("/api/keys/key_0000000000000000", headers=admin())).status == 404
    assert (await client.delete("/api/keys/nonsense", headers=admin())).status == 404
    listed = await (await client.get("/api/orgs/acme/keys", headers=admin())).json()
    assert listed["items"][0]["revoked_at"] is not None
    resp = await client.get("/api/links", headers={"X-Api-Key": issued["key"]})
    assert resp.status == 401 and "revoked" in (await resp.json())["error"]

    for method, path in (("POST", "/api/orgs"), ("GET", "/api/orgs"), ("POST", "/api/orgs/acme/keys")):
        for headers in ({}, {"Authorization": "wrong"}):
            resp = await client.request(method, path, json={}, headers=headers)
            assert resp.status == 401, (method, path)


async def test_a_retried_key_issue_is_the_same_key_with_the_new_secret(client: Client) -> None:
    await org(client, "acme")
    headers = admin(**{"Idempotency-Key": "issue-1"})
    first = await (await client.post("/api/orgs/acme/keys", json={"name": "ci"}, headers=headers)).json()
    second = await (await client.post("/api/orgs/acme/keys", json={"name": "ci"}, headers=headers)).json()
    assert first["id"] == second["id"] and first["key"] != second["key"]
    assert (await client.get("/api/links", headers={"X-Api-Key": first["key"]})).status == 401
    assert (await client.get("/api/links", headers={"X-Api-Key": second["key"]})).status == 200
    other = await client.post("/api/orgs/acme/keys", json={"name": "other"}, headers=headers)
    assert other.status == 422
    listed = await (await client.get("/api/orgs/acme/keys", headers=admin())).json()
    assert listed["total"] == 1


async def test_admin_routes_do_not_exist_without_a_secret_key(services: Services) -> None:
    settings = with_settings(services.settings, secret_key="")
    async with TestClient(TestServer(init_app(settings))) as client:
        for method, path in (("POST", "/api/orgs"), ("GET", "/api/orgs/x"), ("DELETE", "/api/keys/x")):
            resp = await client.request(method, path, json={}, headers={"Authorization": ""})
            assert resp.status == 404 and await resp.json() == {"error": "not found"}
        # TR50 itself is there: it needs a key, not the admin secret.
        reply = await tr50(client, {"1": {"command": "usage.api.history", "params": {"last": "1h"}}})
        assert error_of(reply["1"], 401)


# --- TR50 -------------------------------------------------------------------------------------


async def test_the_seeds_two_request_shapes(client: Client, nats_client: NATS) -> None:
    await org(client, "acme")
    key = await new_key(client, "acme")
    at = datetime(2014, 3, 27, 14, 5, tzinfo=UTC)
    await append_calls(
        client, nats_client, [("acme", "usage", at, 4), ("acme", "usage", at + timedelta(hours=3), 1)]
    )
    definite = {
        "includeSubOrgs": False,
        "showAll": False,
        "start": "2014-03-27T00:00:00.000-00:00",
        "end": "2014-03-28T00:00:00.000-00:00",
        "series": "hour",
    }
    reply = await tr50(
        client, {"get": {"command": "usage.api.history", "params": definite}}, {"X-Api-Key": key}
    )
    params = reply["get"]["params"]
    assert reply["get"]["success"] is True and set(params) == {"counters", "total", "ts"}
    # Hours of New York (-04:00 in March 2014) covering the UTC day: 20:00 on the 26th to 19:00.
    assert len(params["ts"]) == 24 and params["ts"][0] == "2014-03-26T20:00:00-04:00"
    assert params["ts"][-1] == "2014-03-27T19:00:00-04:00"
    expected = [0] * 24
    expected[14], expected[17] = 4, 1  # 14:05Z and 17:05Z, counted from 00:00Z
    assert params["counters"] == {"usage": expected} and params["total"] == 5
    last = {"includeSubOrgs": False, "showAll": False, "last": "24h", "series": "hour"}
    reply = await tr50(client, {"get": {"command": "usage.api.history", "params": last}}, {"X-Api-Key": key})
    assert reply["get"]["success"] is True and len(reply["get"]["params"]["ts"]) in (24, 25)
    assert reply["get"]["params"]["ts"][-1].endswith("-05:00")  # New York in winter


async def test_an_envelope_answers_each_command_under_its_own_id(client: Client) -> None:
    await org(client, "acme")
    key = await new_key(client, "acme")
    reply = await tr50(
        client,
        {
            "1": {"command": "usage.api.history", "params": {"last": "1h"}},
            "two": {"command": "usage.api.history", "params": {"last": "2d", "series": "day"}},
            "3": {"command": "thing.list"},
            "4": {"params": {}},
            "5": "usage.api.history",
            "6": {"command": "usage.api.history", "params": [1]},
            "7": {"command": "usage.api.history", "params": {"last": "1h"}, "extra": 1},
        },
        {"X-Api-Key": key},
    )
    assert list(reply) == ["1", "two", "3", "4", "5", "6", "7"]
    assert reply["1"]["success"] and reply["two"]["success"]
    assert "unknown command 'thing.list'" in error_of(reply["3"], 404)
    for cid in ("4", "5", "6", "7"):
        error_of(reply[cid], 400)
    for body, reason in (
        (b"not json", "JSON object"),
        (b"[]", "JSON object"),
        (b"{}", "no commands"),
        (b'{"auth": {"sessionId": "x"}}', "no commands"),
        (json.dumps({str(i): {"command": "api.authenticate"} for i in range(51)}).encode(), "at most 50"),
        (b"[" * 5000, "JSON object"),
    ):
        resp = await client.post("/api", data=body, headers={"Content-Type": "application/json"})
        assert resp.status == 400 and reason in (await resp.json())["error"], body[:40]


async def test_sessions_authenticate_work_expire_and_end_with_their_key(client: Client) -> None:
    await org(client, "acme")
    key = await new_key(client, "acme")
    reply = await tr50(client, {"a": {"command": "api.authenticate", "params": {"key": key}}})
    params = reply["a"]["params"]
    assert reply["a"]["success"] and set(params) == {"sessionId", "orgKey", "expiresAt"}
    assert params["orgKey"] == "acme"
    expires = datetime.fromisoformat(params["expiresAt"])
    assert timedelta(minutes=59) < expires - datetime.now(UTC) <= timedelta(hours=1)
    session = params["sessionId"]
    assert (await history(client, {"last": "1h"}, session=session))["success"] is True
    # The same session in a header, on the REST twin and on any other route.
    resp = await client.get("/api/usage/history?last=1h", headers={"X-Session-Id": session})
    assert resp.status == 200
    assert (await client.get("/api/links", headers={"X-Session-Id": session})).status == 200

    assert "unknown session" in error_of(await history(client, {"last": "1h"}, session="made-up"), 401)
    assert "unknown session" in error_of(await history(client, {"last": "1h"}, session=""), 401)
    bad_auth = await tr50(
        client,
        {
            "auth": {"sessionId": session, "x": 1},
            "1": {"command": "usage.api.history", "params": {"last": "1h"}},
        },
    )
    error_of(bad_auth["1"], 400)
    no_auth = await tr50(client, {"1": {"command": "usage.api.history", "params": {"last": "1h"}}})
    assert "not authenticated" in error_of(no_auth["1"], 401)
    for bad in (
        {"key": "wrong"},
        {"key": key, "ttl": 0},
        {"key": key, "ttl": "1"},
        {"key": key, "ttl": 86_401},
        {"key": key, "ttl": 10**30},
        {},
        {"key": key, "user": "x"},
    ):
        reply = await tr50(client, {"a": {"command": "api.authenticate", "params": bad}})
        assert reply["a"]["success"] is False and reply["a"]["errorCodes"][0] in (400, 401), bad

    short = await tr50(client, {"a": {"command": "api.authenticate", "params": {"key": key, "ttl": 1}}})
    short_session = short["a"]["params"]["sessionId"]
    assert (await history(client, {"last": "1h"}, session=short_session))["success"] is True
    await asyncio.sleep(1.2)
    assert "expired" in error_of(await history(client, {"last": "1h"}, session=short_session), 401)
    resp = await client.get("/api/usage/history?last=1h", headers={"X-Session-Id": short_session})
    assert resp.status == 401 and "expired" in (await resp.json())["error"]

    key_id = (await (await client.get("/api/orgs/acme/keys", headers=admin())).json())["items"][0]["id"]
    assert (await client.delete(f"/api/keys/{key_id}", headers=admin())).status == 204
    assert "revoked" in error_of(await history(client, {"last": "1h"}, session=session), 401)
    reply = await tr50(client, {"a": {"command": "api.authenticate", "params": {"key": key}}})
    assert "revoked" in error_of(reply["a"], 401)


HISTORY_ERRORS: list[tuple[dict[str, Any], str]] = [
    ({}, "give a time range"),
    ({"start": "2024-03-01T00:00:00Z"}, "start and end go together"),
    ({"last": "24h", "start": "2024-03-01T00:00:00Z", "end": "2024-03-02T00:00:00Z"}, "not both"),
    ({"start": "2024-03-02T00:00:00Z", "end": "2024-03-01T00:00:00Z"}, "is before start"),
    ({"last": "3w"}, "s (seconds), m (minutes), h (hours) or d (days)"),
    ({"last": "24h", "series": "minute"}, "series must be hour or day"),
    ({"start": "March 1st", "end": "2024-03-02T00:00:00Z"}, "ISO 8601"),
    ({"start": "2024-03-01T00:00:00", "end": "2024-03-02T00:00:00Z"}, "has no offset"),
    ({"last": "200d"}, f"more than {MAX_BUCKETS} buckets"),
    ({"last": "10000d", "series": "day"}, f"more than {MAX_BUCKETS} buckets"),
    ({"last": "1h", "dimension": "service"}, "dimension must be org"),
    ({"last": "1h", "colour": "red"}, "unknown parameters"),
]


async def test_every_bad_parameter_is_an_error_reply_naming_the_problem(client: Client) -> None:
    await org(client, "acme")
    key = await new_key(client, "acme")
    body = {str(i): {"command": "usage.api.history", "params": p} for i, (p, _) in enumerate(HISTORY_ERRORS)}
    reply = await tr50(client, body, {"X-Api-Key": key})
    for i, (params, reason) in enumerate(HISTORY_ERRORS):
        message = error_of(reply[str(i)], 400)
        assert reason in message, (params, message)
        if all(isinstance(v, str) for v in params.values()):  # the REST twin says the same
            status, rest_body = await rest(client, params, key)
            assert (status, rest_body) == (400, {"error": message})
    for query in ("showAll=yes&last=1h", "last=1h&last=2h"):
        resp = await client.get(f"/api/usage/history?{query}", headers={"X-Api-Key": key})
        assert resp.status == 400
    for headers, status in (
        ({}, 401),
        ({"X-Api-Key": "wrong"}, 401),
        ({"X-Api-Key": key, "X-Session-Id": "s"}, 400),
    ):
        assert (await client.get("/api/usage/history?last=1h", headers=headers)).status == status


async def test_counters_roll_up_sub_orgs_and_show_all_needs_super_ops(
    client: Client, nats_client: NATS
) -> None:
    # acme (New York) > acme-us (New York), acme-eu (Paris) > acme-fr (Paris); globex is another tree.
    await org(client, "acme")
    await org(client, "acme-us", NEW_YORK, "acme")
    await org(client, "acme-eu", "Europe/Paris", "acme")
    await org(client, "acme-fr", "Europe/Paris", "acme-eu")
    await org(client, "globex", "Asia/Kolkata")
    acme, eu = await new_key(client, "acme"), await new_key(client, "acme-eu")
    ops = await super_ops_key(client, "acme")
    day = datetime(2024, 5, 6, tzinfo=UTC)
    await append_calls(
        client,
        nats_client,
        [
            ("acme", "heartbeat", day + timedelta(hours=13), 1),
            ("acme-us", "heartbeat", day + timedelta(hours=14), 2),
            ("acme-eu", "lighthouse", day + timedelta(hours=15), 4),
            ("acme-fr", "lighthouse", day + timedelta(hours=15, minutes=30), 8),
            ("acme-fr", "tr50", day + timedelta(days=1, hours=3), 16),  # 23:00 on the 6th in New York
            ("globex", "tr50", day + timedelta(hours=13), 32),
            # In the same months as the range, outside it: day counters are read as month rows, and
            # these must neither count nor give their service an array.
            ("acme", "media-usage", day - timedelta(days=3), 64),
            ("acme-fr", "media-usage", day + timedelta(days=20), 128),
        ],
    )
    span = {"start": "2024-05-06T00:00:00-04:00", "end": "2024-05-08T00:00:00-04:00", "series": "day"}

    own = await agreeing(client, span, acme)
    assert own == {
        "counters": {"heartbeat": [1, 0]},
        "total": 1,
        "ts": ["2024-05-06T00:00:00-04:00", "2024-05-07T00:00:00-04:00"],
    }
    subtree = await agreeing(client, {**span, "includeSubOrgs": True}, acme)
    assert subtree["counters"] == {"heartbeat": [3, 0], "lighthouse": [12, 0], "tr50": [16, 0]}
    assert subtree["total"] == 31
    # acme-eu's subtree in Paris days: itself and acme-fr; not its parent, not its sibling.
    eu_days = await agreeing(
        client,
        {
            "start": "2024-05-06T00:00:00+02:00",
            "end": "2024-05-08T00:00:00+02:00",
            "series": "day",
            "includeSubOrgs": True,
        },
        eu,
    )
    assert eu_days["counters"] == {"lighthouse": [12, 0], "tr50": [0, 16]}
    assert eu_days["ts"] == ["2024-05-06T00:00:00+02:00", "2024-05-07T00:00:00+02:00"]

    refused = await history(client, {**span, "showAll": True}, key=acme)
    assert "super-ops" in error_of(refused, 403)
    status, body = await rest(client, {**span, "showAll": True}, acme)
    assert status == 403 and "super-ops" in body["error"]
    everything = await agreeing(client, {**span, "showAll": True}, ops)
    assert everything["counters"] == {"heartbeat": [3, 0], "lighthouse": [12, 0], "tr50": [48, 0]}

    by_org = await agreeing(client, {**span, "includeSubOrgs": True, "dimension": "org"}, acme)
    assert by_org["counters"] == {
        "acme": {"heartbeat": [1, 0]},
        "acme-eu": {"lighthouse": [4, 0]},
        "acme-fr": {"lighthouse": [8, 0], "tr50": [16, 0]},
        "acme-us": {"heartbeat": [2, 0]},
    }
    assert by_org["total"] == 31 == subtree["total"]
    all_by_org = await agreeing(client, {**span, "showAll": True, "dimension": "org"}, ops)
    assert all_by_org["counters"]["globex"] == {"tr50": [32, 0]} and all_by_org["total"] == 63

    hours = await agreeing(
        client,
        {"start": "2024-05-06T09:00:00-04:00", "end": "2024-05-06T12:00:00-04:00", "includeSubOrgs": True},
        acme,
    )
    assert hours == {
        "counters": {"heartbeat": [1, 2, 0], "lighthouse": [0, 0, 12]},
        "total": 15,
        "ts": ["2024-05-06T09:00:00-04:00", "2024-05-06T10:00:00-04:00", "2024-05-06T11:00:00-04:00"],
    }
    empty = await agreeing(
        client, {"start": "2020-01-01T00:00:00Z", "end": "2020-01-03T00:00:00Z", "series": "day"}, acme
    )
    assert empty == {
        "counters": {},
        "total": 0,
        "ts": ["2019-12-31T00:00:00-05:00", "2020-01-01T00:00:00-05:00", "2020-01-02T00:00:00-05:00"],
    }


async def test_dst_days_count_23_and_25_hours(client: Client, nats_client: NATS) -> None:
    await org(client, "acme")
    await org(client, "acme-eu", "Europe/Paris", "acme")
    key = await new_key(client, "acme")
    calls = []
    for day in (datetime(2024, 3, 10, 5, tzinfo=UTC), datetime(2024, 11, 3, 4, tzinfo=UTC)):
        # One call every UTC hour from 00:00 New York time for 26 hours, by acme and by acme-eu.
        calls += [("acme", "tr50", day + timedelta(hours=h, minutes=30), 1) for h in range(26)]
        calls += [("acme-eu", "tr50", day + timedelta(hours=h, minutes=30), 1) for h in range(26)]
    await append_calls(client, nats_client, calls)
    for start, end, lengths in (
        ("2024-03-10T00:00:00-05:00", "2024-03-11T00:00:00-04:00", [23]),
        ("2024-11-03T00:00:00-04:00", "2024-11-04T00:00:00-05:00", [25]),
    ):
        days = await agreeing(client, {"start": start, "end": end, "series": "day"}, key)
        assert days["counters"] == {"tr50": lengths} and days["ts"] == [start]
        rolled = await agreeing(
            client, {"start": start, "end": end, "series": "day", "includeSubOrgs": True}, key
        )
        assert rolled["counters"] == {"tr50": [2 * lengths[0]]}
        hours = await agreeing(client, {"start": start, "end": end}, key)
        assert len(hours["ts"]) == lengths[0] and hours["counters"] == {"tr50": [1] * lengths[0]}
    spring = await agreeing(
        client, {"start": "2024-03-10T00:00:00-05:00", "end": "2024-03-10T04:00:00-04:00"}, key
    )
    assert spring["ts"] == [
        "2024-03-10T00:00:00-05:00",
        "2024-03-10T01:00:00-05:00",
        "2024-03-10T03:00:00-04:00",
    ]


# --- counting ---------------------------------------------------------------------------------


async def counted(client: Client, key: str, total: int) -> Any:
    """All orgs' calls of the last hour, per org, once ``total`` calls have been counted."""
    answer: Any = None
    for _ in range(100):
        reply = await history(client, {"last": "1h", "showAll": True, "dimension": "org"}, key=key)
        answer = reply["params"]
        if answer["total"] >= total:
            return answer
        await asyncio.sleep(0.1)
    raise AssertionError(f"expected {total} calls, have {answer}")


async def test_the_gateway_counts_its_own_calls_per_org_and_service(client: Client) -> None:
    await org(client, "acme")
    await org(client, "globex", "Europe/Paris")
    acme, globex = await new_key(client, "acme"), await new_key(client, "globex")
    ops = await super_ops_key(client, "acme")
    session = (await tr50(client, {"a": {"command": "api.authenticate", "params": {"key": globex}}}))["a"]
    assert session["success"]
    for _ in range(3):
        assert (await client.get("/api/stats", headers={"X-Api-Key": acme})).status == 200
    assert (await client.get("/api/links", headers={"X-Api-Key": acme})).status == 200
    assert (await client.get("/api/links/9", headers={"X-Api-Key": acme})).status == 404  # still a call
    # Every API family under its own service name: media usages and the Stackalytics API too.
    assert (await client.get("/usages/media/m-1", headers={"X-Api-Key": acme})).status in (200, 404)
    resp = await client.get("/api/1.0/stats/modules", headers={"X-Api-Key": acme})
    assert resp.status == 200
    assert (
        await client.get("/api/stats", headers={"X-Session-Id": session["params"]["sessionId"]})
    ).status == 200
    assert (await client.get("/api/usage/history?last=1h", headers={"X-Api-Key": globex})).status == 200
    two = {"1": {"command": "usage.api.history", "params": {"last": "1h"}}, "2": {"command": "nope"}}
    await tr50(client, two, {"X-Api-Key": acme})
    # Not counted: no credential, a wrong one, and routes outside the API families.
    assert (await client.get("/api/stats")).status == 200
    assert (await client.get("/api/stats", headers={"X-Api-Key": "wrong"})).status == 401
    assert (await client.get("/healthz", headers={"X-Api-Key": acme})).status == 200
    # acme: 3 heartbeat, 2 lighthouse, 1 media-usage, 1 stackalytics, 2 tr50; globex: authenticate +
    # REST + 1 heartbeat (session).
    answer = await counted(client, ops, 12)
    await asyncio.sleep(1.5)  # anything counted twice would show now
    answer = await counted(client, ops, 12)
    this_hour = {
        org: {svc: sum(row) for svc, row in services.items()} for org, services in answer["counters"].items()
    }
    # The history reads above were made with the ops key (an acme key): they count too.
    ops_reads = this_hour["acme"]["tr50"] - 2
    assert this_hour == {
        "acme": {
            "heartbeat": 3,
            "lighthouse": 2,
            "media-usage": 1,
            "stackalytics": 1,
            "tr50": 2 + ops_reads,
        },
        "globex": {"heartbeat": 1, "tr50": 2},
    }
    assert ops_reads >= 2


async def test_keys_and_session_ids_never_reach_the_event_log_or_the_logs(
    client: Client, js: JetStreamContext, capfd: pytest.CaptureFixture[str]
) -> None:
    from shared.bus import EVENTS_STREAM
    from tests.integration.helpers import raw_stream_bytes

    await org(client, "acme")
    key = await new_key(client, "acme")
    reply = await tr50(client, {"a": {"command": "api.authenticate", "params": {"key": key}}})
    session = reply["a"]["params"]["sessionId"]
    assert (await client.get("/api/stats", headers={"X-Session-Id": session})).status == 200
    await tr50(client, {"a": {"command": "api.authenticate", "params": {"key": key + "x"}}})
    stored = await raw_stream_bytes(js, EVENTS_STREAM, "usagehub.events.>")
    assert b"SessionStarted" in stored and b"ApiKeyIssued" in stored
    logs = capfd.readouterr()
    for secret in (key, session):
        assert secret.encode() not in stored
        assert secret not in logs.out and secret not in logs.err


async def test_cli_orgs_keys_and_principals(client: Client) -> None:
    settings = client.app[keys.SETTINGS]

    async def usagehub(*args: str) -> tuple[int, Any, str]:
        code, out, err = await run_usagehub(*args, settings=settings)  # the gateway's user sends commands
        return code, json.loads(out) if code == 0 else out, err

    code, made, err = await usagehub("orgs", "add", "acme", "--name", "Acme", "--time-zone", NEW_YORK)
    assert code == 0 and made["id"] == "acme" and made["parent"] is None, err
    code, sub, err = await usagehub(
        "orgs", "sub-add", "acme", "acme-eu", "--name", "EU", "--time-zone", "Europe/Paris"
    )
    assert code == 0 and sub["parent"] == "acme", err
    code, principal, err = await usagehub("principals", "add", "ops", "--super-ops")
    assert code == 0 and principal == {
        "id": "ops",
        "super_ops": True,
        "created_at": principal["created_at"],
    }, err
    code, issued, err = await usagehub("keys", "add", "acme", "--principal", "ops", "--name", "cli")
    assert code == 0 and issued["org"] == "acme" and issued["principal"] == "ops" and issued["key"], err
    for _ in range(100):  # the CLI does not wait for the read model; the gateway does
        reply = await history(client, {"last": "1h", "showAll": True}, key=issued["key"])
        if reply["success"]:
            break
        await asyncio.sleep(0.05)
    assert reply["success"] is True
    code, revoked, err = await usagehub("keys", "revoke", issued["id"])
    assert code == 0 and revoked == {"revoked": issued["id"]}, err
    code, _, err = await usagehub("orgs", "add", "acme", "--name", "Again", "--time-zone", "UTC")
    assert code == 1 and "already exists" in err
    code, _, err = await usagehub("orgs", "add", "bad", "--name", "Bad", "--time-zone", "Nowhere/City")
    assert code == 1 and "time_zone" in err
