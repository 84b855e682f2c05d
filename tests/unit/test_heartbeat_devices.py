"""Device decisions and the registry ingest decides against."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.ingest.heartbeat import (
    DeviceRegistry,
    device_for_token,
    fold_device_registry,
    record_page_visit,
    regenerate_token,
    register_device,
    valid_device_name,
)
from services.ingest.rejected import Rejected
from shared.commands import RecordPageVisit, RegenerateDeviceToken, RegisterDevice
from shared.secrets import hash_token, new_token, same_secret

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def registry_with(*tokens: str) -> DeviceRegistry:
    registry = DeviceRegistry()
    for seq, token in enumerate(tokens, start=1):
        cmd = RegisterDevice(name=f"d{seq}", token_hash=hash_token(token))
        event = register_device(cmd, registry, event_id="e", at=NOW)
        registry = fold_device_registry(registry, event, seq)
    return registry


def test_ids_are_sequential_from_zero() -> None:
    registry = registry_with("a", "b", "c")
    assert sorted(registry.names) == [0, 1, 2]
    assert registry.next_id == 3 and registry.last_seq == 3


def test_regenerating_revokes_the_old_token() -> None:
    registry = registry_with("old")
    cmd = RegenerateDeviceToken(device_id=0, token_hash=hash_token("new"))
    event = regenerate_token(cmd, registry, event_id="e", at=NOW)
    registry = fold_device_registry(registry, event, 2)
    assert device_for_token(registry, hash_token("new")) == 0
    with pytest.raises(Rejected) as err:
        device_for_token(registry, hash_token("old"))
    assert err.value.status == 401


def test_regenerating_an_unknown_device_is_404() -> None:
    with pytest.raises(Rejected) as err:
        cmd = RegenerateDeviceToken(device_id=3, token_hash=hash_token("h"))
        regenerate_token(cmd, registry_with("a"), event_id="e", at=NOW)
    assert err.value.status == 404


@pytest.mark.parametrize("token_hash", ["", "x" * 64, hash_token("a").upper(), hash_token("a")[:-1]])
def test_a_token_hash_that_is_not_sha256_hex_is_400(token_hash: str) -> None:
    with pytest.raises(Rejected) as err:
        register_device(
            RegisterDevice(name="d", token_hash=token_hash), DeviceRegistry(), event_id="e", at=NOW
        )
    assert err.value.status == 400


@pytest.mark.parametrize("name", ["", "   ", "x" * 201, "a\nb", "\x00"])
def test_invalid_names(name: str) -> None:
    with pytest.raises(Rejected) as err:
        valid_device_name(name)
    assert err.value.status == 400


@given(st.text(min_size=1, max_size=200).filter(lambda s: s.strip() and all(ord(c) >= 32 for c in s)))
def test_valid_names_are_kept_verbatim(name: str) -> None:
    assert valid_device_name(name) == name


def test_tokens_are_random_and_stored_hashed() -> None:
    tokens = {new_token() for _ in range(100)}
    assert len(tokens) == 100 and all(len(t) >= 43 for t in tokens)
    token = next(iter(tokens))
    assert token not in hash_token(token) and len(hash_token(token)) == 64


def test_secret_comparison() -> None:
    assert same_secret("k", "k") and not same_secret("k", "K") and not same_secret(None, "k")
    assert not same_secret("", "k")


def test_page_visit_paths() -> None:
    assert record_page_visit(RecordPageVisit(path="/"), event_id="e", at=NOW).path == "/"
    with pytest.raises(Rejected):
        record_page_visit(RecordPageVisit(path="x"), event_id="e", at=NOW)


async def test_catch_ups_in_a_flood_share_reads() -> None:
    """Folded.catch_up: every caller sees a read that began after it asked, and reads never pile up."""
    import asyncio

    from services.ingest.context import Folded

    reads: list[int] = []
    gate = asyncio.Event()

    class Counting(Folded[DeviceRegistry]):
        async def _read(self, js: object) -> None:
            reads.append(len(reads))
            await gate.wait()

    folded = Counting([], lambda s, e, q: s, DeviceRegistry(), lambda s, subject, q: s)
    first = asyncio.create_task(folded.catch_up(None))  # type: ignore[arg-type]
    await asyncio.sleep(0)
    flood = [asyncio.create_task(folded.catch_up(None)) for _ in range(50)]  # type: ignore[arg-type]
    await asyncio.sleep(0)
    gate.set()
    await asyncio.gather(first, *flood)
    assert len(reads) == 2  # the one under way, and one more for everyone who came during it
