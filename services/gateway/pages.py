"""The page every list of admin records answers with, over HTTP and in the CLI: its items, how many
there are in all, and where the next page starts (None on the last)."""

from __future__ import annotations

from typing import Any


def page(items: list[dict[str, Any]], total: int, limit: int, offset: int) -> dict[str, Any]:
    return {
        "items": items,
        "total": total,
        "limit": limit,
        "offset": offset,
        "next_offset": offset + limit if offset + limit < total else None,
    }
