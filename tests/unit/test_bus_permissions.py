"""The permission tables: who may publish and subscribe what, checked subject by subject, and the
intake subjects that carry a publisher's name."""

from __future__ import annotations

import pytest

from shared.bus import intake_subject, parse_intake_subject, subject_matches
from shared.bus_permissions import (
    PERMISSIONS,
    ROLES,
    Permissions,
    check_publisher_name,
    password_variable,
    permissions_of,
    render_authorization,
)

USERS = [*ROLES, "alpha", "beta"]


def publishes(user: str, subject: str) -> bool:
    return any(subject_matches(subject, pattern) for pattern in permissions_of(user).publish)


def subscribes(user: str, subject: str, queue: str | None = None) -> bool:
    for entry in permissions_of(user).subscribe:
        pattern, _, allowed_queue = entry.partition(" ")  # "subject queue" pins the queue group
        if subject_matches(subject, pattern) and allowed_queue in ("", queue):
            return True
    return False


def who_publishes(subject: str) -> set[str]:
    return {u for u in USERS if publishes(u, subject)}


def who_subscribes(subject: str, queue: str | None = None) -> set[str]:
    return {u for u in USERS if subscribes(u, subject, queue)}


def test_only_ingest_appends_events_and_answers_commands() -> None:
    assert who_publishes("usagehub.events.heartbeat.beat_recorded") == {"ingest"}
    assert who_publishes("usagehub.rejected.beats") == {"ingest"}
    assert who_subscribes("usagehub.commands.RegisterDevice", queue="ingest") == {"ingest"}
    # Outside its queue group not even ingest hears commands: a second listener would answer twice.
    assert who_subscribes("usagehub.commands.RegisterDevice") == set()
    assert [u for u in USERS if permissions_of(u).allow_responses] == ["ingest"]


def test_the_gateway_sends_commands_and_hears_notices() -> None:
    assert who_publishes("usagehub.commands.RegenerateDeviceToken") == {"gateway"}
    assert who_subscribes("usagehub.projected.heartbeat") == {"gateway"}
    assert publishes("gateway", "$JS.API.CONSUMER.INFO.USAGEHUB_EVENTS.heartbeat")
    assert not publishes("gateway", "$JS.API.CONSUMER.CREATE.USAGEHUB_EVENTS.x")


def test_the_projector_only_consumes_and_notifies() -> None:
    assert who_publishes("usagehub.projected.heartbeat") == {"projector"}
    assert who_publishes("usagehub.notify.media.used") == {"projector"}
    for api in ("DURABLE.CREATE", "INFO", "DELETE", "MSG.NEXT"):
        assert publishes("projector", f"$JS.API.CONSUMER.{api}.USAGEHUB_EVENTS.heartbeat")
    assert publishes("projector", "$JS.ACK.USAGEHUB_EVENTS.heartbeat.1.2.3.4.5")
    assert not publishes("projector", "$JS.API.CONSUMER.MSG.NEXT.USAGEHUB_INTAKE.ingest-intake")


def test_publishers_publish_intake_only_under_their_own_name() -> None:
    assert who_publishes("usagehub.ingest.beats") == {"publisher"}
    assert who_publishes("usagehub.ingest.beats.alpha") == {"alpha"}
    assert who_publishes("usagehub.ingest.link_usage.beta") == {"beta"}
    assert who_publishes("usagehub.ingest.beats.alpha.more") == set()
    for user in ("publisher", "alpha"):
        assert not any(p.startswith("$JS.") for p in permissions_of(user).publish)


def test_operators_read_rejections_and_stream_infos_only() -> None:
    assert who_subscribes("usagehub.rejected.beats") == {"operator"}
    assert publishes("operator", "$JS.API.CONSUMER.CREATE.USAGEHUB_REJECTED.tmp")
    assert publishes("operator", "$JS.API.STREAM.INFO.USAGEHUB_EVENTS")
    assert not publishes("operator", "$JS.API.CONSUMER.CREATE.USAGEHUB_EVENTS.tmp")
    assert not any(p.startswith("usagehub.") for p in permissions_of("operator").publish)


def test_each_user_reads_only_its_own_inbox() -> None:
    for user in USERS:
        assert who_subscribes(f"_INBOX_{user}.abc.def") == {user}
        assert user not in who_subscribes("_INBOX.abc.def")


def test_nobody_deletes_or_purges_a_stream_and_only_ingest_creates_them() -> None:
    for stream in ("USAGEHUB_EVENTS", "USAGEHUB_INTAKE", "USAGEHUB_REJECTED", "USAGEHUB_NOTIFY"):
        assert who_publishes(f"$JS.API.STREAM.CREATE.{stream}") == {"ingest"}
        assert who_publishes(f"$JS.API.STREAM.DELETE.{stream}") == set()
        assert who_publishes(f"$JS.API.STREAM.PURGE.{stream}") == set()
        assert who_publishes(f"$JS.API.STREAM.MSG.DELETE.{stream}") == set()


@pytest.mark.parametrize("name", ["ingest", "Alpha", "a.b", "a*", "", "9lives", "x-y"])
def test_a_publisher_name_is_one_plain_token_and_no_role(name: str) -> None:
    with pytest.raises(ValueError):
        check_publisher_name(name)


def test_the_rendered_block_has_every_user_and_reads_passwords_from_the_environment() -> None:
    text = render_authorization(["alpha"], superusers=["tests"])
    for user in [*ROLES, "alpha", "tests"]:
        assert f'user: "{user}"\n      password: ${password_variable(user)}\n' in text
    assert password_variable("ingest") == "NATS_INGEST_PASSWORD"
    assert "no_auth_user" not in text
    # The superuser has no permissions block; every other user has exactly one.
    assert text.count("permissions: {") == len(ROLES) + 1
    assert '"usagehub.commands.> ingest"' in text and "allow_responses: true" in text


def test_the_tables_cover_exactly_the_roles() -> None:
    assert set(PERMISSIONS) == set(ROLES)
    assert all(isinstance(p, Permissions) and p.publish and p.subscribe for p in PERMISSIONS.values())


@pytest.mark.parametrize(
    ("kind", "publisher", "subject"),
    [("beats", None, "usagehub.ingest.beats"), ("link_usage", "alpha", "usagehub.ingest.link_usage.alpha")],
)
def test_intake_subjects_round_trip(kind: str, publisher: str | None, subject: str) -> None:
    assert intake_subject(kind, publisher) == subject
    assert parse_intake_subject(subject) == (kind, publisher)


@pytest.mark.parametrize("subject", ["usagehub.ingest", "usagehub.ingest.a.b.c", "usagehub.events.x", "x"])
def test_other_subjects_are_not_intake(subject: str) -> None:
    with pytest.raises(ValueError):
        parse_intake_subject(subject)


@pytest.mark.parametrize(
    ("kind", "publisher"), [("a.b", None), ("beats", "x.y"), ("beats", ">"), ("*", None)]
)
def test_intake_subjects_refuse_wildcards_and_dots(kind: str, publisher: str | None) -> None:
    with pytest.raises(ValueError):
        intake_subject(kind, publisher)
