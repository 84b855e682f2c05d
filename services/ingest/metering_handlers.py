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
from services.ingest.idempotency import ADMIN, IdempotencyKey, idempotency_key
from services.ingest.metering import (
    ORG_CREATED_SUBJECT,
    PRINCIPAL_ADDED_SUBJECT,
    MeteringRegistry,
    add_principal,
    count_api_calls,
    create_org,
    existing_org,
    issue_api_key,
    record_api_call,
    revoke_api_key,
    start_session,
    valid_caller_id,
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

# Whose flushes CountApiCalls are: the gateways' (each flush key names its gateway instance).
GATEWAY = "gateway"
API_CALLS = "api_calls"


def new_key_id() -> str:
    return "key_" + secrets.token_hex(8)


async def _known(ingest: Ingest, check: Callable[[MeteringRegistry], object]) -> None:
    """``check`` against the registry, looking at the stream once more before refusing: another
    replica may have just created what it looks for. Done before any replay of an idempotency key."""
    try:
        check(ingest.metering.state)
    except Rejected as exc:
        if exc.status != 404:
            raise
        await ingest.metering.catch_up(ingest.js)
        check(ingest.metering.state)


async def _decide_and_append(
    ingest: Ingest,
    decide: Callable[[MeteringRegistry], Event],
    msg_id: str,
    key: IdempotencyKey | None,
    *,
    maybe_news: Iterable[int] = (404,),
) -> tuple[Event, Appended]:
    """Decide against the registry and append with no expectation (nothing it checks can be undone);
    a refusal in ``maybe_news`` (an org another replica created a moment ago) catches up once first.
    A duplicate append answers the first event (422 if the key was used for another request)."""
    try:
        event = decide(ingest.metering.state)
    except Rejected as exc:
        if exc.status not in frozenset(maybe_news):
            raise
        await ingest.metering.catch_up(ingest.js)
        event = decide(ingest.metering.state)
    appended = await ingest.append(event, msg_id, key=key)
    return await ingest.original(appended, event, key), appended


def org_result(event: OrgCreated) -> dict[str, Any]:
    return {
        "id": event.org_id,
        "name": event.name,
        "time_zone": event.time_zone,
        "parent": event.parent_id,
        "created_at": event.occurred_at.isoformat(),
    }


async def handle_create_org(ingest: Ingest, cmd: CreateOrg) -> Reply:
    if cmd.parent_id is not None:
        await _known(ingest, lambda registry: existing_org(registry, str(cmd.parent_id)))
    key = idempotency_key(cmd, ADMIN, "orgs" if cmd.parent_id is None else f"org:{cmd.parent_id}")
    earlier = await ingest.earlier_outcome(key)
    if isinstance(earlier, OrgCreated):
        return Reply(status=201, result=org_result(earlier))
    event, appended = await ingest.change_registry(
        ingest.metering,
        lambda registry: create_org(cmd, registry, event_id=new_event_id(), at=now()),
        lambda registry: Expectation(ORG_CREATED_SUBJECT, registry.last_org_seq),
        msg_id_for(cmd, key),
        key,
    )
    assert isinstance(event, OrgCreated)
    return Reply(status=201, seq=appended.seq, result=org_result(event))


def principal_result(event: PrincipalAdded) -> dict[str, Any]:
    created_at = event.occurred_at.isoformat()
    return {"id": event.principal_id, "super_ops": event.super_ops, "created_at": created_at}


async def handle_add_principal(ingest: Ingest, cmd: AddPrincipal) -> Reply:
    key = idempotency_key(cmd, ADMIN, "principals")
    earlier = await ingest.earlier_outcome(key)
    if isinstance(earlier, PrincipalAdded):
        return Reply(status=201, result=principal_result(earlier))
    event, appended = await ingest.change_registry(
        ingest.metering,
        lambda registry: add_principal(cmd, registry, event_id=new_event_id(), at=now()),
        lambda registry: Expectation(PRINCIPAL_ADDED_SUBJECT, registry.last_principal_seq),
        msg_id_for(cmd, key),
        key,
    )
    assert isinstance(event, PrincipalAdded)
    return Reply(status=201, seq=appended.seq, result=principal_result(event))


def key_result(event: ApiKeyIssued) -> dict[str, Any]:
    # The gateway adds the plaintext key it made: it never crossed the bus.
    return {
        "id": event.key_id,
        "org": event.org_id,
        "principal": event.principal_id,
        "name": event.name,
        "created_at": event.occurred_at.isoformat(),
    }


async def handle_issue_api_key(ingest: Ingest, cmd: IssueApiKey) -> Reply:
    """A retry (same Idempotency-Key) answers the same key id with the secret the retry brought: the
    first answer, and the secret in it, may never have arrived, so that secret stops working."""
    await _known(ingest, lambda registry: existing_org(registry, cmd.org_id))
    key = idempotency_key(cmd, ADMIN, f"org:{cmd.org_id}")

    def issue(key_id: str) -> Callable[[MeteringRegistry], Event]:
        return lambda registry: issue_api_key(cmd, registry, key_id=key_id, event_id=new_event_id(), at=now())

    earlier = await ingest.earlier_outcome(key)
    if isinstance(earlier, ApiKeyIssued):
        # The replacement is an append of its own: under the scoped key it would be a duplicate.
        event, appended = await _decide_and_append(ingest, issue(earlier.key_id), msg_id_for(cmd, None), None)
    else:
        event, appended = await _decide_and_append(ingest, issue(new_key_id()), msg_id_for(cmd, key), key)
        assert isinstance(event, ApiKeyIssued)
        if event.key_hash != cmd.key_hash:  # a retry inside JetStream's duplicate window
            event, appended = await _decide_and_append(
                ingest, issue(event.key_id), msg_id_for(cmd, None), None
            )
    assert isinstance(event, ApiKeyIssued)
    await ingest.metering.catch_up(ingest.js)
    return Reply(status=201, seq=appended.seq, result=key_result(event))


async def handle_revoke_api_key(ingest: Ingest, cmd: RevokeApiKey) -> Reply:
    """Revoking twice is one revocation: the second finds the key revoked and records nothing."""

    def known_key(registry: MeteringRegistry) -> None:
        if cmd.key_id not in registry.keys:
            raise Rejected(404, f"API key {cmd.key_id} does not exist")

    await _known(ingest, known_key)
    key = idempotency_key(cmd, ADMIN, f"key:{cmd.key_id}")
    decided = revoke_api_key(cmd, ingest.metering.state, event_id=new_event_id(), at=now())
    if decided is None:
        return Reply(status=204)
    appended = await ingest.append(decided, msg_id_for(cmd, key), key=key)
    await ingest.metering.catch_up(ingest.js)
    return Reply(status=204, seq=appended.seq)


async def handle_start_session(ingest: Ingest, cmd: StartSession) -> Reply:
    # Every session is new: the gateway sends no key, so each gets a message id of its own.
    event, appended = await _decide_and_append(
        ingest,
        lambda registry: start_session(cmd, registry, event_id=new_event_id(), at=now()),
        msg_id_for(cmd, None),
        None,
        maybe_news=[401],
    )
    assert isinstance(event, SessionStarted)
    result = {"org": event.org_id, "key_id": event.key_id, "expires_at": event.expires_at.isoformat()}
    return Reply(status=200, seq=appended.seq, result=result)


async def handle_count_api_calls(ingest: Ingest, cmd: CountApiCalls) -> Reply:
    """A gateway's flush: its key is the flush's own, so a flush retried after a timeout counts once."""
    key = idempotency_key(cmd, GATEWAY, API_CALLS)
    if isinstance(await ingest.earlier_outcome(key), ApiCallsCounted):
        return Reply(status=200)
    _, appended = await _decide_and_append(
        ingest,
        lambda registry: count_api_calls(cmd, registry, event_id=new_event_id(), at=now()),
        msg_id_for(cmd, key),
        key,
    )
    return Reply(status=200, seq=appended.seq)


async def handle_record_api_call(ingest: Ingest, cmd: RecordApiCall) -> Reply:
    """Calls another service published. Their own ``id`` is the key, in the publisher's namespace
    (the origin names it), not the message's transport id: republishing an id is the same calls,
    and the same id with other calls is refused (422)."""
    publisher = cmd.origin.removeprefix("intake:")
    await _known(ingest, lambda registry: existing_org(registry, cmd.org))
    valid_caller_id(cmd.id)
    key = idempotency_key(msgspec.structs.replace(cmd, idempotency_key=cmd.id), publisher, API_CALLS)
    if isinstance(await ingest.earlier_outcome(key), ApiCallsCounted):
        return Reply(status=200)
    _, appended = await _decide_and_append(
        ingest,
        lambda registry: record_api_call(cmd, registry, source=publisher, event_id=new_event_id(), at=now()),
        msg_id_for(cmd, key),
        key,
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
