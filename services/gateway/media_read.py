"""Reads of the media-usage read model, shaped as the original service answers them (Argo documents:
``uri``, ``data``, ``links``), with every link absolute."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

import msgspec

from services.ingest.media import valid_id, valid_usage_id
from services.projector.media_usage import (
    LISTED_COLUMNS,
    ListedUsage,
    listed_of,
    listed_usages,
    reported_usages,
)
from shared.db import Conn

# What quote(…, safe="") leaves as it is, and "/": every id usagehub makes is only these.
_PLAIN = re.compile(r"[A-Za-z0-9._~/-]*")


def path_segment(value: str) -> str:
    """One path segment: ``composer/56587d…`` becomes ``composer%2F56587d…``, as in the original."""
    if _PLAIN.fullmatch(value):
        return value.replace("/", "%2F")  # quote() gives the same, at ten times the cost per usage
    return quote(value, safe="")


def usage_uri(public: str, usage_id: str) -> str:
    return f"{public}/usages/{path_segment(usage_id)}"


def media_usages_uri(public: str, media_id: str) -> str:
    return f"{public}/usages/media/{path_segment(media_id)}"


def media_uri(media_api: str, media_id: str) -> str:
    return f"{media_api}/images/{path_segment(media_id)}"


async def all_usages(conn: Conn, media_id: str) -> list[ListedUsage]:
    """Every usage the read model keeps for ``media_id``, whatever the status rules say."""
    if not valid_id(media_id):
        return []  # no media has that id (and Postgres could not even take a NUL)
    return (await listed_usages(conn, [media_id]))[media_id]


async def usage(conn: Conn, usage_id: str) -> ListedUsage | None:
    if not valid_usage_id(usage_id):
        return None
    record = await conn.fetchrow(f"SELECT {LISTED_COLUMNS} FROM media_usages WHERE usage_id = $1", usage_id)
    return None if record is None else listed_of(record)


def _entity(usage: ListedUsage, public: str) -> dict[str, Any]:
    return {"uri": usage_uri(public, usage.usage_id), "data": msgspec.Raw(usage.document)}


def media_usages_document(
    media_id: str, rows: list[ListedUsage], public: str, media_api: str
) -> dict[str, Any]:
    """``GET /usages/media/:id``: the usages the status rules report; ``length`` counts them."""
    shown = reported_usages(rows)
    return {
        "uri": media_usages_uri(public, media_id),
        "length": len(shown),
        "data": [_entity(r, public) for r in shown],
        "links": [{"rel": "media", "href": media_uri(media_api, media_id)}],
    }


def usage_response(row: ListedUsage, public: str, media_api: str) -> dict[str, Any]:
    """``GET /usages/:id``: one usage, whatever its status, with links to its media."""
    return {
        "uri": usage_uri(public, row.usage_id),
        "data": msgspec.Raw(row.document),
        "links": [
            {"rel": "media", "href": media_uri(media_api, row.media_id)},
            {"rel": "media-usage", "href": media_usages_uri(public, row.media_id)},
        ],
    }


def media_document(media_id: str, rows: list[ListedUsage], public: str, media_api: str) -> dict[str, Any]:
    """``GET /images/:id``: the part of a media API's image document that usages make (its
    ``usages``), so the ``media`` links resolve when no media API is configured."""
    usages = media_usages_document(media_id, rows, public, media_api)
    return {
        "uri": media_uri(media_api, media_id),
        "data": {"id": media_id, "usages": {"uri": usages["uri"], "data": usages["data"]}},
        "links": [{"rel": "usages", "href": usages["uri"]}],
    }
