"""Usages per (status, platform): the dashboard's media panel, kept by the media projection.

``count_change`` is pure: a batch's rows before and after (every row it can change, as the media
projection loads them) give how each count moves. The counts are added in the same transaction,
so they always equal a count of ``media_usages``, however the events were batched or rebuilt.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Protocol

from shared.db import Conn


class Usage(Protocol):
    @property
    def status(self) -> str: ...

    @property
    def platform(self) -> str: ...


def count_change(before: Iterable[Usage], after: Iterable[Usage]) -> dict[tuple[str, str], int]:
    """How many more (or fewer) usages each (status, platform) has after than before; none at 0."""
    change: Counter[tuple[str, str]] = Counter((u.status, u.platform) for u in after)
    change.subtract((u.status, u.platform) for u in before)
    return {key: n for key, n in sorted(change.items()) if n}


async def apply_count_change(conn: Conn, change: Mapping[tuple[str, str], int]) -> None:
    if not change:
        return
    keys = list(change)
    await conn.execute(
        "INSERT INTO media_usage_counts (status, platform, usages)"
        " SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[])"
        " ON CONFLICT (status, platform) DO UPDATE SET usages = media_usage_counts.usages + EXCLUDED.usages",
        [s for s, _ in keys],
        [p for _, p in keys],
        [change[k] for k in keys],
    )
    await conn.execute("DELETE FROM media_usage_counts WHERE usages = 0")
