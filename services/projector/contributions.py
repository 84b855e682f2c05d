"""The contributions read model: the directory, every activity record attributed with the directory
as it is now, and the sums; ``apply_contributions`` applies a batch.

A record's user and company depend on the directory, which may change after the record arrived. The
model keeps one rule: every record is attributed as the *current* directory says. A batch therefore
applies its directory changes first, attributes its new records with the result, and attributes again
the stored records whose identities (e-mail, Launchpad id, e-mail domain) the changes touched,
moving their sums from the old user and company to the new ones. The model is then a function of the
directory and the set of records alone, so a rebuild gives the same rows.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from services.projector.activity import (
    RECORD_COLUMNS,
    RECORD_KINDS,
    DirectoryUser,
    Identities,
    RecordRow,
    domain_owners,
    reattributed,
    record_row,
)
from services.projector.contribution_copy import text_copy
from services.projector.contribution_stats import Counted, apply_deltas, counted, deltas_of
from shared.contribution_sums import PROJECT_TYPE_ROLLUPS
from shared.db import Conn
from shared.events import AnyEvent
from shared.events.contributions import (
    ActivityEvent,
    BlueprintCompleted,
    BlueprintDrafted,
    DirectoryCompanySaved,
    DirectoryEntryRemoved,
    DirectoryEvent,
    DirectoryModuleGroupSaved,
    DirectoryModuleSaved,
    DirectoryProjectTypeSaved,
    DirectoryReleaseSaved,
    DirectoryUserSaved,
    record_key,
)

FILTERS = ["usagehub.events.contributions.>"]
TABLES = (
    "contribution_users",
    "contribution_user_emails",
    "contribution_companies",
    "contribution_releases",
    "contribution_modules",
    "contribution_project_types",
    "contribution_module_groups",
    "contribution_project_type_modules",
    "contribution_records",
    "contribution_month_sums",
    "contribution_day_sums",
)
_DIRECTORY = typing.get_args(DirectoryEvent)
_ACTIVITY = typing.get_args(ActivityEvent)


@dataclass
class Dirty:
    """Identities whose records may now count for someone else, and whether project types moved."""

    emails: set[str] = field(default_factory=set)
    launchpad_ids: set[str] = field(default_factory=set)
    user_ids: set[str] = field(default_factory=set)
    domains: set[str] = field(default_factory=set)
    # Users who joined or left the directory: their own row is recomputed from their records.
    directory_users: set[str] = field(default_factory=set)
    project_types: bool = False

    def any_identity(self) -> bool:
        return bool(self.emails or self.launchpad_ids or self.user_ids or self.domains)


_encoder = msgspec.json.Encoder()


async def _save_user(conn: Conn, e: DirectoryUserSaved, dirty: Dirty) -> None:
    old = await conn.fetchrow(
        "SELECT launchpad_id, emails FROM contribution_users WHERE user_id = $1 AND in_directory", e.user_id
    )
    if old is not None:
        dirty.emails.update(old["emails"])
        if old["launchpad_id"]:
            dirty.launchpad_ids.add(old["launchpad_id"])
    dirty.emails.update(e.emails)
    if e.launchpad_id:
        dirty.launchpad_ids.add(e.launchpad_id)
    dirty.user_ids.add(e.user_id)
    dirty.directory_users.add(e.user_id)
    companies = _encoder.encode(
        [{"company_name": a.company_name, "end_date": a.end_date} for a in e.companies]
    )
    await conn.execute(
        "INSERT INTO contribution_users (user_id, user_name, launchpad_id, emails, companies, in_directory)"
        " VALUES ($1, $2, $3, $4, $5, true) ON CONFLICT (user_id) DO UPDATE SET"
        " user_name = EXCLUDED.user_name, launchpad_id = EXCLUDED.launchpad_id, emails = EXCLUDED.emails,"
        " companies = EXCLUDED.companies, in_directory = true",
        e.user_id,
        e.user_name,
        e.launchpad_id,
        e.emails,
        companies.decode(),
    )
    await conn.execute("DELETE FROM contribution_user_emails WHERE user_id = $1", e.user_id)
    await conn.executemany(
        "INSERT INTO contribution_user_emails (email, user_id) VALUES ($1, $2)"
        " ON CONFLICT (email) DO UPDATE SET user_id = EXCLUDED.user_id",
        [(address, e.user_id) for address in e.emails],
    )


async def _remove_user(conn: Conn, user_id: str, dirty: Dirty) -> None:
    old = await conn.fetchrow(
        "SELECT launchpad_id, emails FROM contribution_users WHERE user_id = $1 AND in_directory", user_id
    )
    if old is None:
        return
    dirty.emails.update(old["emails"])
    if old["launchpad_id"]:
        dirty.launchpad_ids.add(old["launchpad_id"])
    dirty.user_ids.add(user_id)
    dirty.directory_users.add(user_id)
    await conn.execute("DELETE FROM contribution_user_emails WHERE user_id = $1", user_id)
    # What is left of the row (if its id is also an identity with records) is fixed with the users.
    await conn.execute(
        "UPDATE contribution_users SET in_directory = false, companies = NULL, emails = '{}',"
        " launchpad_id = NULL, user_name = user_id WHERE user_id = $1",
        user_id,
    )


async def _company_domains(conn: Conn, name: str) -> list[str]:
    old = await conn.fetchval("SELECT domains FROM contribution_companies WHERE company_name = $1", name)
    return list(old or [])


async def apply_directory(conn: Conn, events: Sequence[tuple[int, DirectoryEvent]]) -> Dirty:
    """Write the directory changes in stream order; say what they may re-attribute."""
    dirty = Dirty()
    for seq, e in events:
        match e:
            case DirectoryUserSaved():
                await _save_user(conn, e, dirty)
            case DirectoryCompanySaved(company_name=name, domains=domains, aliases=aliases):
                dirty.domains.update(await _company_domains(conn, name), domains)
                await conn.execute(
                    "INSERT INTO contribution_companies (company_name, domains, aliases, saved_seq)"
                    " VALUES ($1, $2, $3, $4) ON CONFLICT (company_name) DO UPDATE SET"
                    " domains = EXCLUDED.domains, aliases = EXCLUDED.aliases, saved_seq = EXCLUDED.saved_seq",
                    name,
                    domains,
                    aliases,
                    seq,
                )
            case DirectoryReleaseSaved(release_name=name, end_date=end_date):
                await conn.execute(
                    "INSERT INTO contribution_releases (release_name, end_date) VALUES ($1, $2)"
                    " ON CONFLICT (release_name) DO UPDATE SET end_date = EXCLUDED.end_date",
                    name,
                    end_date,
                )
            case DirectoryModuleSaved(module=module, organization=org, uri=uri, project_type=ptype):
                dirty.project_types = True
                await conn.execute(
                    "INSERT INTO contribution_modules (module, organization, uri, project_type)"
                    " VALUES ($1, $2, $3, $4) ON CONFLICT (module) DO UPDATE SET"
                    " organization = EXCLUDED.organization, uri = EXCLUDED.uri,"
                    " project_type = EXCLUDED.project_type",
                    module,
                    org,
                    uri,
                    ptype,
                )
            case DirectoryProjectTypeSaved(project_type=ptype, title=title, modules=modules, child=child):
                dirty.project_types = True
                await conn.execute(
                    "INSERT INTO contribution_project_types (project_type, title, modules, child, saved_seq)"
                    " VALUES ($1, $2, $3, $4, $5) ON CONFLICT (project_type) DO UPDATE SET"
                    " title = EXCLUDED.title, modules = EXCLUDED.modules, child = EXCLUDED.child,"
                    " saved_seq = EXCLUDED.saved_seq",
                    ptype,
                    title,
                    modules,
                    child,
                    seq,
                )
            case DirectoryModuleGroupSaved(module_group=group, modules=modules):
                dirty.project_types = True
                await conn.execute(
                    "INSERT INTO contribution_module_groups (module_group, modules) VALUES ($1, $2)"
                    " ON CONFLICT (module_group) DO UPDATE SET modules = EXCLUDED.modules",
                    group,
                    modules,
                )
            case DirectoryEntryRemoved(kind="user", key=key):
                await _remove_user(conn, key, dirty)
            case DirectoryEntryRemoved(kind="company", key=key):
                dirty.domains.update(await _company_domains(conn, key))
                await conn.execute("DELETE FROM contribution_companies WHERE company_name = $1", key)
            case DirectoryEntryRemoved(kind="release", key=key):
                await conn.execute("DELETE FROM contribution_releases WHERE release_name = $1", key)
            case DirectoryEntryRemoved(kind=kind, key=key):
                dirty.project_types = True
                table, column = {
                    "module": ("contribution_modules", "module"),
                    "project_type": ("contribution_project_types", "project_type"),
                    "module_group": ("contribution_module_groups", "module_group"),
                }[kind]
                await conn.execute(f"DELETE FROM {table} WHERE {column} = $1", key)
    return dirty


# --- project types -----------------------------------------------------------------------------------


def resolve_project_types(
    project_types: Mapping[str, Sequence[str]],
    module_groups: Mapping[str, Sequence[str]],
    modules: Mapping[str, tuple[str, str]],
) -> dict[str, set[str]]:
    """Each project type's modules. An entry of a project type names a module group (its modules), an
    organization (its modules) or else a module; a module may also name its project type itself."""
    by_organization: dict[str, set[str]] = {}
    for module, (organization, _) in modules.items():
        if organization:
            by_organization.setdefault(organization, set()).add(module)
    out: dict[str, set[str]] = {}
    for ptype, entries in project_types.items():
        members: set[str] = set()
        for entry in entries:
            found = set(module_groups.get(entry, ())) | by_organization.get(entry, set())
            members |= found or {entry}
        out[ptype] = members
    for module, (_, ptype) in modules.items():
        if ptype in out:
            out[ptype].add(module)
    return out


async def _update_project_types(conn: Conn) -> set[str]:
    """Resolve every project type again; return those whose modules changed."""
    ptypes = {
        r["project_type"]: r["modules"]
        for r in await conn.fetch("SELECT project_type, modules FROM contribution_project_types")
    }
    groups = {
        r["module_group"]: r["modules"]
        for r in await conn.fetch("SELECT module_group, modules FROM contribution_module_groups")
    }
    modules = {
        r["module"]: (r["organization"], r["project_type"])
        for r in await conn.fetch("SELECT module, organization, project_type FROM contribution_modules")
    }
    now = resolve_project_types(ptypes, groups, modules)
    before: dict[str, set[str]] = {}
    for r in await conn.fetch("SELECT project_type, module FROM contribution_project_type_modules"):
        before.setdefault(r["project_type"], set()).add(r["module"])
    changed = {p for p in before.keys() | now.keys() if before.get(p, set()) != now.get(p, set())}
    if changed:
        await conn.execute(
            "DELETE FROM contribution_project_type_modules WHERE project_type = ANY($1::text[])",
            sorted(changed),
        )
        await conn.executemany(
            "INSERT INTO contribution_project_type_modules (project_type, module) VALUES ($1, $2)",
            sorted((p, m) for p in changed for m in now.get(p, set())),
        )
    return changed


async def _project_types_of(conn: Conn, modules: set[str], leave_out: set[str]) -> dict[str, list[str]]:
    rows = await conn.fetch(
        "SELECT module, project_type FROM contribution_project_type_modules WHERE module = ANY($1::text[])"
        " ORDER BY project_type",
        sorted(modules),
    )
    out: dict[str, list[str]] = {}
    for r in rows:
        if r["project_type"] not in leave_out:
            out.setdefault(r["module"], []).append(r["project_type"])
    return out


async def _rebuild_project_types(conn: Conn, ptypes: set[str]) -> None:
    """Sum the project types whose modules changed again, from the records."""
    names = sorted(ptypes)
    for table in ("contribution_month_sums", "contribution_day_sums"):
        await conn.execute(
            f"DELETE FROM {table} WHERE rollup = ANY($1::smallint[]) AND project_type = ANY($2::text[])",
            sorted(PROJECT_TYPE_ROLLUPS),
            names,
        )
    members = await conn.fetch(
        "SELECT module, project_type FROM contribution_project_type_modules"
        " WHERE project_type = ANY($1::text[])",
        names,
    )
    of: dict[str, list[str]] = {}
    for r in members:
        of.setdefault(r["module"], []).append(r["project_type"])
    if not of:
        return
    rows = await conn.fetch(
        f"SELECT {', '.join(RECORD_COLUMNS)} FROM contribution_records"
        " WHERE counted AND module = ANY($1::text[])",
        sorted(of),
    )
    changes = [(1, c) for c in (counted(_row(r)) for r in rows) if c is not None]
    await apply_deltas(conn, deltas_of(changes, of, PROJECT_TYPE_ROLLUPS))


# --- records -------------------------------------------------------------------------------------------


def _row(r: Any) -> RecordRow:
    return RecordRow(**{c: r[c] for c in RECORD_COLUMNS})


async def identities(conn: Conn, emails: set[str], launchpad_ids: set[str]) -> Identities:
    """The directory users owning any of these identities, and every company's domains."""
    rows = await conn.fetch(
        "SELECT user_id, user_name, launchpad_id, emails, companies FROM contribution_users"
        " WHERE in_directory AND (user_id IN (SELECT user_id FROM contribution_user_emails"
        " WHERE email = ANY($1::text[])) OR launchpad_id = ANY($2::text[]))",
        sorted(emails),
        sorted(launchpad_ids),
    )
    by_email: dict[str, DirectoryUser] = {}
    by_launchpad_id: dict[str, DirectoryUser] = {}
    for r in rows:
        companies = tuple(
            (c["company_name"], int(c["end_date"])) for c in msgspec.json.decode(r["companies"])
        )
        user = DirectoryUser(r["user_id"], r["user_name"], r["launchpad_id"], tuple(r["emails"]), companies)
        for address in user.emails:
            by_email[address] = user
        if user.launchpad_id:
            by_launchpad_id[user.launchpad_id] = user
    saved = await conn.fetch("SELECT company_name, domains, saved_seq FROM contribution_companies")
    domains = domain_owners([(c["company_name"], c["domains"], c["saved_seq"]) for c in saved])
    return Identities(by_email, by_launchpad_id, domains)


async def _candidates(conn: Conn, dirty: Dirty) -> list[RecordRow]:
    """Stored records whose attribution the directory changes may have changed."""
    if not dirty.any_identity():
        return []
    # An e-mail is in a domain when it ends in "@domain" or ".domain": a prefix of the reversed
    # address, found as a range of the index on it.
    prefixes = sorted(f"{sep}{d}"[::-1] for d in dirty.domains for sep in ("@", "."))
    rows = await conn.fetch(
        f"SELECT {', '.join(RECORD_COLUMNS)} FROM contribution_records"
        " WHERE author_email = ANY($1::text[]) OR launchpad_id = ANY($2::text[]) OR user_id = ANY($3::text[])"
        " OR primary_key IN (SELECT r.primary_key FROM unnest($4::text[], $5::text[]) AS p(lo, hi)"
        " JOIN contribution_records r"
        " ON reverse(r.author_email) ~>=~ p.lo AND reverse(r.author_email) ~<~ p.hi)",
        sorted(dirty.emails),
        sorted(dirty.launchpad_ids),
        sorted(dirty.user_ids),
        prefixes,
        [p[:-1] + chr(ord(p[-1]) + 1) for p in prefixes],
    )
    return [_row(r) for r in rows]


@dataclass
class UserChanges:
    """Per user: records gained and lost, and the first (stream order) of those gained."""

    count: dict[str, int] = field(default_factory=dict)
    first: dict[str, RecordRow] = field(default_factory=dict)
    lost: dict[str, set[int]] = field(default_factory=dict)

    def gain(self, row: RecordRow) -> None:
        self.count[row.user_id] = self.count.get(row.user_id, 0) + 1
        if row.user_id not in self.first or row.seq < self.first[row.user_id].seq:
            self.first[row.user_id] = row

    def lose(self, row: RecordRow) -> None:
        self.count[row.user_id] = self.count.get(row.user_id, 0) - 1
        self.lost.setdefault(row.user_id, set()).add(row.seq)


def _auto_name(row: RecordRow) -> str:
    return row.author_name or row.user_id


async def _update_users(conn: Conn, changes: UserChanges, recount: set[str]) -> None:
    """Keep every user's record count and first record; an unmapped author's row lives while they have
    records, named as their first record names them."""
    ids = sorted(changes.count.keys() | recount)
    if not ids:
        return
    stored = {
        r["user_id"]: r
        for r in await conn.fetch(
            "SELECT user_id, in_directory, record_count, first_seq FROM contribution_users"
            " WHERE user_id = ANY($1::text[])",
            ids,
        )
    }
    exact: set[str] = set(recount)
    for user_id, seqs in changes.lost.items():
        first = stored[user_id]["first_seq"] if user_id in stored else None
        if first in seqs:
            exact.add(user_id)
    found: dict[str, tuple[int, RecordRow | None]] = {}
    if exact:
        counts = {
            r["user_id"]: int(r["n"])
            for r in await conn.fetch(
                "SELECT user_id, count(*) AS n FROM contribution_records WHERE user_id = ANY($1::text[])"
                " GROUP BY user_id",
                sorted(exact),
            )
        }
        firsts = {
            r["user_id"]: _row(r)
            for r in await conn.fetch(
                f"SELECT DISTINCT ON (user_id) {', '.join(RECORD_COLUMNS)} FROM contribution_records"
                " WHERE user_id = ANY($1::text[]) ORDER BY user_id, seq",
                sorted(exact),
            )
        }
        found = {u: (counts.get(u, 0), firsts.get(u)) for u in exact}
    upserts, deletes = [], []
    for user_id in ids:
        row = stored.get(user_id)
        if user_id in found:
            total, first = found[user_id]
        else:
            total = (int(row["record_count"]) if row else 0) + changes.count.get(user_id, 0)
            gained = changes.first.get(user_id)
            first = gained
            if (
                row is not None
                and row["first_seq"] is not None
                and (gained is None or row["first_seq"] < gained.seq)
            ):
                first = None  # the stored first stands
        in_directory = bool(row and row["in_directory"])
        if total <= 0 and not in_directory:
            if row is not None:
                deletes.append(user_id)
            continue
        first_seq = first.seq if first is not None else (row["first_seq"] if row else None)
        name = None if in_directory or first is None else _auto_name(first)
        upserts.append((user_id, name or user_id, total, first_seq, name is not None))
    if deletes:
        await conn.execute("DELETE FROM contribution_users WHERE user_id = ANY($1::text[])", deletes)
    if upserts:
        await conn.executemany(
            "INSERT INTO contribution_users (user_id, user_name, in_directory, record_count, first_seq)"
            " VALUES ($1, $2, false, $3, $4) ON CONFLICT (user_id) DO UPDATE SET"
            " record_count = EXCLUDED.record_count, first_seq = EXCLUDED.first_seq,"
            " user_name = CASE WHEN $5 THEN EXCLUDED.user_name ELSE contribution_users.user_name END",
            upserts,
        )


async def apply_contributions(conn: Conn, events: list[tuple[int, AnyEvent]]) -> None:
    directory: list[tuple[int, DirectoryEvent]] = []
    activity: list[tuple[int, ActivityEvent]] = []
    for seq, e in events:
        if isinstance(e, _DIRECTORY):
            directory.append((seq, e))
        elif isinstance(e, _ACTIVITY):
            activity.append((seq, e))
    dirty = await apply_directory(conn, directory) if directory else Dirty()

    # New records: the first event of each key not stored yet (JetStream or a replay may repeat one).
    known = set()
    if activity:
        rows = await conn.fetch(
            "SELECT primary_key FROM contribution_records WHERE primary_key = ANY($1::text[])",
            [record_key(e) for _, e in activity],
        )
        known = {r["primary_key"] for r in rows}
    fresh: list[tuple[int, ActivityEvent]] = []
    for seq, e in activity:
        key = record_key(e)
        if key not in known:
            known.add(key)
            fresh.append((seq, e))

    candidates = await _candidates(conn, dirty)
    emails = {e.author_email for _, e in fresh if not isinstance(e, BlueprintDrafted | BlueprintCompleted)}
    launchpad_ids = {e.launchpad_id for _, e in fresh if isinstance(e, BlueprintDrafted | BlueprintCompleted)}
    emails |= {r.author_email for r in candidates if r.author_email}
    launchpad_ids |= {r.launchpad_id for r in candidates if r.launchpad_id}
    who = await identities(conn, emails, launchpad_ids) if fresh or candidates else None

    users = UserChanges()
    changes: list[tuple[int, Counted]] = []
    if fresh:
        assert who is not None
        new_rows = [record_row(e, seq, who) for seq, e in fresh]
        await conn.copy_to_table(
            "contribution_records",
            source=text_copy((r.as_tuple() for r in new_rows), RECORD_KINDS),
            columns=list(RECORD_COLUMNS),
            format="text",
        )
        for row in new_rows:
            users.gain(row)
            c = counted(row)
            if c is not None:
                changes.append((1, c))
    moved = []
    for old in candidates:
        assert who is not None
        new = reattributed(old, who)
        if new is old:
            continue
        moved.append(new)
        users.lose(old)
        users.gain(new)
        for sign, row in ((-1, old), (1, new)):
            c = counted(row)
            if c is not None:
                changes.append((sign, c))
    if moved:
        await conn.executemany(
            "UPDATE contribution_records SET user_id = $2, company_name = $3, counted = $4"
            " WHERE primary_key = $1",
            [(r.primary_key, r.user_id, r.company_name, r.counted) for r in moved],
        )
    await _update_users(conn, users, dirty.directory_users)

    rebuilt = await _update_project_types(conn) if dirty.project_types else set()
    if changes:
        of = await _project_types_of(conn, {c.module for _, c in changes}, rebuilt)
        await apply_deltas(conn, deltas_of(changes, of))
    if rebuilt:
        await _rebuild_project_types(conn, rebuilt)
