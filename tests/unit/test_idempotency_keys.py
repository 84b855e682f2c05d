"""Idempotency keys: scoped to origin, command, caller and target; fingerprints tell a retry from a
different request that reuses a key."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.ingest.idempotency import fingerprint, idempotency_key, same_request
from services.ingest.rejected import Rejected
from shared.commands import RecordLinkUsage, RegisterDevice
from shared.events import LinkUsed

text = st.text(min_size=1, max_size=30)


def test_no_key_no_scope() -> None:
    assert idempotency_key(RegisterDevice(name="a", token_hash="h"), "admin", "devices") is None


@given(key=text, name=text, a=text, b=text)
def test_keys_of_different_callers_or_targets_never_meet(key: str, name: str, a: str, b: str) -> None:
    cmd = RegisterDevice(name=name, token_hash="h", idempotency_key=key)
    scoped = idempotency_key(cmd, a, "t")
    assert scoped is not None
    if a != b:
        other = idempotency_key(cmd, b, "t")
        assert other is not None and other.scoped != scoped.scoped
    elsewhere = idempotency_key(cmd, a, "t2")
    assert elsewhere is not None and elsewhere.scoped != scoped.scoped
    from_intake = idempotency_key(
        RegisterDevice(name=name, token_hash="h", idempotency_key=key, origin="intake:x"), a, "t"
    )
    assert from_intake is not None and from_intake.scoped != scoped.scoped


@given(name=text, key1=text, key2=text, rid=text, hash1=text, hash2=text)
def test_a_retry_has_the_same_fingerprint_whatever_the_server_made(
    name: str, key1: str, key2: str, rid: str, hash1: str, hash2: str
) -> None:
    first = RegisterDevice(name=name, token_hash=hash1, idempotency_key=key1)
    retry = RegisterDevice(name=name, token_hash=hash2, idempotency_key=key2, request_id=rid)
    assert fingerprint(first) == fingerprint(retry)


@given(a=text, b=text)
def test_a_different_request_has_another_fingerprint(a: str, b: str) -> None:
    same = fingerprint(RecordLinkUsage(link_id=1, user=a)) == fingerprint(RecordLinkUsage(link_id=1, user=b))
    assert same == (a == b)
    at = datetime(2026, 1, 1, tzinfo=UTC)
    assert fingerprint(RecordLinkUsage(link_id=1, user=a)) != fingerprint(
        RecordLinkUsage(link_id=1, user=a, used_at=at)
    )


def test_reusing_a_key_for_another_request_is_422() -> None:
    first = idempotency_key(
        RecordLinkUsage(link_id=1, user="dave", idempotency_key="k"), "user:dave", "link:1"
    )
    assert first is not None
    event = LinkUsed(
        event_id="e",
        occurred_at=datetime(2026, 1, 1, tzinfo=UTC),
        link_id=1,
        user="dave",
        used_at=datetime(2026, 1, 1, tzinfo=UTC),
        idempotency_key=first.scoped,
        request_fingerprint=first.fingerprint,
    )
    same_request(first, event)  # the retry it claims to be
    other = idempotency_key(
        RecordLinkUsage(
            link_id=1, user="dave", idempotency_key="k", used_at=datetime(2025, 1, 1, tzinfo=UTC)
        ),
        "user:dave",
        "link:1",
    )
    assert other is not None and other.scoped == first.scoped
    with pytest.raises(Rejected) as err:
        same_request(other, event)
    assert err.value.status == 422
