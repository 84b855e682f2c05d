"""Ingest's link decisions: the registry fold, validation, and 404 before 400."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from services.ingest.links import (
    LinkRegistry,
    create_link,
    delete_link,
    fold_link_registry,
    record_link_usage,
    update_link,
)
from services.ingest.rejected import Rejected
from shared.commands import CreateLink, DeleteLink, RecordLinkUsage, UpdateLink
from shared.events import Event, LinkCreated

NOW = datetime(2016, 3, 4, 14, 53, 25, 740000, tzinfo=UTC)


def registry_with(*events: Event) -> LinkRegistry:
    registry = LinkRegistry()
    for seq, event in enumerate(events, start=1):
        registry = fold_link_registry(registry, event, seq)
    return registry


def create(registry: LinkRegistry, name: str = "Docs", url: str = "https://example.org/") -> LinkCreated:
    return create_link(CreateLink(name=name, url=url), registry, event_id="e", at=NOW)


def test_ids_are_sequential_from_one_and_never_reused() -> None:
    registry = LinkRegistry()
    first = create(registry)
    registry = fold_link_registry(registry, first, 1)
    second = create(registry)
    registry = fold_link_registry(registry, second, 2)
    deleted = delete_link(DeleteLink(link_id=2), registry, event_id="d", at=NOW)
    registry = fold_link_registry(registry, deleted, 3)
    third = create(registry)
    assert [e.link_id for e in (first, second, third)] == [1, 2, 3]
    assert set(registry.links) == {1}
    assert (registry.last_seq, registry.last_created_seq, registry.last_deleted_seq) == (3, 2, 3)


@pytest.mark.parametrize(
    ("name", "url", "description"),
    [
        ("", "https://a.example/", ""),
        ("   ", "https://a.example/", ""),
        ("x" * 201, "https://a.example/", ""),
        ("a\nb", "https://a.example/", ""),
        ("ok", "/relative", ""),
        ("ok", "example.org", ""),
        ("ok", "ftp://example.org/", ""),
        ("ok", "javascript:alert(1)", ""),
        ("ok", "https://", ""),
        ("ok", "https://exa mple.org/", ""),
        ("ok", "https://example.org:99999/", ""),
        ("ok", "https://example.org/" + "x" * 1981, ""),
        ("ok", "https://example.org/", "d" * 2001),
    ],
)
def test_invalid_links_are_refused_with_400(name: str, url: str, description: str) -> None:
    with pytest.raises(Rejected) as exc:
        create_link(
            CreateLink(name=name, url=url, description=description), LinkRegistry(), event_id="e", at=NOW
        )
    assert exc.value.status == 400


def test_limits_are_inclusive() -> None:
    url = "https://example.org/" + "x" * 1980
    event = create_link(
        CreateLink(name="n" * 200, url=url, description="d" * 2000), LinkRegistry(), event_id="e", at=NOW
    )
    assert len(event.url) == 2000


def test_update_and_delete_of_an_unknown_link_are_404_whatever_the_arguments() -> None:
    for decide in (
        lambda r: update_link(UpdateLink(link_id=9, url="bad"), r, event_id="e", at=NOW),
        lambda r: update_link(UpdateLink(link_id=9), r, event_id="e", at=NOW),
        lambda r: delete_link(DeleteLink(link_id=9), r, event_id="e", at=NOW),
    ):
        with pytest.raises(Rejected) as exc:
            decide(LinkRegistry())
        assert exc.value.status == 404


def test_an_update_names_only_what_changes() -> None:
    registry = registry_with(create(LinkRegistry()))
    event = update_link(UpdateLink(link_id=1, description="new"), registry, event_id="u", at=NOW)
    assert (event.name, event.url, event.description) == (None, None, "new")
    registry = fold_link_registry(registry, event, 2)
    assert (registry.links[1].name, registry.links[1].description) == ("Docs", "new")
    with pytest.raises(Rejected) as exc:
        update_link(UpdateLink(link_id=1), registry, event_id="u", at=NOW)
    assert exc.value.status == 400


@pytest.mark.parametrize("user", ["", "  ", "x" * 201, "a\x00b"])
def test_usage_checks_the_link_before_the_user(user: str) -> None:
    with pytest.raises(Rejected) as missing:
        record_link_usage(RecordLinkUsage(link_id=1, user=user), LinkRegistry(), event_id="e", at=NOW)
    assert missing.value.status == 404
    registry = registry_with(create(LinkRegistry()))
    with pytest.raises(Rejected) as bad:
        record_link_usage(RecordLinkUsage(link_id=1, user=user), registry, event_id="e", at=NOW)
    assert bad.value.status == 400 and "user" in bad.value.message


def test_usage_time_is_the_ingest_clock_or_a_client_time_within_five_minutes() -> None:
    registry = registry_with(create(LinkRegistry()))

    def used_at(client: datetime | None) -> datetime:
        cmd = RecordLinkUsage(link_id=1, user="dave", used_at=client)
        return record_link_usage(cmd, registry, event_id="e", at=NOW).used_at

    assert used_at(None) == NOW
    for skew in (timedelta(minutes=-5), timedelta(0), timedelta(minutes=5)):
        assert used_at(NOW + skew) == NOW + skew
    in_paris = (NOW + timedelta(minutes=1)).astimezone(timezone(timedelta(hours=1)))
    assert used_at(in_paris) == NOW + timedelta(minutes=1) and used_at(in_paris).tzinfo == UTC
    for wrong in (NOW - timedelta(minutes=5, seconds=1), NOW + timedelta(minutes=5, microseconds=1)):
        with pytest.raises(Rejected) as exc:
            used_at(wrong)
        assert exc.value.status == 400 and "used_at" in exc.value.message
    with pytest.raises(Rejected) as naive:
        used_at(NOW.replace(tzinfo=None))
    assert naive.value.status == 400
