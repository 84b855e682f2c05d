"""The contribution statistics API's contract (Stackalytics JSON API v1.0): reads with JSONP, and the
admin writes that feed it."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from services.gateway.contract import ADMIN, Answer, Operation, Param, error_answer
from shared.commands.contributions import (
    BlueprintData,
    CompanyData,
    EmailData,
    MarkData,
    ModuleGroupData,
    ProjectTypeData,
    ReleaseData,
    RepoData,
    UserData,
)

TAG = "contributions"
API = "/api/1.0"
JSONP = "application/javascript"
Text = Annotated[str, msgspec.Meta(max_length=1000, description="printable text")]
Unix = Annotated[int, msgspec.Meta(ge=-(10**11), le=10**11, description="a Unix time, whole seconds")]
Metric = Literal["commits", "loc", "marks", "emails", "bpd", "bpc"]
Callback = Annotated[
    str,
    msgspec.Meta(
        pattern=r"^[A-Za-z_$][A-Za-z0-9_$]{0,63}(\.[A-Za-z_$][A-Za-z0-9_$]{0,63}){0,7}$",
        description="answer as JSONP, `callback(...);`",
    ),
]


class StatsRow(msgspec.Struct, omit_defaults=True):
    metric: int
    id: str
    name: str
    comment: str | None = None


class StatsAnswer(msgspec.Struct):
    stats: list[StatsRow]


class ActivityAnswer(msgspec.Struct):
    activity: list[dict[str, Any]]


class Contribution(msgspec.Struct):
    loc: int
    new_blueprint_count: int
    email_count: int
    commit_count: int
    competed_blueprint_count: int
    marks: dict[str, int]


class ContributionAnswer(msgspec.Struct):
    contribution: Contribution


class Choice(msgspec.Struct):
    id: str
    text: str


class ProjectTypeChoice(msgspec.Struct):
    id: str
    text: str
    child: bool


class Releases(msgspec.Struct):
    data: list[Choice]
    default: str


class ProjectTypes(msgspec.Struct):
    data: list[ProjectTypeChoice]
    default: str


class Choices(msgspec.Struct):
    data: list[Choice]


class Recorded(msgspec.Struct):
    accepted: int
    duplicates: int


class Directory(msgspec.Struct):
    """Entries in the shape of Stackalytics' ``default_data.json``; each replaces the one it names."""

    users: list[UserData] = []
    companies: list[CompanyData] = []
    releases: list[ReleaseData] = []
    repos: list[RepoData] = []
    project_types: list[ProjectTypeData] = []
    module_groups: list[ModuleGroupData] = []


class Saved(msgspec.Struct):
    saved: int
    unchanged: int


_CALLBACK = Param("callback", "query", Callback)
_SELECTION = (
    Param("release", "query", Text, "a release name or all; default the current release"),
    Param("project_type", "query", Text),
    Param("module", "query", Text),
    Param("company", "query", Text),
    Param("user_id", "query", Text),
    Param("start_date", "query", Unix),
    Param("end_date", "query", Unix),
)
_METRIC = Param("metric", "query", Metric, "default commits")
_UNKNOWN = "bad parameters, or an unknown release, project type, module, company or user"


def _paging(default: int, largest: int) -> tuple[Param, ...]:
    return (
        Param("page_size", "query", Annotated[int, msgspec.Meta(ge=1, le=largest)], f"default {default}"),
        Param("start_record", "query", Annotated[int, msgspec.Meta(ge=0, le=999_999_999)], "default 0"),
    )


def _read(path: str, operation_id: str, summary: str, answer: Any, params: tuple[Param, ...]) -> Operation:
    return Operation(
        "get",
        f"{API}/{path}",
        operation_id,
        summary,
        TAG,
        (Answer(200, "the answer (JSONP with callback)", answer, ("application/json", JSONP)),),
        parameters=(_CALLBACK, *params),
        description=f"400: {_UNKNOWN}",
    )


def _write(path: str, operation_id: str, summary: str, body: Any, answer: Any) -> Operation:
    return Operation(
        "post",
        f"{API}/{path}",
        operation_id,
        summary,
        TAG,
        (
            Answer(200, "what was stored", answer),
            error_answer(401, "wrong or missing Authorization"),
            error_answer(404, "no secret key is set: the admin routes do not exist"),
        ),
        body=body,
        security=(ADMIN,),
    )


_LIST = (_METRIC, *_SELECTION, Param("query", "query", Annotated[str, msgspec.Meta(max_length=200)]))

OPERATIONS = (
    _read("stats/modules", "statsModules", "Totals by module", StatsAnswer, (_METRIC, *_SELECTION)),
    _read("stats/companies", "statsCompanies", "Totals by company", StatsAnswer, (_METRIC, *_SELECTION)),
    _read("stats/engineers", "statsEngineers", "Totals by engineer", StatsAnswer, (_METRIC, *_SELECTION)),
    _read(
        "activity",
        "activity",
        "Records, newest first",
        ActivityAnswer,
        (_METRIC, *_SELECTION, *_paging(10, 1000)),
    ),
    _read(
        "contribution", "contribution", "Totals of every metric", ContributionAnswer, (_METRIC, *_SELECTION)
    ),
    _read("releases", "releases", "The releases", Releases, ()),
    _read("project_types", "projectTypes", "The project types", ProjectTypes, ()),
    _read("modules", "modules", "Modules with records", Choices, (*_LIST, *_paging(1000, 10_000))),
    _read("companies", "companies", "Companies with records", Choices, (*_LIST, *_paging(1000, 10_000))),
    _read("users", "users", "Engineers with records", Choices, (*_LIST, *_paging(1000, 10_000))),
    _write("marks", "recordMarks", "Record review marks", list[MarkData], Recorded),
    _write("emails", "recordEmails", "Record emails", list[EmailData], Recorded),
    _write("blueprints", "recordBlueprints", "Record blueprints", list[BlueprintData], Recorded),
    _write("directory", "saveDirectory", "Save users, companies, releases, repos, ...", Directory, Saved),
    Operation(
        "delete",
        f"{API}/directory/{{kind}}/{{key}}",
        "removeDirectoryEntry",
        "Remove a directory entry",
        TAG,
        (
            Answer(204, "removed"),
            error_answer(401, "wrong or missing Authorization"),
            error_answer(404, "no such entry, or no secret key is set"),
        ),
        parameters=(
            Param(
                "kind", "path", str, "users, companies, releases, repos, project_types, module_groups", True
            ),
            Param("key", "path", str, "the entry's key", required=True),
        ),
        security=(ADMIN,),
    ),
)
