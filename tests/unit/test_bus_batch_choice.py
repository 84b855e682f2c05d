"""Which appends the Appender sends as one atomic batch, and which one by one (cheaper for a few)."""

from __future__ import annotations

from typing import Any, cast

from shared.bus import (
    EXPECTED_SUBJECT,
    ONE_BY_ONE_EXPECTING,
    ONE_BY_ONE_FREE,
    Appender,
    _Pending,
    _small,
)

DEVICES = "usagehub.events.devices.>"


def pending(expecting: bool, subject: str = DEVICES, alone: bool = False) -> _Pending:
    headers = {"Nats-Msg-Id": "m"}
    if expecting:
        headers[EXPECTED_SUBJECT] = subject
    return _Pending("usagehub.events.beats.recorded", b"{}", headers, alone)


async def test_a_handful_goes_one_by_one() -> None:
    assert _small([pending(True)] * ONE_BY_ONE_EXPECTING + [pending(False)] * ONE_BY_ONE_FREE)
    assert _small([pending(False)] * 2)


async def test_more_than_a_handful_goes_as_one_atomic_batch() -> None:
    # Appends with an expectation go one after another: a few more already cost more than a batch.
    assert not _small([pending(True)] * (ONE_BY_ONE_EXPECTING + 1))
    assert not _small([pending(False)] * (ONE_BY_ONE_FREE + 1))
    assert not _small([pending(True)] * 20 + [pending(False)] * 3)


async def test_appends_that_queued_behind_an_expectation_join_the_batch_that_holds_it() -> None:
    appender = Appender(cast(Any, None))  # _top_up never sends: no connection needed
    batch = [pending(True)]
    joining = [pending(True), pending(False), pending(True)]
    staying = [pending(True, "usagehub.events.links.>"), pending(True)]
    appender._queue.extend(joining + staying)
    appender._top_up(batch, frozenset({DEVICES}))
    # It stops at the first needing an expectation it does not hold: order is kept.
    assert batch[1:] == joining
    assert list(appender._queue) == staying


async def test_an_append_that_must_travel_alone_is_never_topped_up() -> None:
    appender = Appender(cast(Any, None))
    batch = [pending(True)]
    alone = pending(True, alone=True)
    appender._queue.extend([alone, pending(False)])
    appender._top_up(batch, frozenset({DEVICES}))
    assert len(batch) == 1 and appender._queue[0] is alone
