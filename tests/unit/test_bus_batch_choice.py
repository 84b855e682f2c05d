"""Which appends the Appender sends as one atomic batch, and which one by one (cheaper for a few)."""

from __future__ import annotations

from shared.bus import EXPECTED_SUBJECT, ONE_BY_ONE_EXPECTING, ONE_BY_ONE_FREE, _Pending, _small


def pending(expecting: bool) -> _Pending:
    headers = {"Nats-Msg-Id": "m"}
    if expecting:
        headers[EXPECTED_SUBJECT] = "usagehub.events.devices.>"
    return _Pending("usagehub.events.beats.recorded", b"{}", headers)


async def test_a_handful_goes_one_by_one() -> None:
    assert _small([pending(True)] * ONE_BY_ONE_EXPECTING + [pending(False)] * ONE_BY_ONE_FREE)
    assert _small([pending(False)] * 2)


async def test_more_than_a_handful_goes_as_one_atomic_batch() -> None:
    # Appends with an expectation go one after another: a few more already cost more than a batch.
    assert not _small([pending(True)] * (ONE_BY_ONE_EXPECTING + 1))
    assert not _small([pending(False)] * (ONE_BY_ONE_FREE + 1))
    assert not _small([pending(True)] * 20 + [pending(False)] * 3)
