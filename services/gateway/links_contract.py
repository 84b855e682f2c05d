"""The Lighthouse API's contract: the link registry, usage posts and reads, statistics, CSV export."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from services.gateway.contract import (
    ADMIN,
    FORM,
    JSON,
    MULTIPART,
    Answer,
    Link,
    NumericId,
    Operation,
    Param,
    error_answer,
    idempotency_param,
    rule,
)

TAG = "lighthouse"
MAX_PAGE = 1000
MAX_USAGE_PAGE = 10_000
Name = Annotated[str, rule("1-200 characters, not only spaces", minLength=1, maxLength=200)]
Url = Annotated[
    str,
    rule(
        "an absolute http:// or https:// URL with a host",
        maxLength=2000,
        pattern=r"^https?://[A-Za-z0-9.-]+(/[A-Za-z0-9._~/-]*)?$",
        examples=["https://example.com/tool"],
    ),
]
Description = Annotated[str, rule("at most 2000 characters", maxLength=2000)]
Time = Annotated[str, msgspec.Meta(description="ISO 8601, e.g. 2016-03-04T14:53:25.740Z")]
Offset = Annotated[int, msgspec.Meta(ge=0, le=999_999_999)]


class NewLink(msgspec.Struct):
    """``POST /api/links``."""

    name: Name
    url: Url
    description: Description | None = None


class LinkChange(msgspec.Struct, forbid_unknown_fields=True):
    """``PATCH /api/links/{id}``: any of the fields; ``"description": null`` clears it."""

    name: Name | msgspec.UnsetType = msgspec.UNSET
    url: Url | msgspec.UnsetType = msgspec.UNSET
    description: Description | msgspec.UnsetType | None = msgspec.UNSET


class UsagePost(msgspec.Struct):
    """``POST /api/links/{id}/usage``, form-encoded or a JSON object."""

    user: Annotated[str, rule("1-200 characters, no control characters", minLength=1, maxLength=200)]


class LinkDocument(msgspec.Struct):
    id: int
    name: str
    url: str
    description: str
    created_at: Time


class LinksPage(msgspec.Struct):
    items: list[LinkDocument]
    total: int
    limit: int
    offset: int
    next_offset: int | None


class UsagePosted(msgspec.Struct):
    status: Literal["ok"]


class UsageItem(msgspec.Struct):
    user: str
    date: Time
    duration: Annotated[int, msgspec.Meta(description="seconds")]


class Aggregates(msgspec.Struct):
    date: Annotated[str, msgspec.Meta(description="a UTC day, e.g. 2016-03-04")]
    users: int
    sessions: int
    total_duration: int
    median_duration: int | float | None


class LinkStats(msgspec.Struct):
    link_id: int
    users: int
    sessions: int
    total_duration: int
    median_duration: int | float | None
    by_day: list[Aggregates]


_LINK_ID = Param("id", "path", NumericId, "a link id", required=True)
_NO_LINK = error_answer(404, "no such link")
_NO_KEY = error_answer(401, "wrong or missing Authorization")
_NO_ADMIN = error_answer(404, "no such link, or no secret key is set (the admin routes do not exist)")
_PAGE = (
    Param("limit", "query", Annotated[int, msgspec.Meta(ge=1, le=MAX_PAGE)], "default 50"),
    Param("offset", "query", Offset, "default 0"),
)
_FILTER = (
    Param("user", "query", Annotated[str, msgspec.Meta(max_length=200)], "only this user's usages"),
    Param("since", "query", Time, "usages that started at or after"),
    Param("until", "query", Time, "usages that started before"),
)
_TO_LINK = {"id": "$response.body#/id"}
_LINKED = {
    "getLink": Link("getLink", _TO_LINK),
    "updateLink": Link("updateLink", _TO_LINK),
    "deleteLink": Link("deleteLink", _TO_LINK),
    "postUsage": Link("postUsage", _TO_LINK),
    "getUsage": Link("getUsage", _TO_LINK),
    "getLinkStats": Link("getLinkStats", _TO_LINK),
}

OPERATIONS = (
    Operation(
        "get",
        "/api/links",
        "listLinks",
        "A page of links, by id",
        TAG,
        (Answer(200, "the page", LinksPage),),
        parameters=_PAGE,
    ),
    Operation(
        "post",
        "/api/links",
        "createLink",
        "Create a link",
        TAG,
        (Answer(201, "the link", LinkDocument, links=_LINKED), _NO_KEY, _NO_ADMIN),
        parameters=(idempotency_param(),),
        body=NewLink,
        security=(ADMIN,),
    ),
    Operation(
        "get",
        "/api/links/{id}",
        "getLink",
        "A link",
        TAG,
        (Answer(200, "the link", LinkDocument), _NO_LINK),
        parameters=(_LINK_ID,),
    ),
    Operation(
        "patch",
        "/api/links/{id}",
        "updateLink",
        "Change a link's name, URL or description",
        TAG,
        (Answer(200, "the updated link", LinkDocument), _NO_KEY, _NO_ADMIN),
        parameters=(_LINK_ID,),
        body=LinkChange,
        security=(ADMIN,),
    ),
    Operation(
        "delete",
        "/api/links/{id}",
        "deleteLink",
        "Delete a link",
        TAG,
        (Answer(204, "deleted"), _NO_KEY, _NO_ADMIN),
        parameters=(_LINK_ID,),
        security=(ADMIN,),
    ),
    Operation(
        "get",
        "/api/links/{id}/usage",
        "getUsage",
        "A link's usages, JSON or CSV (`format`, else the Accept header)",
        TAG,
        (
            Answer(
                200,
                "a page of usages; a Link header (rel=next) points to the next one",
                list[UsageItem],
                (JSON, "text/csv"),
                headers=("Link",),
            ),
            _NO_LINK,
        ),
        parameters=(
            _LINK_ID,
            *_FILTER,
            Param("limit", "query", Annotated[int, msgspec.Meta(ge=1, le=MAX_USAGE_PAGE)], "default 10000"),
            Param("offset", "query", Offset, "default 0"),
            Param("format", "query", Literal["json", "csv"], "else chosen by Accept"),
        ),
    ),
    Operation(
        "post",
        "/api/links/{id}/usage",
        "postUsage",
        "Record a use of a link",
        TAG,
        (Answer(201, "recorded", UsagePosted), _NO_LINK),
        parameters=(_LINK_ID, idempotency_param()),
        body=UsagePost,
        body_media_types=(FORM, MULTIPART, JSON),
    ),
    Operation(
        "get",
        "/api/links/{id}/stats",
        "getLinkStats",
        "A link's usage statistics, overall and by day",
        TAG,
        (Answer(200, "the statistics", LinkStats), _NO_LINK),
        parameters=(_LINK_ID, *_FILTER),
    ),
)
