"""Answers kept in memory, least recently used first out, within a budget of bytes.

A key must name everything an answer depends on, including the read model's version, so an entry
is never stale: a newer version is a new key, and the old entries age out.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class AnswerCache(Generic[K, V]):
    def __init__(self, max_bytes: int, max_entry_bytes: int) -> None:
        if not 0 < max_entry_bytes <= max_bytes:
            raise ValueError("max_entry_bytes must be positive and at most max_bytes")
        self.max_bytes = max_bytes
        self.max_entry_bytes = max_entry_bytes
        self.bytes = 0
        self._entries: OrderedDict[K, tuple[V, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: K) -> V | None:
        found = self._entries.get(key)
        if found is None:
            return None
        self._entries.move_to_end(key)
        return found[0]

    def put(self, key: K, value: V, size: int) -> None:
        """Keep ``value`` (``size`` bytes); one larger than an entry may be is not kept at all."""
        if size > self.max_entry_bytes:
            return
        previous = self._entries.pop(key, None)
        if previous is not None:
            self.bytes -= previous[1]
        self._entries[key] = (value, size)
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, (_, dropped) = self._entries.popitem(last=False)
            self.bytes -= dropped
