"""Activity records and whom they count for (pure): the directory's identities, Stackalytics' rules for
the user and company of a record, and the row each record event becomes.

Identities are merged only through the directory: a directory user owns the e-mails and Launchpad id
it lists, so every record with one of them is theirs. Any other author is a user of their own, keyed
by the (lower-cased) e-mail or Launchpad id, whatever name they used; ``.mailmap`` is not applied.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from shared.events.contributions import (
    ActivityEvent,
    BlueprintCompleted,
    BlueprintDrafted,
    CommitRecorded,
    EmailRecorded,
    ReviewMarkRecorded,
    record_key,
)

INDEPENDENT = "*independent"
ROBOTS = "*robots"
CODE_REVIEW = "Code-Review"


@dataclass(frozen=True, slots=True)
class DirectoryUser:
    user_id: str
    user_name: str
    launchpad_id: str | None
    emails: tuple[str, ...]
    # (company, end date) by end date; the last one is open (0).
    companies: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class Identities:
    """What attributing a record needs: directory users by e-mail and Launchpad id, company domains."""

    by_email: Mapping[str, DirectoryUser]
    by_launchpad_id: Mapping[str, DirectoryUser]
    domains: Mapping[str, str]


def company_for_date(companies: Sequence[tuple[str, int]], date: int) -> str:
    """Stackalytics' ``get_company_for_date``: the first affiliation that ended after ``date``, else
    the last one."""
    for company, end_date in companies:
        if date < end_date:
            return company
    return companies[-1][0] if companies else INDEPENDENT


def email_domains(email: str | None) -> list[str]:
    """The e-mail's domain and its parents down to two labels: ``a.b.hp.com, b.hp.com, hp.com``."""
    if not email or "@" not in email:
        return []
    parts = email.rpartition("@")[2].split(".")
    return [".".join(parts[i:]) for i in range(len(parts) - 1)]


def company_by_domain(domains: Mapping[str, str], email: str | None) -> str | None:
    """Stackalytics' ``get_company_by_email``: the longest of the e-mail's domains a company claims."""
    for domain in email_domains(email):
        if domain in domains:
            return domains[domain]
    return None


def domain_owners(companies: Sequence[tuple[str, Sequence[str], int]]) -> dict[str, str]:
    """domain -> company from (company, domains, saved at); a domain two companies claim is the one
    saved last's."""
    owners: dict[str, tuple[int, str]] = {}
    for name, domains, saved_seq in companies:
        for d in domains:
            if d not in owners or owners[d][0] < saved_seq:
                owners[d] = (saved_seq, name)
    return {d: name for d, (_, name) in owners.items()}


@dataclass(frozen=True, slots=True)
class Attribution:
    user_id: str
    company_name: str


def attribute(email: str | None, launchpad_id: str | None, date: int, identities: Identities) -> Attribution:
    """Whose record it is and which company it counts for on its date.

    A directory user's company is the affiliation of that date (the directory is the authority, as
    Stackalytics does for the profiles it loads). Anyone else is their own user, counted for the company
    whose domain their e-mail has, else ``*independent``.
    """
    user = (identities.by_email.get(email) if email else None) or (
        identities.by_launchpad_id.get(launchpad_id) if launchpad_id else None
    )
    if user is not None:
        return Attribution(user.user_id, company_for_date(user.companies, date))
    user_id = email or launchpad_id
    assert user_id, "every record has an e-mail or a Launchpad id"
    return Attribution(user_id, company_by_domain(identities.domains, email) or INDEPENDENT)


def is_counted(record_type: str, company_name: str, mark_type: str | None) -> bool:
    """Stackalytics drops robots' commits, and counts Code-Review marks only."""
    if record_type == "commit":
        return company_name != ROBOTS
    if record_type == "mark":
        return mark_type == CODE_REVIEW
    return True


@dataclass(frozen=True, slots=True)
class RecordRow:
    primary_key: str
    record_type: str
    seq: int
    date: int
    module: str
    author_email: str | None
    launchpad_id: str | None
    author_name: str | None
    user_id: str
    company_name: str
    counted: bool
    loc: int
    value: int | None
    details: str

    def as_tuple(self) -> tuple[Any, ...]:
        return (
            self.primary_key,
            self.record_type,
            self.seq,
            self.date,
            self.module,
            self.author_email,
            self.launchpad_id,
            self.author_name,
            self.user_id,
            self.company_name,
            self.counted,
            self.loc,
            self.value,
            self.details,
        )


RECORD_COLUMNS = (
    "primary_key",
    "record_type",
    "seq",
    "date",
    "module",
    "author_email",
    "launchpad_id",
    "author_name",
    "user_id",
    "company_name",
    "counted",
    "loc",
    "value",
    "details",
)

# The binary COPY kind of each of RECORD_COLUMNS.
RECORD_KINDS = (
    "text",
    "text",
    "int8",
    "int8",
    "text",
    "text",
    "text",
    "text",
    "text",
    "text",
    "bool",
    "int8",
    "int2",
    "jsonb",
)

_ENVELOPE = ("event_id", "version", "occurred_at", "idempotency_key", "request_fingerprint", "request_id")
_encoder = msgspec.json.Encoder(order="sorted")


def _details(event: ActivityEvent, **extra: Any) -> str:
    """The event's own fields (not its envelope) as the JSON the activity log shows."""
    fields = {k: v for k, v in msgspec.structs.asdict(event).items() if k not in _ENVELOPE}
    return _encoder.encode({**fields, **extra}).decode()


def record_type_of(event: ActivityEvent) -> str:
    match event:
        case CommitRecorded():
            return "commit"
        case ReviewMarkRecorded():
            return "mark"
        case EmailRecorded():
            return "email"
        case BlueprintDrafted():
            return "bpd"
        case BlueprintCompleted():
            return "bpc"


def record_row(event: ActivityEvent, seq: int, identities: Identities) -> RecordRow:
    """The row of a record event, attributed with the directory as it is now."""
    record_type = record_type_of(event)
    email = None if isinstance(event, BlueprintDrafted | BlueprintCompleted) else event.author_email
    launchpad_id = event.launchpad_id if isinstance(event, BlueprintDrafted | BlueprintCompleted) else None
    author_name = None if isinstance(event, BlueprintDrafted | BlueprintCompleted) else event.author_name
    who = attribute(email, launchpad_id, event.date, identities)
    mark_type = event.mark_type if isinstance(event, ReviewMarkRecorded) else None
    loc = event.lines_added + event.lines_deleted if isinstance(event, CommitRecorded) else 0
    return RecordRow(
        primary_key=record_key(event),
        record_type=record_type,
        seq=seq,
        date=event.date,
        module=event.module,
        author_email=email,
        launchpad_id=launchpad_id,
        author_name=author_name,
        user_id=who.user_id,
        company_name=who.company_name,
        counted=is_counted(record_type, who.company_name, mark_type),
        loc=loc,
        value=event.value if isinstance(event, ReviewMarkRecorded) else None,
        details=_details(event, **({"loc": loc} if isinstance(event, CommitRecorded) else {})),
    )


def reattributed(row: RecordRow, identities: Identities) -> RecordRow:
    """The row attributed again with the directory as it is now (the same row if nothing changed)."""
    who = attribute(row.author_email, row.launchpad_id, row.date, identities)
    if (who.user_id, who.company_name) == (row.user_id, row.company_name):
        return row
    mark_type = None
    if row.record_type == "mark":
        mark_type = msgspec.json.decode(row.details).get("mark_type")
    counted = is_counted(row.record_type, who.company_name, mark_type)
    return RecordRow(
        **{
            **{c: getattr(row, c) for c in RECORD_COLUMNS},
            "user_id": who.user_id,
            "company_name": who.company_name,
            "counted": counted,
        }
    )
