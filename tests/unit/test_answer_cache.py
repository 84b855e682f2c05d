"""The answer cache keeps at most its budget of bytes, dropping the least recently used first."""

from __future__ import annotations

import pytest

from services.gateway.answer_cache import AnswerCache


def test_the_least_recently_used_goes_first_when_the_budget_is_spent() -> None:
    cache: AnswerCache[str, bytes] = AnswerCache(max_bytes=10, max_entry_bytes=5)
    cache.put("a", b"aaaa", 4)
    cache.put("b", b"bbbb", 4)
    assert cache.get("a") == b"aaaa"  # now "b" is the least recently used
    cache.put("c", b"cc", 2)
    assert cache.bytes == 10 and len(cache) == 3
    cache.put("d", b"d", 1)
    assert cache.get("b") is None
    assert [cache.get(k) for k in "acd"] == [b"aaaa", b"cc", b"d"]
    assert cache.bytes == 7


def test_an_entry_larger_than_allowed_is_not_kept_and_evicts_nothing() -> None:
    cache: AnswerCache[str, bytes] = AnswerCache(max_bytes=10, max_entry_bytes=5)
    cache.put("a", b"aaaa", 4)
    cache.put("big", b"x" * 6, 6)
    assert cache.get("big") is None and cache.get("a") == b"aaaa" and cache.bytes == 4


def test_putting_a_key_again_replaces_it_and_its_size() -> None:
    cache: AnswerCache[str, bytes] = AnswerCache(max_bytes=10, max_entry_bytes=10)
    cache.put("a", b"aaaa", 4)
    cache.put("a", b"aaaaaaaa", 8)
    assert cache.get("a") == b"aaaaaaaa" and cache.bytes == 8 and len(cache) == 1


def test_a_budget_must_hold_an_entry() -> None:
    with pytest.raises(ValueError):
        AnswerCache(max_bytes=4, max_entry_bytes=5)
