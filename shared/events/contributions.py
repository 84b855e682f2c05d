"""Contribution statistics events: activity records (commits, review marks, emails, blueprints) and
the directory (users, companies, releases, modules, project types) that attributes them.

Times are Unix seconds (``date``, ``end_date``) as in the Stackalytics API; ``occurred_at`` stays the
time ingest accepted the record.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from shared.events.envelope import Event


class CommitRecorded(Event, tag="CommitRecorded", frozen=True):
    """One non-merge commit read from a git repository, with Stackalytics' definitions."""

    commit_id: str
    module: str
    branch: str
    author_name: str
    # Lower-cased, as Stackalytics keeps it; identities are matched by it.
    author_email: str
    date: int
    subject: str
    message: str
    files_changed: int
    lines_added: int
    lines_deleted: int
    change_id: list[str] = []
    bug_id: list[str] = []
    # "module:name", as Stackalytics files a blueprint mentioned by a commit.
    blueprint_id: list[str] = []


class ReviewMarkRecorded(Event, tag="ReviewMarkRecorded", frozen=True):
    """A reviewer's mark on a change (only ``Code-Review`` marks count in the statistics)."""

    primary_key: str
    review_id: str
    author_name: str
    author_email: str
    # Gerrit's label ("Code-Review", "Workflow"...); "type" is the event's own tag field.
    mark_type: str
    value: int
    date: int
    module: str
    branch: str = "master"
    patch: int | None = None


class EmailRecorded(Event, tag="EmailRecorded", frozen=True):
    message_id: str
    author_name: str
    author_email: str
    date: int
    subject: str
    module: str
    blueprint_id: list[str] = []
    bug_id: list[str] = []


class BlueprintDrafted(Event, tag="BlueprintDrafted", frozen=True):
    """A blueprint drafted (``bpd``) by ``launchpad_id``, its drafter or else its owner."""

    blueprint_id: str  # "module:name"
    name: str
    module: str
    title: str
    launchpad_id: str
    date: int
    lifecycle_status: str = ""
    implementation_status: str = ""
    web_link: str = ""


class BlueprintCompleted(Event, tag="BlueprintCompleted", frozen=True):
    """A blueprint implemented (``bpc``) by its assignee ``launchpad_id``."""

    blueprint_id: str
    name: str
    module: str
    title: str
    launchpad_id: str
    date: int
    lifecycle_status: str = ""
    implementation_status: str = ""
    web_link: str = ""


class Affiliation(msgspec.Struct, frozen=True):
    """A company a user worked for until ``end_date`` (Unix time, exclusive; 0 = still)."""

    company_name: str
    end_date: int = 0


class DirectoryUserSaved(Event, tag="DirectoryUserSaved", frozen=True):
    """A user of the directory, replacing any earlier version of the same ``user_id``."""

    user_id: str
    user_name: str
    launchpad_id: str | None
    emails: list[str]
    # Ordered by end_date, the open one (0) last.
    companies: list[Affiliation]


class DirectoryCompanySaved(Event, tag="DirectoryCompanySaved", frozen=True):
    company_name: str
    domains: list[str] = []
    aliases: list[str] = []


class DirectoryReleaseSaved(Event, tag="DirectoryReleaseSaved", frozen=True):
    release_name: str  # lower-cased
    end_date: int


class DirectoryModuleSaved(Event, tag="DirectoryModuleSaved", frozen=True):
    module: str
    organization: str = ""
    uri: str = ""
    # A project type the module belongs to directly (Stackalytics 0.3 kept it on the repository).
    project_type: str = ""


class DirectoryProjectTypeSaved(Event, tag="DirectoryProjectTypeSaved", frozen=True):
    project_type: str
    title: str
    # Module names, module group names or organizations.
    modules: list[str]
    child: bool = False


class DirectoryModuleGroupSaved(Event, tag="DirectoryModuleGroupSaved", frozen=True):
    module_group: str
    modules: list[str]


DirectoryKind = Literal["user", "company", "release", "module", "project_type", "module_group"]


class DirectoryEntryRemoved(Event, tag="DirectoryEntryRemoved", frozen=True):
    kind: DirectoryKind
    key: str


ActivityEvent = CommitRecorded | ReviewMarkRecorded | EmailRecorded | BlueprintDrafted | BlueprintCompleted
DirectoryEvent = (
    DirectoryUserSaved
    | DirectoryCompanySaved
    | DirectoryReleaseSaved
    | DirectoryModuleSaved
    | DirectoryProjectTypeSaved
    | DirectoryModuleGroupSaved
    | DirectoryEntryRemoved
)
ContributionsEvent = ActivityEvent | DirectoryEvent

_PREFIX = "usagehub.events.contributions."
SUBJECTS: dict[type[Event], str] = {
    CommitRecorded: _PREFIX + "commit",
    ReviewMarkRecorded: _PREFIX + "mark",
    EmailRecorded: _PREFIX + "email",
    BlueprintDrafted: _PREFIX + "blueprint_drafted",
    BlueprintCompleted: _PREFIX + "blueprint_completed",
    DirectoryUserSaved: _PREFIX + "user_saved",
    DirectoryCompanySaved: _PREFIX + "company_saved",
    DirectoryReleaseSaved: _PREFIX + "release_saved",
    DirectoryModuleSaved: _PREFIX + "module_saved",
    DirectoryProjectTypeSaved: _PREFIX + "project_type_saved",
    DirectoryModuleGroupSaved: _PREFIX + "module_group_saved",
    DirectoryEntryRemoved: _PREFIX + "entry_removed",
}
DIRECTORY_SUBJECTS = [
    s
    for t, s in SUBJECTS.items()
    if t
    in (
        DirectoryUserSaved,
        DirectoryCompanySaved,
        DirectoryReleaseSaved,
        DirectoryModuleSaved,
        DirectoryProjectTypeSaved,
        DirectoryModuleGroupSaved,
        DirectoryEntryRemoved,
    )
]


def record_key(event: ActivityEvent) -> str:
    """The record's ``primary_key`` in the API; one record per key, the first one recorded wins."""
    match event:
        case CommitRecorded(commit_id=commit_id):
            return commit_id
        case ReviewMarkRecorded(primary_key=key):
            return key
        case EmailRecorded(message_id=message_id):
            return message_id
        case BlueprintDrafted(blueprint_id=blueprint_id):
            return "bpd:" + blueprint_id
        case BlueprintCompleted(blueprint_id=blueprint_id):
            return "bpc:" + blueprint_id
