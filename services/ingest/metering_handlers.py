"""Metering command handlers: orgs, keys, principals, sessions and counted calls; listed in ``HANDLERS``.

Only new ids need an expectation (on ``org_created`` and ``principal_added``): nothing in the registry
is ever deleted, so a key, a session or a count decided against an org that exists stays right.
A revocation racing a session start is settled where sessions are read: a revoked key's sessions end.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import msgspec

from services.ingest.context import Ingest, msg_id_for
from services.ingest.metering import (
    ORG_CREATED_SUBJECT,
    PRINCIPAL_ADDED_SUBJECT,
    MeteringRegistry,
    add_principal,
    count_api_calls,
    create_org,
    issue_api_key,
    record_api_call,
    revoke_api_key,
    start_session,
)
from services.ingest.rejected import Rejected
from shared.bus import Appended, Expectation
from shared.commands import Command, Reply
from shared.commands.metering import (
    AddPrincipal,
    CountApiCalls,
    CreateOrg,
    IssueApiKey,
    RecordApiCall,
    RevokeApiKey,
    StartSession,
)
from shared.events import Event, new_event_id, now
from shared.events.metering import ApiCallsCounted, ApiKeyIssued, OrgCreated, PrincipalAdded, SessionStarted

# Intake messages carry no publisher name yet: every one is the generic publisher's.
INTAKE_SOURCE = "intake"


def new_key_id() -> str:
    return "key_" + secrets.token_hex(8)


async def _decide_and_append(
    ingest: Ingest,
    decide: Callable[[MeteringRegistry], Event],
    msg_id: str,
    *,
    maybe_news: Iterable[int] = (404,),
) -> tuple[Event, Appended]:
    """Decide against the registry and append with no expectation (nothing it checks can be undone);
    a refusal in ``maybe_news`` (an org another replica created a moment ago) catches up once first."""
    try:
        event = decide(ingest.metering.state)
    except Rejected as exc:
        if exc.status not in frozenset(maybe_news):
            raise
        await ingest.metering.catch_up(ingest.js)
        event = decide(ingest.metering.state)
    return event, await ingest.append(event, msg_id)


async def _new_id(
    ingest: Ingest,
    decide: Callable[[MeteringRegistry], Event],
    expect: Callable[[MeteringRegistry], Expectation],
    msg_id: str,
) -> tuple[Event, Appended]:
    """A new org or principal: appended only if no other one was created since the registry was read."""
    async with ingest.metering.changes:
        event, appended = await ingest.decide_and_append(
            ingest.metering, decide, expect, msg_id, maybe_news=[404]
        )
        await ingest.metering.catch_up(ingest.js)
    return await ingest.original(appended, event), appended


def org_result(event: OrgCreated) -> dict[str, Any]:
    return {
        "id": event.org_id,
        "name": event.name,
        "time_zone": event.time_zone,
        "parent": event.parent_id,
        "created_at": event.occurred_at.isoformat(),
    }


async def handle_create_org(ingest: Ingest, cmd: CreateOrg) -> Reply:
    earlier = await ingest.earlier_outcome(cmd.idempotency_key)
    if isinstance(earlier, OrgCreated):
        return Reply(status=201, result=org_result(earlier))
    event, appended = await _new_id(
        ingest,
        lambda registry: create_org(cmd, registry, event_id=new_event_id(), at=now()),
        lambda registry: Expectation(ORG_CREATED_SUBJECT, registry.last_org_seq),
        msg_id_for(cmd),
    )
    assert isinstance(event, OrgCreated)
    return Reply(status=201, seq=appended.seq, result=org_result(event))


def principal_result(event: PrincipalAdded) -> dict[str, Any]:
    created_at = event.occurred_at.isoformat()
    return {"id": event.principal_id, "super_ops": event.super_ops, "created_at": created_at}


async def handle_add_principal(ingest: Ingest, cmd: AddPrincipal) -> Reply:
    earlier = await ingest.earlier_outcome(cmd.idempotency_key)
    if isinstance(earlier, PrincipalAdded):
        return Reply(status=201, result=principal_result(earlier))
    event, appended = await _new_id(
        ingest,
        lambda registry: add_principal(cmd, registry, event_id=new_event_id(), at=now()),
        lambda registry: Expectation(PRINCIPAL_ADDED_SUBJECT, registry.last_principal_seq),
        msg_id_for(cmd),
    )
    assert isinstance(event, PrincipalAdded)
    return Reply(status=201, seq=appended.seq, result=principal_result(event))


def key_result(event: ApiKeyIssued) -> dict[str, Any]:
    return {
        "id": event.key_id,
        "org": event.org_id,
        "principal": event.principal_id,
        "name": event.name,
        "created_at": event.occurred_at.isoformat(),
    }


async def handle_issue_api_key(ingest: Ingest, cmd: IssueApiKey) -> Reply:
    """A retry (same Idempotency-Key) answers the same key id with the retry's new secret: the first
    answer, and the secret in it, may never have arrived, so that secret stops working."""
    earlier = await ingest.earlier_outcome(cmd.idempotency_key)
    key_id = earlier.key_id if isinstance(earlier, ApiKeyIssued) else new_key_id()
    # A replacement is a new append: JetStream would drop it as a duplicate of the first.
    msg_id = f"IssueApiKey:{new_event_id()}" if earlier is not None else msg_id_for(cmd)
    event, appended = await _decide_and_append(
        ingest,
        lambda registry: issue_api_key(cmd, registry, key_id=key_id, event_id=new_event_id(), at=now()),
        msg_id,
    )
    if appended.duplicate:  # retried within JetStream's window: replace the first secret, as above
        first = await ingest.event_at(appended.seq)
        assert isinstance(first, ApiKeyIssued)
        replaced = issue_api_key(
            cmd, ingest.metering.state, key_id=first.key_id, event_id=new_event_id(), at=now()
        )
        event, appended = replaced, await ingest.append(replaced, f"IssueApiKey:{new_event_id()}")
    await ingest.metering.catch_up(ingest.js)
    assert isinstance(event, ApiKeyIssued)
    return Reply(status=201, seq=appended.seq, result=key_result(event))


async def handle_revoke_api_key(ingest: Ingest, cmd: RevokeApiKey) -> Reply:
    def decide(registry: MeteringRegistry) -> Event | None:
        return revoke_api_key(cmd, registry, event_id=new_event_id(), at=now())

    try:
        decided = decide(ingest.metering.state)
    except Rejected as exc:
        if exc.status != 404:
            raise
        await ingest.metering.catch_up(ingest.js)  # issued a moment ago through another replica?
        decided = decide(ingest.metering.state)
    if decided is None:  # revoked already: nothing new to record
        return Reply(status=204)
    appended = await ingest.append(decided, msg_id_for(cmd))
    await ingest.metering.catch_up(ingest.js)
    return Reply(status=204, seq=appended.seq)


async def handle_start_session(ingest: Ingest, cmd: StartSession) -> Reply:
    event, appended = await _decide_and_append(
        ingest,
        lambda registry: start_session(cmd, registry, event_id=new_event_id(), at=now()),
        f"StartSession:{new_event_id()}",
        maybe_news=[401],
    )
    assert isinstance(event, SessionStarted)
    result = {"org": event.org_id, "key_id": event.key_id, "expires_at": event.expires_at.isoformat()}
    return Reply(status=200, seq=appended.seq, result=result)


async def handle_count_api_calls(ingest: Ingest, cmd: CountApiCalls) -> Reply:
    """A gateway's flush: its key is the flush's own, so a flush retried after a timeout counts once."""
    if isinstance(await ingest.earlier_outcome(cmd.idempotency_key), ApiCallsCounted):
        return Reply(status=200)
    _, appended = await _decide_and_append(
        ingest,
        lambda registry: count_api_calls(cmd, registry, event_id=new_event_id(), at=now()),
        msg_id_for(cmd),
    )
    return Reply(status=200, seq=appended.seq)


def intake_key(cmd: RecordApiCall, source: str) -> str:
    """The publisher's own ``id``, in the publisher's namespace: never the message's transport id."""
    return f"RecordApiCall:{source}:{cmd.id}"


async def handle_record_api_call(ingest: Ingest, cmd: RecordApiCall) -> Reply:
    cmd = msgspec.structs.replace(cmd, idempotency_key=intake_key(cmd, INTAKE_SOURCE))
    if isinstance(await ingest.earlier_outcome(cmd.idempotency_key), ApiCallsCounted):
        return Reply(status=200)
    _, appended = await _decide_and_append(
        ingest,
        lambda registry: record_api_call(
            cmd, registry, source=INTAKE_SOURCE, event_id=new_event_id(), at=now()
        ),
        msg_id_for(cmd),
    )
    return Reply(status=200, seq=appended.seq)


HANDLERS: dict[type[Command], Callable[[Ingest, Any], Awaitable[Reply]]] = {
    CreateOrg: handle_create_org,
    AddPrincipal: handle_add_principal,
    IssueApiKey: handle_issue_api_key,
    RevokeApiKey: handle_revoke_api_key,
    StartSession: handle_start_session,
    CountApiCalls: handle_count_api_calls,
    RecordApiCall: handle_record_api_call,
}
