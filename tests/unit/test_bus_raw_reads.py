"""The raw read path of the bus: the protocol parser's quick path and the pull deliveries it feeds."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.bus import BusClient, Puller

RAW_SID = 7
OTHER_SID = 8


def _message(sid: int, subject: bytes, reply: bytes, headers: bytes | None, payload: bytes) -> bytes:
    reply_part = b" " + reply if reply else b""
    if headers is None:
        return b"MSG %s %d%s %d\r\n%s\r\n" % (subject, sid, reply_part, len(payload), payload)
    total = len(headers) + len(payload)
    line = b"HMSG %s %d%s %d %d\r\n" % (subject, sid, reply_part, len(headers), total)
    return line + headers + payload + b"\r\n"


messages = st.lists(
    st.tuples(
        st.sampled_from([RAW_SID, OTHER_SID, 0]),  # 0: a PING between messages
        st.sampled_from([b"usagehub.events.a", b"_INBOX_x.y.1"]),
        st.sampled_from([b"", b"$JS.ACK.S.C.1.5.5.1700000000000000000.0"]),
        st.one_of(
            st.none(),
            st.just(b"NATS/1.0\r\nNats-Msg-Id: k\r\n\r\n"),
            st.just(b"NATS/1.0 408 Timeout\r\n\r\n"),
        ),
        st.binary(max_size=40),
    ),
    max_size=30,
)


class _Recorder:
    def __init__(self) -> None:
        self.raw: list[tuple[bytes, bytes, bytes, bytes | None]] = []
        self.other: list[tuple[int, bytes, bytes, bytes, bytes | None]] = []
        self.pings = 0


def _client(recorder: _Recorder) -> BusClient:
    nc = BusClient()
    nc._raw_handlers[RAW_SID] = lambda *parts: recorder.raw.append(parts)

    async def process_msg(sid: int, subject: bytes, reply: bytes, data: bytes, hdr: Any) -> None:
        handler = nc._raw_handlers.get(sid)
        if handler is not None:  # the slow path hands raw messages over too
            handler(subject, reply, data, hdr)
        else:
            recorder.other.append((sid, subject, reply, data, hdr))

    async def process_ping() -> None:
        recorder.pings += 1

    nc._process_msg = process_msg  # type: ignore[method-assign]
    nc._process_ping = process_ping  # type: ignore[method-assign]
    return nc


@settings(max_examples=200, deadline=None)
@given(messages, st.lists(st.integers(1, 64), min_size=1, max_size=20))
def test_every_message_arrives_whole_and_in_order_however_the_bytes_are_cut(
    sent: list[tuple[int, bytes, bytes, bytes | None, bytes]], cuts: list[int]
) -> None:
    wire = b"".join(
        b"PING\r\n" if sid == 0 else _message(sid, subject, reply, headers, payload)
        for sid, subject, reply, headers, payload in sent
    )
    recorder = _Recorder()
    nc = _client(recorder)

    async def feed() -> None:
        at, i = 0, 0
        while at < len(wire):
            size = cuts[i % len(cuts)]
            await nc._ps.parse(wire[at : at + size])
            at, i = at + size, i + 1

    asyncio.run(feed())
    assert recorder.raw == [
        (subject, reply, payload, headers) for sid, subject, reply, headers, payload in sent if sid == RAW_SID
    ]
    assert [m[0] for m in recorder.other] == [sid for sid, *_ in sent if sid == OTHER_SID]
    assert recorder.pings == sum(1 for sid, *_ in sent if sid == 0)
    assert not nc._ps.buf


def _puller() -> Puller:
    nc = BusClient()
    nc._inbox_prefix = bytearray(b"_INBOX_projector")
    return Puller(nc, "S", "C", 10)


def test_deliveries_are_read_from_both_forms_of_the_ack_subject() -> None:
    puller = _puller()
    puller._on_message(b"a.b", b"$JS.ACK.S.C.1.41.3.1700000000000000000.9", b"x", None)
    puller._on_message(b"a.c", b"$JS.ACK.dom.hash.S.C.2.42.4.1700000000000000000.8.tok", b"y", None)
    first, second = puller._ready
    assert (first.seq, first.num_delivered, first.consumer_seq, first.pending, first.subject) == (
        41,
        1,
        3,
        9,
        "a.b",
    )
    assert (second.seq, second.num_delivered, second.consumer_seq, second.pending) == (42, 2, 4, 8)
    assert first.ack_subject == "$JS.ACK.S.C.1.41.3.1700000000000000000.9" and second.data == b"y"


def test_a_request_that_ends_normally_is_not_a_failure_but_a_deleted_consumer_is() -> None:
    puller = _puller()
    ends = [b"404 No Messages", b"408 Request Timeout", b"409 Batch Completed", b"100 Idle Heartbeat"]
    ends += [b"409 Message Size Exceeds MaxBytes", b"409 Leadership Change", b"409 Server Shutdown"]
    for status in ends:
        puller._on_message(b"_INBOX.x.1", b"", b"", b"NATS/1.0 " + status + b"\r\n\r\n")
    assert puller._failure is None and not puller._ready
    for gone in (b"409 Consumer Deleted", b"503"):
        puller = _puller()
        puller._on_message(b"_INBOX.x.2", b"", b"", b"NATS/1.0 " + gone + b"\r\n\r\n")
        assert isinstance(puller._failure, ConnectionError)


def test_a_message_that_is_neither_a_delivery_nor_a_status_fails_the_read_not_the_connection() -> None:
    puller = _puller()
    puller._on_message(b"_INBOX.x.1", b"", b"stray", None)
    assert isinstance(puller._failure, ConnectionError) and not puller._ready
