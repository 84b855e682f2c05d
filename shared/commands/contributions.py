"""Contribution statistics commands: importing commits, recording marks, emails and blueprints (a
list from the admin routes, one record from the intake), and saving or removing directory entries.

The record and directory shapes are those of Stackalytics (``default_data.json`` for the directory);
fields it has and usagehub does not use are ignored.
"""

from __future__ import annotations

import msgspec

from shared.commands.envelope import Command


class CommitData(msgspec.Struct, frozen=True, kw_only=True):
    """One commit as the git importer read it (parsed and sanitised on the importing side)."""

    commit_id: str
    author_name: str
    author_email: str
    date: int
    subject: str
    message: str
    files_changed: int
    lines_added: int
    lines_deleted: int
    change_id: list[str] = []
    bug_id: list[str] = []
    # Bare blueprint names; ingest files them under the module as Stackalytics does.
    blueprint_id: list[str] = []


class MarkData(msgspec.Struct, frozen=True, kw_only=True):
    review_id: str
    author_name: str
    author_email: str
    type: str
    value: int
    date: int
    module: str
    branch: str = "master"
    patch: int | None = None


class EmailData(msgspec.Struct, frozen=True, kw_only=True):
    message_id: str
    author_name: str
    author_email: str
    date: int
    subject: str = ""
    module: str = "unknown"
    blueprint_id: list[str] = []
    bug_id: list[str] = []


class BlueprintData(msgspec.Struct, frozen=True, kw_only=True):
    """A Launchpad blueprint: drafted by ``drafter`` (else ``owner``), completed by ``assignee``."""

    name: str
    module: str
    owner: str
    date_created: int
    title: str = ""
    drafter: str | None = None
    assignee: str | None = None
    date_completed: int | None = None
    lifecycle_status: str = ""
    implementation_status: str = ""
    web_link: str = ""


class ImportCommits(Command, tag="ImportCommits", frozen=True):
    module: str
    branch: str
    commits: list[CommitData]


class RecordMarks(Command, tag="RecordMarks", frozen=True):
    marks: list[MarkData]


class RecordEmails(Command, tag="RecordEmails", frozen=True):
    emails: list[EmailData]


class RecordBlueprints(Command, tag="RecordBlueprints", frozen=True):
    blueprints: list[BlueprintData]


# One record per intake message: the payload is the record itself, so these repeat its fields
# (a msgspec struct cannot inherit fields from two bases).
class RecordMark(Command, tag="RecordMark", frozen=True):
    review_id: str
    author_name: str
    author_email: str
    type: str
    value: int
    date: int
    module: str
    branch: str = "master"
    patch: int | None = None


class RecordEmail(Command, tag="RecordEmail", frozen=True):
    message_id: str
    author_name: str
    author_email: str
    date: int
    subject: str = ""
    module: str = "unknown"
    blueprint_id: list[str] = []
    bug_id: list[str] = []


class RecordBlueprint(Command, tag="RecordBlueprint", frozen=True):
    name: str
    module: str
    owner: str
    date_created: int
    title: str = ""
    drafter: str | None = None
    assignee: str | None = None
    date_completed: int | None = None
    lifecycle_status: str = ""
    implementation_status: str = ""
    web_link: str = ""


class AffiliationData(msgspec.Struct, frozen=True):
    company_name: str
    # "2013-Oct-17" (UTC midnight, Stackalytics' format), Unix time, or null/"" for "until now".
    end_date: str | int | None = None


class UserData(msgspec.Struct, frozen=True, kw_only=True):
    launchpad_id: str | None = None
    user_name: str = ""
    emails: list[str] = []
    companies: list[AffiliationData] = []


class CompanyData(msgspec.Struct, frozen=True, kw_only=True):
    company_name: str
    domains: list[str] = []
    aliases: list[str] = []


class ReleaseData(msgspec.Struct, frozen=True, kw_only=True):
    release_name: str
    end_date: str | int


class RepoData(msgspec.Struct, frozen=True, kw_only=True):
    module: str
    organization: str = ""
    uri: str = ""
    project_type: str = ""


class ProjectTypeData(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    title: str = ""
    modules: list[str] = []
    child: bool = False


class ModuleGroupData(msgspec.Struct, frozen=True, kw_only=True):
    module_group_name: str
    id: str | None = None
    modules: list[str] = []


class SaveDirectory(Command, tag="SaveDirectory", frozen=True):
    """Entries in the shape of Stackalytics' ``default_data.json``; each replaces the one it names."""

    users: list[UserData] = []
    companies: list[CompanyData] = []
    releases: list[ReleaseData] = []
    repos: list[RepoData] = []
    project_types: list[ProjectTypeData] = []
    module_groups: list[ModuleGroupData] = []


class RemoveDirectoryEntry(Command, tag="RemoveDirectoryEntry", frozen=True):
    kind: str
    key: str


ContributionsCommand = (
    ImportCommits
    | RecordMarks
    | RecordEmails
    | RecordBlueprints
    | RecordMark
    | RecordEmail
    | RecordBlueprint
    | SaveDirectory
    | RemoveDirectoryEntry
)


_SECTIONS = ("users", "companies", "releases", "repos", "project_types", "module_groups")


def directory_entries(cmd: SaveDirectory) -> int:
    """How many entries (users, companies, releases …) ``cmd`` holds: what an import counts."""
    return sum(len(getattr(cmd, section)) for section in _SECTIONS)


def split_directory(cmd: SaveDirectory, max_bytes: int) -> list[SaveDirectory]:
    """``cmd`` cut into commands of at most about ``max_bytes`` encoded, entries kept in order (a
    directory file can be larger than one NATS message)."""
    encoder = msgspec.json.Encoder()
    parts: list[SaveDirectory] = []
    current: dict[str, list[msgspec.Struct]] = {s: [] for s in _SECTIONS}
    size = 0
    for section in _SECTIONS:
        for entry in getattr(cmd, section):
            entry_size = len(encoder.encode(entry)) + 1
            if size and size + entry_size > max_bytes:
                parts.append(msgspec.structs.replace(cmd, **current))
                current = {s: [] for s in _SECTIONS}
                size = 0
            current[section].append(entry)
            size += entry_size
    if size or not parts:
        parts.append(msgspec.structs.replace(cmd, **current))
    return parts
