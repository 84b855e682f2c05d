"""Contribution statistics: the pure decisions (activity records and directory entries into events)
and the directory ingest decides against, folded from directory events."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TypeVar

import msgspec

from services.ingest.rejected import Rejected
from shared.commands.contributions import (
    AffiliationData,
    BlueprintData,
    CommitData,
    CompanyData,
    EmailData,
    ImportCommits,
    MarkData,
    ModuleGroupData,
    ProjectTypeData,
    ReleaseData,
    RemoveDirectoryEntry,
    RepoData,
    SaveDirectory,
    UserData,
)
from shared.contribution_sums import MAX_DATE, MIN_DATE
from shared.events import Event
from shared.events.contributions import (
    ActivityEvent,
    Affiliation,
    BlueprintCompleted,
    BlueprintDrafted,
    CommitRecorded,
    DirectoryCompanySaved,
    DirectoryEntryRemoved,
    DirectoryEvent,
    DirectoryKind,
    DirectoryModuleGroupSaved,
    DirectoryModuleSaved,
    DirectoryProjectTypeSaved,
    DirectoryReleaseSaved,
    DirectoryUserSaved,
    EmailRecorded,
    ReviewMarkRecorded,
)

INDEPENDENT = "*independent"
MAX_RECORDS = 5000
MAX_NAME = 256
MAX_EMAIL = 254
MAX_ID = 200
MAX_SUBJECT = 1000
# The git importer cuts longer messages to this (with "..."), as Stackalytics cuts e-mail bodies.
MAX_MESSAGE = 20_000
MAX_IDS = 100
MAX_LINK = 2000
MAX_COUNT = 10_000_000_000
SHA1 = re.compile(r"^[0-9a-f]{40}$")
# One "@", something on both sides, a dot in the domain, no spaces: what a mail header would accept.
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")
RESERVED_RELEASE = "all"
MONTHS = {
    m: i
    for i, m in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1
    )
}


# --- field checks ---------------------------------------------------------------------------------


def _control(value: str, allowed: str = "") -> bool:
    return any((ord(c) < 32 or ord(c) == 127) and c not in allowed for c in value)


def text(value: str, what: str, limit: int, *, required: bool = True, allowed: str = "") -> str:
    if required and not value.strip():
        raise Rejected(400, f"{what} must be a non-empty string")
    if len(value) > limit:
        raise Rejected(400, f"{what} must be at most {limit} characters")
    if _control(value, allowed):
        raise Rejected(400, f"{what} must not contain control characters")
    return value


def email(value: str, what: str) -> str:
    value = value.strip().lower()
    if len(value) > MAX_EMAIL or not EMAIL.match(value) or _control(value):
        raise Rejected(400, f"{what} must be an e-mail address, got {value[:80]!r}")
    return value


def date(value: int, what: str) -> int:
    if not MIN_DATE <= value < MAX_DATE:
        raise Rejected(400, f"{what} must be a Unix time from 1900 to 2199, got {value}")
    return value


def count(value: int, what: str) -> int:
    if not 0 <= value <= MAX_COUNT:
        raise Rejected(400, f"{what} must be a non-negative integer")
    return value


def ids(values: Sequence[str], what: str) -> list[str]:
    if len(values) > MAX_IDS:
        raise Rejected(400, f"{what} must have at most {MAX_IDS} entries")
    out: list[str] = []
    for i, v in enumerate(values):
        v = text(v, f"{what}[{i}]", MAX_ID)
        if v not in out:
            out.append(v)
    return out


def stackalytics_date(value: str | int | None, what: str) -> int:
    """``"2013-Oct-17"`` (UTC midnight), a Unix time, or null / ``""`` for 0 ("open")."""
    if value is None or value == "":
        return 0
    if isinstance(value, int):
        return date(value, what)
    parts = value.strip().split("-")
    try:
        year, month, day = int(parts[0]), MONTHS[parts[1].lower()], int(parts[2])
        if len(parts) != 3:
            raise ValueError
        at = datetime(year, month, day, tzinfo=UTC)
    except (ValueError, KeyError, IndexError):
        raise Rejected(400, f"{what} must look like 2013-Oct-17, got {value[:40]!r}") from None
    return date(int(at.timestamp()), what)


T = TypeVar("T")
R = TypeVar("R")


def each(items: Sequence[T], what: str, decide: Callable[[T], R]) -> list[R]:
    """``decide`` every item, naming the item in a refusal: ``marks[3]: value must be ...``."""
    if len(items) > MAX_RECORDS:
        raise Rejected(400, f"at most {MAX_RECORDS} {what} per request")
    out = []
    for i, item in enumerate(items):
        try:
            out.append(decide(item))
        except Rejected as exc:
            raise Rejected(exc.status, f"{what}[{i}]: {exc.message}") from None
    return out


# --- activity records -----------------------------------------------------------------------------


def commit_event(cmd: ImportCommits, c: CommitData, *, event_id: str, at: datetime) -> CommitRecorded:
    if not SHA1.match(c.commit_id):
        raise Rejected(400, "commit_id must be 40 lower-case hex digits")
    module = text(cmd.module, "module", MAX_ID)
    return CommitRecorded(
        event_id=event_id,
        occurred_at=at,
        request_id=cmd.request_id,
        commit_id=c.commit_id,
        module=module,
        branch=text(cmd.branch, "branch", MAX_NAME),
        author_name=text(c.author_name, "author_name", MAX_NAME, required=False),
        # The importer already dropped commits without an e-mail (as Stackalytics does).
        author_email=text(c.author_email.lower(), "author_email", MAX_EMAIL),
        date=date(c.date, "date"),
        subject=text(c.subject, "subject", MAX_SUBJECT, required=False),
        message=text(c.message, "message", MAX_MESSAGE, required=False, allowed="\t\n\r"),
        files_changed=count(c.files_changed, "files_changed"),
        lines_added=count(c.lines_added, "lines_added"),
        lines_deleted=count(c.lines_deleted, "lines_deleted"),
        change_id=ids(c.change_id, "change_id"),
        bug_id=ids(c.bug_id, "bug_id"),
        blueprint_id=[f"{module}:{name}" for name in ids(c.blueprint_id, "blueprint_id")],
    )


def commit_events(cmd: ImportCommits, *, new_id: Callable[[], str], at: datetime) -> list[CommitRecorded]:
    text(cmd.module, "module", MAX_ID)  # before the commits: a bad module is one error, not many
    return each(cmd.commits, "commits", lambda c: commit_event(cmd, c, event_id=new_id(), at=at))


def mark_key(review_id: str, author_email: str, mark_type: str, when: int) -> str:
    """Stackalytics keys a mark by review, time and type; the reviewer is added so that two reviewers
    marking the same change in the same second are two marks."""
    return f"{review_id}:{author_email}:{mark_type}:{when}"


def mark_event(m: MarkData, *, event_id: str, at: datetime, request_id: str | None) -> ReviewMarkRecorded:
    if not -2 <= m.value <= 2:
        raise Rejected(400, f"value must be an integer from -2 to 2, got {m.value}")
    review_id = text(m.review_id, "review_id", MAX_ID)
    author_email = email(m.author_email, "author_email")
    mark_type = text(m.type, "type", 64)
    when = date(m.date, "date")
    if m.patch is not None and not 0 < m.patch < 1_000_000:
        raise Rejected(400, "patch must be a positive integer")
    return ReviewMarkRecorded(
        event_id=event_id,
        occurred_at=at,
        request_id=request_id,
        primary_key=mark_key(review_id, author_email, mark_type, when),
        review_id=review_id,
        author_name=text(m.author_name, "author_name", MAX_NAME, required=False),
        author_email=author_email,
        mark_type=mark_type,
        value=m.value,
        date=when,
        module=text(m.module, "module", MAX_ID),
        branch=text(m.branch, "branch", MAX_NAME),
        patch=m.patch,
    )


def email_event(e: EmailData, *, event_id: str, at: datetime, request_id: str | None) -> EmailRecorded:
    return EmailRecorded(
        event_id=event_id,
        occurred_at=at,
        request_id=request_id,
        message_id=text(e.message_id, "message_id", 1000),
        author_name=text(e.author_name, "author_name", MAX_NAME, required=False),
        author_email=email(e.author_email, "author_email"),
        date=date(e.date, "date"),
        subject=text(e.subject, "subject", MAX_SUBJECT, required=False),
        module=text(e.module, "module", MAX_ID),
        blueprint_id=ids(e.blueprint_id, "blueprint_id"),
        bug_id=ids(e.bug_id, "bug_id"),
    )


def launchpad_id(value: str, what: str) -> str:
    value = value.strip().lower()
    if not value or len(value) > 100 or any(c.isspace() for c in value) or _control(value):
        raise Rejected(400, f"{what} must be a Launchpad id (no spaces, at most 100 characters)")
    return value


def blueprint_events(
    b: BlueprintData, *, new_id: Callable[[], str], at: datetime, request_id: str | None
) -> list[BlueprintDrafted | BlueprintCompleted]:
    """A drafted blueprint (``bpd``), and a completed one (``bpc``) once it is implemented by an
    assignee: Stackalytics' rule."""
    name = text(b.name, "name", MAX_ID)
    module = text(b.module, "module", MAX_ID)
    common = {
        "blueprint_id": f"{module}:{name}",
        "name": name,
        "module": module,
        "title": text(b.title, "title", MAX_SUBJECT, required=False),
        "lifecycle_status": text(b.lifecycle_status, "lifecycle_status", 64, required=False),
        "implementation_status": text(b.implementation_status, "implementation_status", 64, required=False),
        "web_link": text(b.web_link, "web_link", MAX_LINK, required=False),
    }
    drafter = launchpad_id(b.drafter or b.owner, "drafter" if b.drafter else "owner")
    events: list[BlueprintDrafted | BlueprintCompleted] = [
        BlueprintDrafted(
            event_id=new_id(),
            occurred_at=at,
            request_id=request_id,
            launchpad_id=drafter,
            date=date(b.date_created, "date_created"),
            **common,  # type: ignore[arg-type]
        )
    ]
    if b.assignee and b.date_completed and b.implementation_status == "Implemented":
        events.append(
            BlueprintCompleted(
                event_id=new_id(),
                occurred_at=at,
                request_id=request_id,
                launchpad_id=launchpad_id(b.assignee, "assignee"),
                date=date(b.date_completed, "date_completed"),
                **common,  # type: ignore[arg-type]
            )
        )
    return events


def first_of_each_key(
    events: Iterable[ActivityEvent], key: Callable[[ActivityEvent], str]
) -> list[ActivityEvent]:
    """One event per primary key, the first: a list naming a record twice records it once."""
    seen: set[str] = set()
    out = []
    for e in events:
        k = key(e)
        if k not in seen:
            seen.add(k)
            out.append(e)
    return out


# --- the directory ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ContributionsDirectory:
    """The directory as the stream has it: every saved entry by its key."""

    users: Mapping[str, DirectoryUserSaved] = field(default_factory=dict)
    companies: Mapping[str, DirectoryCompanySaved] = field(default_factory=dict)
    releases: Mapping[str, DirectoryReleaseSaved] = field(default_factory=dict)
    modules: Mapping[str, DirectoryModuleSaved] = field(default_factory=dict)
    project_types: Mapping[str, DirectoryProjectTypeSaved] = field(default_factory=dict)
    module_groups: Mapping[str, DirectoryModuleGroupSaved] = field(default_factory=dict)
    last_seq: int = 0


_SECTION: dict[str, str] = {
    "user": "users",
    "company": "companies",
    "release": "releases",
    "module": "modules",
    "project_type": "project_types",
    "module_group": "module_groups",
}


def entry_key(event: DirectoryEvent) -> tuple[str, str]:
    """(section of ``ContributionsDirectory``, key) of a saved or removed entry."""
    match event:
        case DirectoryUserSaved(user_id=key):
            return "users", key
        case DirectoryCompanySaved(company_name=key):
            return "companies", key
        case DirectoryReleaseSaved(release_name=key):
            return "releases", key
        case DirectoryModuleSaved(module=key):
            return "modules", key
        case DirectoryProjectTypeSaved(project_type=key):
            return "project_types", key
        case DirectoryModuleGroupSaved(module_group=key):
            return "module_groups", key
        case DirectoryEntryRemoved(kind=kind, key=key):
            return _SECTION[kind], key
    raise TypeError(type(event).__name__)


DIRECTORY_TYPES = (
    DirectoryUserSaved,
    DirectoryCompanySaved,
    DirectoryReleaseSaved,
    DirectoryModuleSaved,
    DirectoryProjectTypeSaved,
    DirectoryModuleGroupSaved,
    DirectoryEntryRemoved,
)


def fold_directory(state: ContributionsDirectory, event: Event, seq: int) -> ContributionsDirectory:
    if not isinstance(event, DIRECTORY_TYPES):
        return state
    section, key = entry_key(event)
    entries = dict(getattr(state, section))
    if isinstance(event, DirectoryEntryRemoved):
        entries.pop(key, None)
    else:
        entries[key] = event
    return replace(state, **{section: entries}, last_seq=seq)


def skip_directory_message(state: ContributionsDirectory, subject: str, seq: int) -> ContributionsDirectory:
    """A message on a directory subject that is no event: only its position counts."""
    return replace(state, last_seq=seq)


_ENVELOPE = frozenset(
    {"event_id", "occurred_at", "idempotency_key", "request_fingerprint", "request_id", "version"}
)


def _same(a: Event | None, b: Event) -> bool:
    """Equal but for the envelope (event id, time, request)."""
    if a is None:
        return False
    envelope = _ENVELOPE
    da = {k: v for k, v in msgspec.structs.asdict(a).items() if k not in envelope}
    db = {k: v for k, v in msgspec.structs.asdict(b).items() if k not in envelope}
    return type(a) is type(b) and da == db


def affiliations(companies: Sequence[AffiliationData], what: str) -> list[Affiliation]:
    """Stackalytics' normalisation: sorted by end date, the open one last, and ``*independent`` from
    the last end date on when every affiliation has ended."""
    out = [
        Affiliation(
            text(c.company_name, f"{what}[{i}].company_name", MAX_ID),
            stackalytics_date(c.end_date, f"{what}[{i}].end_date"),
        )
        for i, c in enumerate(companies)
    ]
    if len([a for a in out if a.end_date == 0]) > 1:
        raise Rejected(400, f"{what}: only one affiliation may be open (end_date null)")
    out.sort(key=lambda a: (a.end_date == 0, a.end_date))
    if not out or out[-1].end_date != 0:
        out.append(Affiliation(INDEPENDENT, 0))
    return out


def user_event(u: UserData, *, event_id: str, at: datetime, request_id: str | None) -> DirectoryUserSaved:
    lp = None if u.launchpad_id is None else launchpad_id(u.launchpad_id, "launchpad_id")
    emails: list[str] = []
    for i, e in enumerate(u.emails):
        e = email(e, f"emails[{i}]")
        if e not in emails:
            emails.append(e)
    if lp is None and not emails:
        raise Rejected(400, "a user needs a launchpad_id or at least one e-mail")
    if len(emails) > MAX_IDS:
        raise Rejected(400, f"a user has at most {MAX_IDS} e-mails")
    user_id = lp or emails[0]  # Stackalytics' make_user_id
    return DirectoryUserSaved(
        event_id=event_id,
        occurred_at=at,
        request_id=request_id,
        user_id=user_id,
        user_name=text(u.user_name, "user_name", MAX_NAME, required=False) or user_id,
        launchpad_id=lp,
        emails=emails,
        companies=affiliations(u.companies, "companies"),
    )


def company_event(
    c: CompanyData, *, event_id: str, at: datetime, request_id: str | None
) -> DirectoryCompanySaved:
    domains = []
    for i, d in enumerate(c.domains):
        d = text(d.strip().lower(), f"domains[{i}]", 253, required=False)
        if d and d not in domains:
            domains.append(d)
    return DirectoryCompanySaved(
        event_id=event_id,
        occurred_at=at,
        request_id=request_id,
        company_name=text(c.company_name, "company_name", MAX_ID),
        domains=domains,
        aliases=ids(c.aliases, "aliases"),
    )


def release_event(
    r: ReleaseData, *, event_id: str, at: datetime, request_id: str | None
) -> DirectoryReleaseSaved:
    name = text(r.release_name.strip().lower(), "release_name", 100)
    if name == RESERVED_RELEASE or "," in name:
        raise Rejected(400, f"release_name {name!r} is reserved")
    end = stackalytics_date(r.end_date, "end_date")
    if end == 0:
        raise Rejected(400, "a release needs an end_date")
    return DirectoryReleaseSaved(
        event_id=event_id, occurred_at=at, request_id=request_id, release_name=name, end_date=end
    )


def module_event(r: RepoData, *, event_id: str, at: datetime, request_id: str | None) -> DirectoryModuleSaved:
    return DirectoryModuleSaved(
        event_id=event_id,
        occurred_at=at,
        request_id=request_id,
        module=text(r.module, "module", MAX_ID),
        organization=text(r.organization, "organization", MAX_ID, required=False),
        uri=text(r.uri, "uri", MAX_LINK, required=False),
        project_type=text(r.project_type, "project_type", MAX_ID, required=False),
    )


def project_type_event(
    p: ProjectTypeData, *, event_id: str, at: datetime, request_id: str | None
) -> DirectoryProjectTypeSaved:
    key = text(p.id, "id", MAX_ID)
    return DirectoryProjectTypeSaved(
        event_id=event_id,
        occurred_at=at,
        request_id=request_id,
        project_type=key,
        title=text(p.title, "title", MAX_NAME, required=False) or key,
        modules=_many(p.modules, "modules"),
        child=p.child,
    )


def _many(values: Sequence[str], what: str) -> list[str]:
    """Module lists may be long (a project type of hundreds of repositories)."""
    if len(values) > 10_000:
        raise Rejected(400, f"{what} must have at most 10000 entries")
    return list(dict.fromkeys(text(v, f"{what}[{i}]", MAX_ID) for i, v in enumerate(values)))


def module_group_event(
    g: ModuleGroupData, *, event_id: str, at: datetime, request_id: str | None
) -> DirectoryModuleGroupSaved:
    key = text(g.id or g.module_group_name, "id", MAX_ID)
    return DirectoryModuleGroupSaved(
        event_id=event_id,
        occurred_at=at,
        request_id=request_id,
        module_group=key,
        modules=_many(g.modules, "modules"),
    )


def directory_events(
    cmd: SaveDirectory, state: ContributionsDirectory, *, new_id: Callable[[], str], at: datetime
) -> list[DirectoryEvent]:
    """The entries of ``cmd`` that differ from the directory ``state``; a later entry with the same
    key replaces an earlier one. Refuses (400) an e-mail or Launchpad id that would belong to two users."""
    rid = cmd.request_id
    decided: list[DirectoryEvent] = [
        *each(cmd.users, "users", lambda u: user_event(u, event_id=new_id(), at=at, request_id=rid)),
        *each(
            cmd.companies, "companies", lambda c: company_event(c, event_id=new_id(), at=at, request_id=rid)
        ),
        *each(cmd.releases, "releases", lambda r: release_event(r, event_id=new_id(), at=at, request_id=rid)),
        *each(cmd.repos, "repos", lambda r: module_event(r, event_id=new_id(), at=at, request_id=rid)),
        *each(
            cmd.project_types,
            "project_types",
            lambda p: project_type_event(p, event_id=new_id(), at=at, request_id=rid),
        ),
        *each(
            cmd.module_groups,
            "module_groups",
            lambda g: module_group_event(g, event_id=new_id(), at=at, request_id=rid),
        ),
    ]
    last: dict[tuple[str, str], DirectoryEvent] = {}
    for e in decided:
        last[entry_key(e)] = e
    after = state
    for e in last.values():
        after = fold_directory(after, e, after.last_seq)
    _check_identities(after.users)
    return [e for k, e in last.items() if not _same(getattr(state, k[0]).get(k[1]), e)]


def _check_identities(users: Mapping[str, DirectoryUserSaved]) -> None:
    owner: dict[str, str] = {}
    for user in users.values():
        names = [*user.emails, *([f"launchpad id {user.launchpad_id}"] if user.launchpad_id else [])]
        for name in names:
            if owner.setdefault(name, user.user_id) != user.user_id:
                raise Rejected(400, f"{name} would belong to two users: {owner[name]} and {user.user_id}")


DIRECTORY_KINDS: tuple[DirectoryKind, ...] = (
    "user",
    "company",
    "release",
    "module",
    "project_type",
    "module_group",
)


def removal_event(
    cmd: RemoveDirectoryEntry, state: ContributionsDirectory, *, event_id: str, at: datetime
) -> DirectoryEntryRemoved:
    kind = next((k for k in DIRECTORY_KINDS if k == cmd.kind), None)
    if kind is None:
        raise Rejected(404, f"no directory entry kind {cmd.kind!r}; kinds: {', '.join(DIRECTORY_KINDS)}")
    if cmd.key not in getattr(state, _SECTION[kind]):
        raise Rejected(404, f"{kind} {cmd.key!r} is not in the directory")
    return DirectoryEntryRemoved(
        event_id=event_id, occurred_at=at, request_id=cmd.request_id, kind=kind, key=cmd.key
    )
