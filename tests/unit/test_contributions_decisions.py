"""Ingest's contribution decisions: records into events (validation, primary keys, Stackalytics'
blueprint rule) and directory entries into the events that change the directory."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.ingest.contributions import (
    INDEPENDENT,
    ContributionsDirectory,
    affiliations,
    blueprint_events,
    commit_events,
    directory_events,
    email_event,
    fold_directory,
    mark_event,
    removal_event,
    stackalytics_date,
)
from services.ingest.rejected import Rejected
from shared.commands.contributions import (
    AffiliationData,
    BlueprintData,
    CommitData,
    CompanyData,
    EmailData,
    ImportCommits,
    MarkData,
    ReleaseData,
    RemoveDirectoryEntry,
    SaveDirectory,
    UserData,
)
from shared.events.contributions import Affiliation, BlueprintCompleted, BlueprintDrafted, record_key

AT = datetime(2024, 1, 1, tzinfo=UTC)
ids = itertools.count()


def new_id() -> str:
    return f"e{next(ids)}"


def mark(**changes: object) -> MarkData:
    fields: dict[str, object] = {
        "review_id": "12345",
        "author_name": "Rev Iewer",
        "author_email": "Rev@Example.org",
        "type": "Code-Review",
        "value": 2,
        "date": 1_400_000_000,
        "module": "nova",
    }
    return MarkData(**{**fields, **changes})  # type: ignore[arg-type]


def test_a_mark_is_keyed_by_review_reviewer_type_and_time() -> None:
    event = mark_event(mark(), event_id="e", at=AT, request_id="r")
    assert event.primary_key == "12345:rev@example.org:Code-Review:1400000000"
    assert record_key(event) == event.primary_key
    assert (event.author_email, event.mark_type, event.value, event.branch) == (
        "rev@example.org",
        "Code-Review",
        2,
        "master",
    )


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"value": 3}, "value"),
        ({"value": -3}, "value"),
        ({"author_email": "nobody"}, "author_email"),
        ({"author_email": "a b@c.org"}, "author_email"),
        ({"review_id": ""}, "review_id"),
        ({"type": "x" * 65}, "type"),
        ({"module": "nova\n"}, "module"),
        ({"date": 7_258_118_400}, "date"),
        ({"patch": 0}, "patch"),
    ],
)
def test_invalid_marks_are_refused_with_the_field(changes: dict[str, object], reason: str) -> None:
    with pytest.raises(Rejected) as exc:
        mark_event(mark(**changes), event_id="e", at=AT, request_id=None)
    assert exc.value.status == 400 and reason in exc.value.message


def blueprint(**changes: object) -> BlueprintData:
    fields: dict[str, object] = {"name": "py33", "module": "nova", "owner": "Owner", "date_created": 1000}
    return BlueprintData(**{**fields, **changes})  # type: ignore[arg-type]


def test_a_blueprint_is_drafted_by_its_drafter_else_its_owner() -> None:
    [drafted] = blueprint_events(blueprint(), new_id=new_id, at=AT, request_id=None)
    assert isinstance(drafted, BlueprintDrafted)
    assert (drafted.launchpad_id, drafted.date, record_key(drafted)) == ("owner", 1000, "bpd:nova:py33")
    [drafted] = blueprint_events(blueprint(drafter="drafty"), new_id=new_id, at=AT, request_id=None)
    assert drafted.launchpad_id == "drafty"


def test_a_blueprint_is_completed_only_when_implemented_by_an_assignee() -> None:
    done = {"assignee": "doer", "date_completed": 2000, "implementation_status": "Implemented"}
    events = blueprint_events(blueprint(**done), new_id=new_id, at=AT, request_id=None)
    assert [type(e) for e in events] == [BlueprintDrafted, BlueprintCompleted]
    assert (events[1].launchpad_id, events[1].date, record_key(events[1])) == ("doer", 2000, "bpc:nova:py33")
    for missing in ("assignee", "date_completed"):
        events = blueprint_events(blueprint(**{**done, missing: None}), new_id=new_id, at=AT, request_id=None)
        assert len(events) == 1
    partial = {**done, "implementation_status": "Started"}
    assert len(blueprint_events(blueprint(**partial), new_id=new_id, at=AT, request_id=None)) == 1


def test_emails_need_an_address_and_default_to_the_unknown_module() -> None:
    e = EmailData(message_id="<m@x>", author_name="A", author_email="A@X.org", date=5)
    event = email_event(e, event_id="e", at=AT, request_id=None)
    assert (event.module, event.author_email, record_key(event)) == ("unknown", "a@x.org", "<m@x>")
    with pytest.raises(Rejected):
        email_event(
            EmailData(message_id="", author_name="A", author_email="a@x.org", date=5),
            event_id="e",
            at=AT,
            request_id=None,
        )


def commit(**changes: object) -> CommitData:
    fields: dict[str, object] = {
        "commit_id": "a" * 40,
        "author_name": "A",
        "author_email": "A@B.org",
        "date": 1,
        "subject": "s",
        "message": "m",
        "files_changed": 1,
        "lines_added": 2,
        "lines_deleted": 3,
        "blueprint_id": ["bp-one"],
    }
    return CommitData(**{**fields, **changes})  # type: ignore[arg-type]


def test_commits_file_their_blueprints_under_the_module_and_refuse_bad_ids() -> None:
    cmd = ImportCommits(module="nova", branch="master", commits=[commit()])
    [event] = commit_events(cmd, new_id=new_id, at=AT)
    assert (event.blueprint_id, event.author_email, record_key(event)) == (
        ["nova:bp-one"],
        "a@b.org",
        "a" * 40,
    )
    with pytest.raises(Rejected) as exc:
        commit_events(
            ImportCommits(module="nova", branch="m", commits=[commit(), commit(commit_id="X")]),
            new_id=new_id,
            at=AT,
        )
    assert exc.value.message.startswith("commits[1]: commit_id")
    with pytest.raises(Rejected):
        commit_events(
            ImportCommits(module="nova", branch="m", commits=[commit(lines_added=-1)]), new_id=new_id, at=AT
        )


def test_stackalytics_dates_are_utc_midnights() -> None:
    assert stackalytics_date("2013-Oct-17", "d") == 1381968000
    assert stackalytics_date("2015-jan-01", "d") == 1420070400
    assert stackalytics_date(None, "d") == stackalytics_date("", "d") == 0
    assert stackalytics_date(1420070400, "d") == 1420070400
    for bad in ("2013-10-17", "Oct 17 2013", "2013-Foo-01", "2013-Feb-30"):
        with pytest.raises(Rejected):
            stackalytics_date(bad, "d")


def test_affiliations_are_ordered_and_end_independent_as_stackalytics_normalises_them() -> None:
    given = [AffiliationData("B", None), AffiliationData("A", "2013-Jan-01")]
    assert affiliations(given, "c") == [Affiliation("A", 1356998400), Affiliation("B", 0)]
    ended = [AffiliationData("A", "2013-Jan-01")]
    assert affiliations(ended, "c") == [Affiliation("A", 1356998400), Affiliation(INDEPENDENT, 0)]
    assert affiliations([], "c") == [Affiliation(INDEPENDENT, 0)]
    with pytest.raises(Rejected):
        affiliations([AffiliationData("A"), AffiliationData("B")], "c")


def test_a_user_is_keyed_by_launchpad_id_else_first_email() -> None:
    cmd = SaveDirectory(
        users=[
            UserData(launchpad_id="Foo", emails=["F@x.org"], user_name="Foo Bar"),
            UserData(emails=["Two@x.org", "three@x.org"]),
        ]
    )
    events = directory_events(cmd, ContributionsDirectory(), new_id=new_id, at=AT)
    assert [(e.user_id, e.user_name, e.emails) for e in events] == [  # type: ignore[union-attr]
        ("foo", "Foo Bar", ["f@x.org"]),
        ("two@x.org", "two@x.org", ["two@x.org", "three@x.org"]),
    ]
    with pytest.raises(Rejected):
        directory_events(
            SaveDirectory(users=[UserData(user_name="nobody")]),
            ContributionsDirectory(),
            new_id=new_id,
            at=AT,
        )


def test_an_identity_cannot_belong_to_two_users() -> None:
    cmd = SaveDirectory(
        users=[UserData(launchpad_id="a", emails=["x@y.org"]), UserData(launchpad_id="b", emails=["X@y.org"])]
    )
    with pytest.raises(Rejected) as exc:
        directory_events(cmd, ContributionsDirectory(), new_id=new_id, at=AT)
    assert "x@y.org" in exc.value.message
    # Moving an e-mail from one user to another in one save is fine.
    state = fold(
        ContributionsDirectory(), SaveDirectory(users=[UserData(launchpad_id="a", emails=["x@y.org"])])
    )
    moved = SaveDirectory(
        users=[UserData(launchpad_id="a", emails=[]), UserData(launchpad_id="b", emails=["x@y.org"])]
    )
    assert len(directory_events(moved, state, new_id=new_id, at=AT)) == 2


def fold(state: ContributionsDirectory, cmd: SaveDirectory) -> ContributionsDirectory:
    for i, e in enumerate(directory_events(cmd, state, new_id=new_id, at=AT), start=state.last_seq + 1):
        state = fold_directory(state, e, i)
    return state


def test_saving_the_same_directory_again_changes_nothing() -> None:
    cmd = SaveDirectory(
        users=[UserData(launchpad_id="a", emails=["a@x.org"], companies=[AffiliationData("X")])],
        companies=[CompanyData(company_name="X", domains=["X.org", ""])],
        releases=[ReleaseData(release_name="Havana", end_date="2013-Oct-17")],
    )
    state = fold(ContributionsDirectory(), cmd)
    assert state.companies["X"].domains == ["x.org"] and "havana" in state.releases
    assert directory_events(cmd, state, new_id=new_id, at=AT) == []
    changed = SaveDirectory(releases=[ReleaseData(release_name="havana", end_date="2013-Oct-18")])
    assert len(directory_events(changed, state, new_id=new_id, at=AT)) == 1


def test_release_all_is_reserved_and_a_release_needs_an_end() -> None:
    for r in (ReleaseData(release_name="All", end_date=5), ReleaseData(release_name="x", end_date="")):
        with pytest.raises(Rejected):
            directory_events(SaveDirectory(releases=[r]), ContributionsDirectory(), new_id=new_id, at=AT)


def test_removing_an_entry_that_is_not_there_is_404() -> None:
    state = fold(ContributionsDirectory(), SaveDirectory(companies=[CompanyData(company_name="X")]))
    removed = removal_event(RemoveDirectoryEntry(kind="company", key="X"), state, event_id="e", at=AT)
    assert (removed.kind, removed.key) == ("company", "X")
    assert "X" not in fold_directory(state, removed, 9).companies
    for kind, key in (("company", "Y"), ("user", "X"), ("planet", "X")):
        with pytest.raises(Rejected) as exc:
            removal_event(RemoveDirectoryEntry(kind=kind, key=key), state, event_id="e", at=AT)
        assert exc.value.status == 404


@given(
    st.lists(st.sampled_from(["a", "b", "c"]), max_size=8),
    st.lists(st.sampled_from(["a", "b", "c"]), max_size=8),
)
def test_the_last_save_of_an_entry_in_a_command_wins(first: list[str], second: list[str]) -> None:
    companies = [CompanyData(company_name=n, domains=[f"{n}{i}.org"]) for i, n in enumerate(first + second)]
    events = directory_events(
        SaveDirectory(companies=companies), ContributionsDirectory(), new_id=new_id, at=AT
    )
    expected = {c.company_name: c.domains for c in companies}
    assert {e.company_name: e.domains for e in events} == expected  # type: ignore[union-attr]
