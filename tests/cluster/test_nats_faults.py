"""NATS servers failing under a steady load of durable writes: one killed and restarted, the stream
leader paused, two of three gone (quorum lost). Acknowledged means stored: nothing acknowledged is
lost, nothing is stored twice, and the read models are exactly what the stream says."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest

from shared.bus import EVENTS_STREAM, MAX_OUTSTANDING_PINGS, PING_INTERVAL
from shared.settings import Settings
from tests.cluster.audit import audit
from tests.cluster.harness import NatsNode, Usagehub, stream_leader
from tests.cluster.load import Load

pytestmark = [
    pytest.mark.timeout(240),
    # nats-py leaves the stream of a reconnect attempt unclosed when the server accepted the TCP
    # connection but never spoke (a paused server): the test's own client warns when it is collected.
    pytest.mark.filterwarnings("ignore:unclosed <StreamWriter:ResourceWarning"),
]

STATE_KEYS = ("messages", "first_seq", "last_seq")


async def leader_node(usagehub: Usagehub) -> NatsNode:
    return usagehub.nats.node(await stream_leader(usagehub.js))


async def replicas_agree(usagehub: Usagehub, within: float) -> float:
    """Seconds until every server's own replica of the event stream is the same (or fail)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    states: list[Any] = []
    while loop.time() - started < within:
        try:
            states = [await node.stream_state() for node in usagehub.nats.nodes]
        except Exception as exc:  # a server still starting
            states = [repr(exc)]
        else:
            if (
                all(s is not None for s in states)
                and len({tuple(s[k] for k in STATE_KEYS) for s in states}) == 1
            ):
                return loop.time() - started
        await asyncio.sleep(0.25)
    raise AssertionError(f"the servers' replicas differ after {within}s: {states}")


async def test_one_nats_server_killed_and_restarted(
    usagehub: Usagehub, load: Load, figures: dict[str, Any]
) -> None:
    await load.start()
    await load.run_for(4)
    victim = await leader_node(usagehub)  # the hardest server to lose: it leads the event stream
    killed = load.now()
    victim.kill()
    await load.run_for(10)
    restarted = load.now()
    others = [await n.stream_state() for n in usagehub.nats.nodes if n.running]
    behind_by = max(s["last_seq"] for s in others if s is not None)
    usagehub.nats.restart(victim)

    # Caught up: its own replica holds everything the others had when it came back.
    async def caught_up() -> bool:
        state = await victim.stream_state()
        return state is not None and state["last_seq"] >= behind_by

    while True:
        try:
            if await caught_up():
                break
        except Exception:
            pass
        assert load.now() - restarted < 30, "the restarted server did not catch up within 30 s"
        await asyncio.sleep(0.1)
    caught_up_after = load.now() - restarted
    await load.run_for(4)
    await load.stop()
    agreed_after = await replicas_agree(usagehub, 30)
    result = await audit(usagehub.js, usagehub.database_url, load)

    two_server_acks = sum(1 for w in load.acked if killed <= (w.acked_at or 0) <= restarted)
    figures.update(
        killed=victim.name,
        longest_pause_with_two_servers_s=round(load.longest_pause(killed, restarted), 2),
        acked_with_two_servers=two_server_acks,
        restarted_caught_up_s=round(caught_up_after, 2),
        replicas_identical_after_load_s=round(agreed_after, 2),
        **load.figures(),
        **result.figures(),
    )
    assert load.refused == []
    result.assert_clean()
    assert two_server_acks > 0
    assert load.longest_pause(killed, restarted) < 15


def metric(text: str, name: str, **labels: str) -> float:
    """One sample of a Prometheus text exposition (0 when absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = rf"^{re.escape(name)}(?:\{{{re.escape(wanted)}\}})? (\S+)$" if wanted else rf"^{name} (\S+)$"
    found = re.search(pattern, text, re.M)
    return float(found.group(1)) if found else 0.0


async def test_stream_leader_paused_for_20_seconds(
    usagehub: Usagehub, load: Load, figures: dict[str, Any]
) -> None:
    await load.start()
    await load.run_for(4)
    paused = await leader_node(usagehub)
    stopped_at = load.now()
    paused.pause()
    await load.run_for(20)
    resumed_at = load.now()
    paused.resume()
    await load.run_for(5)
    await load.stop()
    new_leader = await stream_leader(usagehub.js)
    agreed_after = await replicas_agree(usagehub, 30)
    result = await audit(usagehub.js, usagehub.database_url, load)

    # What each ingest's /metrics says (each refreshes every 2 s): the change, and who leads now.
    ingests = usagehub.of_kind("ingest")
    changes = [metric(await i.metrics(), "usagehub_stream_leader_changes_total") for i in ingests]
    leading = [metric(await i.metrics(), "usagehub_stream_leader", server=new_leader) for i in ingests]
    figures.update(
        paused=paused.name,
        leader_after=new_leader,
        longest_pause_while_paused_s=round(load.longest_pause(stopped_at, resumed_at), 2),
        first_ack_after_pause_s=round(load.first_ack_after(stopped_at) or -1, 2),
        acked_while_paused=sum(1 for w in load.acked if stopped_at <= (w.acked_at or 0) <= resumed_at),
        leader_changes_seen_by_ingests=changes,
        replicas_identical_after_load_s=round(agreed_after, 2),
        **load.figures(),
        **result.figures(),
    )
    assert load.refused == []
    result.assert_clean()
    assert new_leader and new_leader != paused.name
    assert all(n >= 1 for n in changes) and all(v == 1 for v in leading)
    assert load.longest_pause(stopped_at, resumed_at) < 20


async def test_quorum_lost_and_regained(usagehub: Usagehub, load: Load, figures: dict[str, Any]) -> None:
    await load.start()
    await load.run_for(4)
    leader = await leader_node(usagehub)
    gone = [leader, next(n for n in usagehub.nats.nodes if n is not leader)]
    last_before = int((await usagehub.js.stream_info(EVENTS_STREAM)).state.last_seq)
    lost_at = load.now()
    for node in gone:
        node.kill()
    await load.run_for(26)
    restored_at = load.now()
    for node in gone:
        usagehub.nats.restart(node)
    await load.run_for(8)
    await load.stop()
    result = await audit(usagehub.js, usagehub.database_url, load)

    # Writes sent before a client notices its server is gone (missed pings) may still end in a
    # timeout (504), answered up to the gateway's command timeout later; after that, every write is
    # refused with 503 and Retry-After, but for a retry of a write stored before, which is answered
    # as stored. (A bound of 10 s once caught a write sent just after the kill, answered 504 at 10.2 s.)
    noticed = PING_INTERVAL * (MAX_OUTSTANDING_PINGS + 1)
    settled = lost_at + noticed + Settings().command_timeout
    without_quorum = load.writes_answered(settled, restored_at)
    refused = [a for a in without_quorum if a.status >= 300]
    answered_ok = [a for a in without_quorum if 200 <= a.status < 300]
    reads = load.reads_answered(lost_at, restored_at)
    failed = [a for a in load.answers if a.kind != "read" and a.status >= 300]
    resumed = load.first_ack_after(restored_at)
    figures.update(
        killed=[n.name for n in gone],
        write_answers_without_quorum=load.statuses(without_quorum),
        read_answers_without_quorum=load.statuses(reads),
        writes_resumed_after_s=round(resumed or -1, 2),
        **load.figures(),
        **result.figures(),
    )
    assert load.refused == []
    result.assert_clean()
    assert refused and all(a.status == 503 and a.retry_after for a in refused)
    assert all(result.seq_of[a.key] <= last_before for a in answered_ok)
    assert all(a.retry_after for a in failed)
    assert reads and all(a.status == 200 for a in reads)
    assert resumed is not None and resumed < 30
