"""Failed authentications are limited per client: a wrong-token flood gets 429s and causes bounded
work, while a device with a proven token behind the same address keeps beating."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import statistics
import sys
import time
from asyncio.subprocess import DEVNULL, PIPE
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestClient
from yarl import URL

from services.gateway import keys
from services.local.servers import free_port
from shared import metrics
from shared.settings import Settings
from tests.conftest import SECRET, Services, admin, gateway, with_settings
from tests.integration.helpers import service_env

Client = TestClient[web.Request, web.Application]
FLOOD = 20_000
WORKERS = 64


def commands_sent(command: str) -> float:
    value: float = metrics.GATEWAY_COMMANDS.labels(command)._value.get()
    return value


async def register(client: Client) -> str:
    resp = await client.post("/api/devices", json={"name": "Laptop"}, headers=admin())
    assert resp.status == 200
    token: str = (await resp.json())["token"]
    return token


# The attacker and the gateway each run in their own process, as they would in production: the
# test's event loop (with ingest and the projector) is then not the one the flood saturates.
ATTACKER = """
import asyncio, json, secrets, sys, time
import aiohttp

async def main(url, total, workers):
    statuses, retry_after, left = {}, set(), total
    async def attack(session):
        nonlocal left
        while left > 0:
            left -= 1
            async with session.post(url, headers={"Authorization": secrets.token_urlsafe(32)}) as resp:
                await resp.read()
                statuses[resp.status] = statuses.get(resp.status, 0) + 1
                if resp.status == 429:
                    retry_after.add(resp.headers.get("Retry-After", ""))
    started = time.monotonic()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=workers)) as session:
        await asyncio.gather(*(attack(session) for _ in range(workers)))
    print(json.dumps({"statuses": statuses, "retry_after": sorted(retry_after),
                      "seconds": time.monotonic() - started}))

asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
"""


@contextlib.asynccontextmanager
async def gateway_process(settings: Settings) -> AsyncIterator[URL]:
    """``usagehub-gateway`` as its own process, on a free port; yields its base URL."""
    port = free_port()
    env = service_env(
        settings,
        USAGEHUB_HTTP_PORT=str(port),
        USAGEHUB_SECRET_KEY=SECRET,
        USAGEHUB_LOG_LEVEL="warning",
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.gateway", env=env, stdout=DEVNULL, stderr=DEVNULL
    )
    base = URL(f"http://127.0.0.1:{port}")
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(400):
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(base / "healthz") as resp:
                        if resp.status == 200:
                            break
                await asyncio.sleep(0.05)
        yield base
    finally:
        proc.terminate()
        await proc.wait()


def sample(text: str, name: str, labels: str) -> float:
    match = re.search(re.escape(f"{name}{{{labels}}}") + r" ([0-9.e+-]+)", text)
    return float(match.group(1)) if match else 0.0


async def test_a_wrong_token_flood_gets_429_while_a_proven_device_keeps_beating(services: Services) -> None:
    async with gateway_process(services.settings) as base, aiohttp.ClientSession(base) as http:

        async def beats_sent() -> float:
            async with http.get("/metrics") as resp:
                text = await resp.text()
            return sample(text, "usagehub_gateway_commands_total", 'command="RecordBeat"')

        async with http.post("/api/devices", json={"name": "Laptop"}, headers=admin()) as resp:
            assert resp.status == 200
            token = (await resp.json())["token"]
        async with http.post("/api/beat", headers={"Authorization": token}) as resp:
            assert resp.status == 200
        sent_before = await beats_sent()
        attacker = await asyncio.create_subprocess_exec(
            sys.executable, "-c", ATTACKER, str(base / "api/beat"), str(FLOOD), str(WORKERS), stdout=PIPE
        )
        latencies: list[float] = []
        device_statuses: list[int] = []

        async def device() -> None:
            while attacker.returncode is None:
                started = time.perf_counter()
                async with http.post("/api/beat", headers={"Authorization": token}) as resp:
                    await resp.read()
                latencies.append(time.perf_counter() - started)
                device_statuses.append(resp.status)
                await asyncio.sleep(0.02)

        beating = asyncio.create_task(device())
        try:
            out, _ = await asyncio.wait_for(attacker.communicate(), 240)
        finally:
            if attacker.returncode is None:
                attacker.kill()
            await beating
        report = json.loads(out)
        statuses = {int(k): v for k, v in report["statuses"].items()}
        elapsed = report["seconds"]

        p50 = statistics.median(latencies)
        p99 = statistics.quantiles(latencies, n=100, method="inclusive")[98]
        print(
            f"\n{FLOOD} wrong tokens in {elapsed:.1f} s ({FLOOD / elapsed:.0f}/s): {statuses};"
            f" {len(latencies)} device beats meanwhile, p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms"
        )
        assert sum(statuses.values()) == FLOOD and set(statuses) <= {401, 429}
        assert statuses.get(429, 0) >= FLOOD * 0.95
        assert report["retry_after"] and all(v.isdigit() and int(v) >= 1 for v in report["retry_after"])
        assert len(device_statuses) >= 10 and set(device_statuses) == {200}
        assert p99 < 1.0
        # What reached ingest besides the device: the budget (20, plus 30 a minute) and what the
        # attacker's connections had in flight when it ran out.
        wrong_sent = await beats_sent() - sent_before - len(device_statuses)
        assert wrong_sent <= 20 + elapsed / 2 + WORKERS
        async with http.get("/api/stats") as resp:
            assert (await resp.json())["total_beats"] == 1 + len(device_statuses)


async def test_over_budget_answers_429_json_at_once_and_a_proven_key_still_passes(services: Services) -> None:
    settings = with_settings(services.settings, auth_failure_burst=3, auth_failures_per_minute=1.0)
    async with TestClient(gateway(settings)) as client:
        token = await register(client)
        for _ in range(3):
            assert (await client.post("/api/beat", headers={"Authorization": "wrong"})).status == 401
        sent = commands_sent("RecordBeat")
        resp = await client.post("/api/beat", headers={"Authorization": "also-wrong"})
        assert resp.status == 429 and int(resp.headers["Retry-After"]) == 60
        assert "error" in await resp.json()
        assert commands_sent("RecordBeat") == sent  # refused before any work
        # Never proven (it has not beaten yet): refused as well, until the budget refills.
        assert (await client.post("/api/beat", headers={"Authorization": token})).status == 429
        # The admin key was proven by the registration: it is not limited.
        resp = await client.post("/api/devices", json={"name": "Phone"}, headers=admin())
        assert resp.status == 200
        # A wrong admin key is a failure like any other.
        wrong_admin = await client.post("/api/devices", json={"name": "x"}, headers={"Authorization": "nope"})
        assert wrong_admin.status == 429
        # Requests without a credential, and public reads, are never limited.
        assert (await client.post("/api/beat")).status == 401
        assert (await client.get("/api/stats")).status == 200


async def test_only_a_route_that_checks_a_credential_can_prove_it(services: Services) -> None:
    settings = with_settings(services.settings, auth_failure_burst=2, auth_failures_per_minute=1.0)
    async with TestClient(gateway(settings)) as client:
        wrong = {"Authorization": "made-up"}
        assert (await client.get("/api/stats", headers=wrong)).status == 200  # public: proves nothing
        for _ in range(2):
            assert (await client.post("/api/beat", headers=wrong)).status == 401
        assert (await client.post("/api/beat", headers=wrong)).status == 429


async def test_a_revoked_token_must_prove_itself_again(services: Services) -> None:
    settings = with_settings(services.settings, auth_failure_burst=2, auth_failures_per_minute=1.0)
    async with TestClient(gateway(settings)) as client:
        token = await register(client)
        assert (await client.post("/api/beat", headers={"Authorization": token})).status == 200
        assert (await client.post("/api/devices/0/token/generate", headers=admin())).status == 200
        for _ in range(2):
            assert (await client.post("/api/beat", headers={"Authorization": token})).status == 401
        assert (await client.post("/api/beat", headers={"Authorization": token})).status == 429


async def test_forwarded_for_names_the_client_only_behind_a_trusted_proxy(services: Services) -> None:
    async def flood_from(client: Client, address: str) -> list[int]:
        headers: dict[str, Any] = {"Authorization": "wrong", "X-Forwarded-For": address}
        return [(await client.post("/api/beat", headers=headers)).status for _ in range(3)]

    base = with_settings(services.settings, auth_failure_burst=2, auth_failures_per_minute=1.0)
    async with TestClient(gateway(base)) as client:
        assert await flood_from(client, "198.51.100.1") == [401, 401, 429]
        # The header is the client's own word: ignored, the peer (this test) is over budget.
        assert (await flood_from(client, "198.51.100.2"))[0] == 429
    behind_proxy = with_settings(base, trusted_proxies="127.0.0.1/32")
    async with TestClient(gateway(behind_proxy)) as client:
        assert client.app[keys.AUTH_LIMITS].proxies
        assert await flood_from(client, "198.51.100.1") == [401, 401, 429]
        assert await flood_from(client, "198.51.100.2") == [401, 401, 429]


# --- org keys and sessions: TR50 bodies and the X-Api-Key / X-Session-Id headers ---------------


async def org_key(client: Client, org_id: str = "acme") -> str:
    body = {"id": org_id, "name": org_id, "time_zone": "UTC"}
    assert (await client.post("/api/orgs", json=body, headers=admin())).status == 201
    resp = await client.post(f"/api/orgs/{org_id}/keys", headers=admin())
    assert resp.status == 201
    key: str = (await resp.json())["key"]
    return key


def authenticate(*keys: str) -> dict[str, Any]:
    return {str(i): {"command": "api.authenticate", "params": {"key": k}} for i, k in enumerate(keys)}


async def tr50_status(client: Client, body: Any, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    resp = await client.post("/api", json=body, headers=headers or {})
    return resp.status, await resp.json()


async def test_tr50_failed_logins_pay_the_failed_authentication_budget(services: Services) -> None:
    settings = with_settings(services.settings, auth_failure_burst=3, auth_failures_per_minute=1.0)
    async with TestClient(gateway(settings)) as client:
        key = await org_key(client)
        status, reply = await tr50_status(client, authenticate(key))
        assert status == 200 and reply["0"]["success"]  # proves the key
        sessions_started = commands_sent("StartSession")
        for guess in ("wrong-1", "wrong-2", "wrong-3"):
            status, reply = await tr50_status(client, authenticate(guess))
            assert status == 200 and reply["0"]["errorCodes"] == [401]
        # A wrong key is refused from the read model: ingest never hears of it.
        assert commands_sent("StartSession") == sessions_started
        status, body = await tr50_status(client, authenticate("wrong-4"))
        assert status == 429 and "too many failed authentications" in body["error"]
        history = {"h": {"command": "usage.api.history", "params": {"last": "1h"}}}
        for unproven in (
            {"auth": {"sessionId": "made-up"}, **history},  # a guessed session id in the body
            {"auth": {"sessionId": "made-up", "x": 1}, **history},  # malformed, still a credential
        ):
            status, _ = await tr50_status(client, unproven)
            assert status == 429
        status, _ = await tr50_status(client, history, {"X-Api-Key": "wrong-5"})
        assert status == 429
        # The proven key still passes.
        status, reply = await tr50_status(client, authenticate(key))
        assert status == 200 and reply["0"]["success"]
        assert (await client.get("/api/usage/history?last=1h", headers={"X-Api-Key": key})).status == 200


async def test_every_guess_in_one_envelope_is_a_failure_of_its_own(services: Services) -> None:
    settings = with_settings(services.settings, auth_failure_burst=5, auth_failures_per_minute=1.0)
    async with TestClient(gateway(settings)) as client:
        key = await org_key(client)
        # 50 guesses in one request would otherwise cost one token: each is charged.
        status, reply = await tr50_status(client, authenticate(*(f"guess-{i}" for i in range(5))))
        assert status == 200 and all(r["errorCodes"] == [401] for r in reply.values())
        assert client.app[keys.AUTH_LIMITS].budget.tokens("127.0.0.1", time.monotonic()) < 1
        sessions_started = commands_sent("StartSession")
        # An envelope is refused whole, before any work, when one of its keys cannot pay.
        assert (await tr50_status(client, authenticate(key, "guess-5")))[0] == 429
        assert commands_sent("StartSession") == sessions_started


async def test_a_wrong_header_credential_in_a_tr50_envelope_is_charged(services: Services) -> None:
    settings = with_settings(services.settings, auth_failure_burst=2, auth_failures_per_minute=1.0)
    async with TestClient(gateway(settings)) as client:
        await org_key(client)
        history = {"h": {"command": "usage.api.history", "params": {"last": "1h"}}}
        for headers in ({"X-Api-Key": "wrong"}, {"X-Session-Id": "wrong"}):
            status, reply = await tr50_status(client, history, headers)
            assert status == 200 and reply["h"]["errorCodes"] == [401]
        assert (await tr50_status(client, history, {"X-Api-Key": "wrong"}))[0] == 429


async def test_a_guessed_session_id_header_pays_on_every_route(services: Services) -> None:
    settings = with_settings(services.settings, auth_failure_burst=2, auth_failures_per_minute=1.0)
    async with TestClient(gateway(settings)) as client:
        key = await org_key(client)
        session = (await tr50_status(client, authenticate(key)))[1]["0"]["params"]["sessionId"]
        # Proven by a route that checks it (the REST twin), so it never pays.
        resp = await client.get("/api/usage/history?last=1h", headers={"X-Session-Id": session})
        assert resp.status == 200
        guess = {"X-Session-Id": "made-up"}
        assert (await client.get("/api/usage/history?last=1h", headers=guess)).status == 401
        assert (await client.get("/api/links", headers=guess)).status == 401
        assert (await client.get("/api/links", headers=guess)).status == 429
        assert (await client.get("/api/usage/history?last=1h", headers=guess)).status == 429
        assert (await client.get("/api/links", headers={"X-Session-Id": session})).status == 200
        assert (await client.get("/api/links")).status == 200  # no credential: never limited
