"""A gateway killed under load: the other one keeps serving, and clients that retry with their keys
on the other gateway see each write once, however far the first attempt got."""

from __future__ import annotations

from typing import Any

import pytest

from tests.cluster.audit import audit
from tests.cluster.harness import Usagehub
from tests.cluster.load import NO_ANSWER, Load

pytestmark = pytest.mark.timeout(180)


async def test_one_gateway_killed(usagehub: Usagehub, load: Load, figures: dict[str, Any]) -> None:
    victim, survivor = usagehub.of_kind("gateway")
    await load.start()
    await load.run_for(4)
    killed = load.now()
    victim.kill()
    await load.run_for(10)
    await load.stop()
    result = await audit(usagehub.js, usagehub.database_url, load)

    at_survivor = [a for a in load.answers if a.at > killed and a.gateway == survivor.base]
    unanswered = [a for a in load.answers if a.gateway == victim.base and a.status == NO_ANSWER and a.key]
    # Under way when the gateway died (the connection was open), or refused a connection after.
    cut_mid_request = {a.key for a in unanswered if "ClientConnectorError" not in a.error}
    refused_connection = {a.key for a in unanswered} - cut_mid_request
    figures.update(
        longest_pause_after_kill_s=round(load.longest_pause(killed, load.stopped), 2),
        acked_after_kill=sum(1 for w in load.acked if (w.acked_at or 0) > killed),
        answers_of_the_other_gateway_after_kill=load.statuses(at_survivor),
        writes_cut_mid_request_then_retried=len(cut_mid_request),
        writes_refused_a_connection_then_retried=len(refused_connection),
        **load.figures(),
        **result.figures(),
    )
    assert load.refused == []
    result.assert_clean()
    assert at_survivor and all(200 <= a.status < 300 for a in at_survivor)
    assert load.longest_pause(killed, load.stopped) < 5
