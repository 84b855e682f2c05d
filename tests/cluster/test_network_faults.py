"""The network between the services and NATS, and between the projectors and Postgres, goes bad under
load: slow (every byte delayed), cut (every connection closed at once, three times), partitioned
(nothing gets through for 8 s). After each fault heals the projections catch up within 30 s and
end exactly as folding the stream gives: no event skipped, none applied twice."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from tests.cluster.audit import audit, caught_up
from tests.cluster.harness import NatsCluster, Usagehub, running_usagehub
from tests.cluster.load import Load, set_up
from tests.cluster.proxy import Proxy

pytestmark = [
    pytest.mark.timeout(240),
    # nats-py leaves the stream of a reconnect attempt unclosed when the other end accepted the TCP
    # connection but never spoke (a partition, here a proxy holding bytes): it warns when collected.
    pytest.mark.filterwarnings("ignore:unclosed <StreamWriter:ResourceWarning"),
]

CONVERGE_WITHIN = 30.0


def through(url: str, proxy: Proxy) -> str:
    """``url`` with its host and port replaced by the proxy's."""
    parts = urlsplit(url)
    user = parts.netloc.rpartition("@")[0]
    return urlunsplit(parts._replace(netloc=f"{user + '@' if user else ''}127.0.0.1:{proxy.port}"))


@pytest.fixture
async def proxied(tmp_path: Path, database_url: str) -> AsyncIterator[tuple[Usagehub, list[Proxy], Proxy]]:
    """The cluster with every service reaching NATS through a proxy per server, and the projectors
    reaching Postgres through one more."""
    nats = NatsCluster(tmp_path)
    nats_proxies = [Proxy(node.client_port) for node in nats.nodes]
    postgres_proxy = Proxy(int(urlsplit(database_url).port or 5432))
    for proxy in (*nats_proxies, postgres_proxy):
        await proxy.start()
    try:
        async with running_usagehub(
            tmp_path,
            database_url,
            nats=nats,
            service_nats_urls=[f"nats://127.0.0.1:{p.port}" for p in nats_proxies],
            projector_database_url=through(database_url, postgres_proxy),
        ) as running:
            yield running, nats_proxies, postgres_proxy
    finally:
        for proxy in (*nats_proxies, postgres_proxy):
            await proxy.close()


async def test_delays_cuts_and_partitions_heal_into_exact_projections(
    proxied: tuple[Usagehub, list[Proxy], Proxy], figures: dict[str, Any]
) -> None:
    usagehub, nats_proxies, postgres_proxy = proxied
    proxies = [*nats_proxies, postgres_proxy]
    tokens, link_id = await set_up(usagehub.gateways[0], usagehub.secret)

    async def delay(load: Load) -> None:
        for proxy in proxies:
            proxy.delay = 0.2
        await load.run_for(6)

    async def cut(load: Load) -> None:
        for _ in range(3):
            for proxy in proxies:
                proxy.cut()
            await load.run_for(2)

    async def drop(load: Load) -> None:
        for proxy in proxies:
            proxy.drop()
        await load.run_for(8)

    for fault in (delay, cut, drop):
        load = Load(usagehub.gateways, tokens, link_id)
        await load.start()
        await load.run_for(3)
        began = load.now()
        await fault(load)
        for proxy in proxies:
            proxy.heal()
        healed = load.now()
        caught_up_s = await caught_up(usagehub.js, usagehub.database_url, CONVERGE_WITHIN)
        await load.stop()
        result = await audit(usagehub.js, usagehub.database_url, load, within=CONVERGE_WITHIN)
        figures[fault.__name__] = {
            "projections_caught_up_after_heal_s": round(caught_up_s, 2),
            "longest_pause_during_fault_s": round(load.longest_pause(began, healed), 2),
            # Stored before the fault, answered once the read-your-writes bound (5 s) ran out.
            "acked_during_fault": sum(1 for w in load.acked if began <= (w.acked_at or 0) <= healed),
            "first_ack_after_heal_s": round(load.first_ack_after(healed) or -1, 2),
            **load.figures(),
            **result.figures(),
        }
        assert load.refused == [], fault.__name__
        result.assert_clean()
        assert caught_up_s <= CONVERGE_WITHIN
