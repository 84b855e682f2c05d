"""The gateway's tally: calls grouped per (org, service, quarter hour), sent in batches that keep their
key until acknowledged, so a lost answer is sent again and counted once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.gateway import metering_tally
from services.gateway.metering_tally import ApiCallTally
from shared.commands import Reply
from shared.commands.metering import CountApiCalls

T0 = datetime(2024, 3, 10, 12, 7, tzinfo=UTC)


class Ingest:
    """Answers each batch with the next status (or raises), and remembers what it was sent."""

    def __init__(self, *answers: int | Exception) -> None:
        self.answers = list(answers)
        self.sent: list[CountApiCalls] = []

    async def __call__(self, cmd: CountApiCalls) -> Reply:
        self.sent.append(cmd)
        answer = self.answers.pop(0) if self.answers else 200
        if isinstance(answer, Exception):
            raise answer
        return Reply(status=answer)


def entries(cmd: CountApiCalls) -> list[tuple[str, str, datetime, int]]:
    return [(c.org_id, c.service, c.at, c.count) for c in cmd.counts]


async def test_calls_are_grouped_by_org_service_and_quarter_hour() -> None:
    ingest = Ingest()
    tally = ApiCallTally(ingest)
    for _ in range(3):
        tally.add("acme", "heartbeat", T0)
    tally.add("acme", "heartbeat", T0 + timedelta(minutes=8))  # 12:15: the next quarter
    tally.add("acme", "tr50", T0)
    tally.add("globex", "heartbeat", T0)
    assert tally.pending == 6
    assert await tally.flush() is True
    [batch] = ingest.sent
    quarter = datetime(2024, 3, 10, 12, 0, tzinfo=UTC)
    assert entries(batch) == [
        ("acme", "heartbeat", quarter, 3),
        ("acme", "heartbeat", quarter + timedelta(minutes=15), 1),
        ("acme", "tr50", quarter, 1),
        ("globex", "heartbeat", quarter, 1),
    ]
    assert batch.idempotency_key and tally.pending == 0
    assert await tally.flush() is True and len(ingest.sent) == 1  # nothing new: nothing sent


async def test_an_unanswered_batch_goes_again_with_the_same_key_and_new_calls_wait() -> None:
    ingest = Ingest(TimeoutError("no answer"), 503, 200, 200)
    tally = ApiCallTally(ingest)
    tally.add("acme", "tr50", T0)
    assert await tally.flush() is False
    tally.add("acme", "tr50", T0)  # while the first batch is unacknowledged
    assert await tally.flush() is False
    assert tally.pending == 2
    assert await tally.flush() is True
    first, again, third, fourth = ingest.sent
    assert first == again == third and first.idempotency_key == third.idempotency_key
    assert entries(fourth) == [("acme", "tr50", datetime(2024, 3, 10, 12, 0, tzinfo=UTC), 1)]
    assert fourth.idempotency_key != first.idempotency_key and tally.pending == 0


async def test_a_refused_batch_is_dropped_not_retried_forever() -> None:
    ingest = Ingest(400)
    tally = ApiCallTally(ingest)
    tally.add("gone", "tr50", T0)
    assert await tally.flush() is True and tally.pending == 0 and len(ingest.sent) == 1


async def test_large_flushes_are_split_into_batches_of_distinct_keys() -> None:
    ingest = Ingest()
    tally = ApiCallTally(ingest)
    for i in range(metering_tally.MAX_COUNTS_PER_BATCH + 10):
        tally.add(f"org-{i:05d}", "tr50", T0)
    assert await tally.flush() is True
    assert [len(b.counts) for b in ingest.sent] == [metering_tally.MAX_COUNTS_PER_BATCH, 10]
    assert len({b.idempotency_key for b in ingest.sent}) == 2


async def test_close_sends_what_is_left() -> None:
    ingest = Ingest(503)
    tally = ApiCallTally(ingest)
    tally.add("acme", "tr50", T0)
    await tally.close()
    assert tally.pending == 0 and len(ingest.sent) == 2
