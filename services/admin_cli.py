"""The admin subcommands of every API (devices, links, orgs, keys, principals, media): writes are commands
sent to ingest over NATS, as the gateway sends them; reads come from the read models in Postgres.
Each prints JSON on stdout; a refusal is one line on stderr and exit status 1."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from services.local.running import require_running
from shared.settings import Settings

if TYPE_CHECKING:
    from shared.commands import Reply
    from shared.db import Conn

# What one list prints at most: a page, with ``next_offset`` to the rest (as the gateway pages).
DEFAULT_PAGE = 100
MAX_PAGE = 1000

ADMIN_COMMANDS = ("devices", "links", "orgs", "keys", "principals", "media")
# A write waits this long for NATS (whose client otherwise waits for an unreachable server forever).
CONNECT_WAIT = 10.0
MEDIA_KINDS = ("digital", "print", "syndication", "front", "download")


class AdminRefused(Exception):
    """Ingest refused or did not answer, or what was asked for does not exist; the message says so."""


def _page_size(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= value <= MAX_PAGE:
        raise argparse.ArgumentTypeError(f"must be between 1 and {MAX_PAGE}")
    return value


def _offset(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


def _paged(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--limit", type=_page_size, default=DEFAULT_PAGE, help=f"at most this many (1-{MAX_PAGE})"
    )
    parser.add_argument("--offset", type=_offset, default=0, help="skip this many first (see next_offset)")


def _action(
    group: Any, name: str, help_text: str, example: str, aliases: tuple[str, ...] = ()
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = group.add_parser(
        name,
        help=help_text,
        description=f"{help_text[0].upper()}{help_text[1:]}. Example: {example}",
        aliases=list(aliases),
    )
    return parser


def add_admin_parsers(sub: Any) -> None:
    """The admin subcommands on ``sub`` (the top-level subparsers)."""
    devices = sub.add_parser(
        "devices",
        help="heartbeat: register devices, renew their tokens, list them",
        description="The heartbeat API's devices. A new token is shown once: only its hash is kept."
        " Example: TOKEN=$(usagehub devices add Laptop | jq -r .token)",
    ).add_subparsers(dest="action", required=True)
    _action(
        devices,
        "add",
        "register a device and print it with its token (shown once)",
        "usagehub devices add Laptop",
    ).add_argument("name")
    _action(
        devices,
        "token",
        "give a device a new token and print it (the old token stops working)",
        "usagehub devices token 3",
    ).add_argument("device_id", type=int)
    _paged(
        _action(
            devices,
            "list",
            "list the devices with their beats, oldest first",
            "usagehub devices list | jq '.items[].name'",
        )
    )

    links = sub.add_parser(
        "links",
        help="Lighthouse: create, list, show, update and delete links",
        description="The Lighthouse link registry. Example: usagehub links add Docs https://example.org/docs",
    ).add_subparsers(dest="action", required=True)
    add = _action(
        links, "add", "create a link and print it", "usagehub links add Docs https://example.org/docs"
    )
    add.add_argument("name")
    add.add_argument("url")
    add.add_argument("--description", default="")
    _paged(_action(links, "list", "list the links, by id", "usagehub links list --limit 20"))
    _action(links, "show", "print one link", "usagehub links show 1").add_argument("link_id", type=int)
    update = _action(
        links,
        "update",
        "change a link's name, URL or description (what is not given stays) and print it",
        "usagehub links update 1 --url https://example.org/new",
    )
    update.add_argument("link_id", type=int)
    update.add_argument("--name", default=None)
    update.add_argument("--url", default=None)
    update.add_argument("--description", default=None)
    _action(links, "delete", "delete a link and its usage", "usagehub links delete 1").add_argument(
        "link_id", type=int
    )

    orgs = sub.add_parser(
        "orgs",
        help="metering: create, list and show organisations",
        description="The API metering registry's organisations, each with its time zone."
        " Example: usagehub orgs create acme --name Acme --time-zone Europe/Paris",
    ).add_subparsers(dest="action", required=True)
    create = _action(
        orgs,
        "create",
        "create an org (a sub-org with --parent) and print it",
        "usagehub orgs create acme-fr --name 'Acme France' --time-zone Europe/Paris --parent acme",
        aliases=("add",),
    )
    create.add_argument("id")
    create.add_argument("--name", required=True)
    create.add_argument("--time-zone", required=True, help="IANA zone, e.g. Europe/Paris")
    create.add_argument("--parent", default=None, help="the org this one belongs to")
    sub_add = _action(
        orgs,
        "sub-add",
        "create a sub-org of PARENT (as create --parent)",
        "usagehub orgs sub-add acme acme-fr --name 'Acme France' --time-zone Europe/Paris",
    )
    sub_add.add_argument("parent")
    sub_add.add_argument("id")
    sub_add.add_argument("--name", required=True)
    sub_add.add_argument("--time-zone", required=True, help="IANA zone, e.g. Europe/Paris")
    _paged(_action(orgs, "list", "list the orgs, by id", "usagehub orgs list | jq '.items[].id'"))
    _action(orgs, "show", "print one org", "usagehub orgs show acme").add_argument("id")

    keys = sub.add_parser(
        "keys",
        help="metering: issue, list and revoke org API keys",
        description="An org's API keys. A new key is shown once: only its hash is kept."
        " Example: KEY=$(usagehub keys add acme | jq -r .key)",
    ).add_subparsers(dest="action", required=True)
    issue = _action(keys, "add", "issue a key of ORG and print it (shown once)", "usagehub keys add acme")
    issue.add_argument("org")
    issue.add_argument("--principal", default=None, help="the principal the key speaks for")
    issue.add_argument("--name", default="")
    listed = _action(
        keys, "list", "list an org's keys (never their secrets), revoked ones too", "usagehub keys list acme"
    )
    listed.add_argument("org")
    _paged(listed)
    _action(
        keys, "revoke", "revoke a key: it stops working at once", "usagehub keys revoke KEY_ID"
    ).add_argument("key_id")

    principals = sub.add_parser(
        "principals",
        help="metering: principals and their roles",
        description="The principals keys speak for. Example: usagehub principals add ops --super-ops",
    ).add_subparsers(dest="action", required=True)
    p_add = _action(
        principals, "add", "add a principal and print it", "usagehub principals add ops --super-ops"
    )
    p_add.add_argument("id")
    p_add.add_argument("--super-ops", action="store_true", help="may ask for every org's history (showAll)")

    media = sub.add_parser(
        "media",
        help="media usage: record usages from a JSON file, delete them",
        description="The media-usage API's writes. A file holds what the route's body would"
        " (POST /usages/digital, /usages/print, /usages/syndication, /usages/front, /usages/download)."
        " Example: usagehub media record front front.json",
    ).add_subparsers(dest="action", required=True)
    record = _action(
        media,
        "record",
        "record the usages a JSON file describes, as the route of that kind would",
        """usagehub media record syndication usage.json  (the file: {"data": {...}})""",
    )
    record.add_argument("kind", choices=MEDIA_KINDS)
    record.add_argument("file", help="a JSON object shaped as the route's request body")
    delete = _action(
        media,
        "delete",
        "delete every usage of a media, or the one USAGE_ID",
        "usagehub media delete 53b2098571e4e9f1d22e98b74db9a8bc5d060331",
    )
    delete.add_argument("media_id")
    delete.add_argument("usage_id", nargs="?", default=None)


async def _ask_ingest(settings: Settings, cmd: Any) -> Reply:
    """Send ``cmd`` to ingest over NATS, as the gateway does; AdminRefused says why if refused."""
    from nats.errors import NoRespondersError
    from nats.errors import TimeoutError as NatsTimeout

    from shared.bus import COMMANDS_PREFIX, connect
    from shared.commands import encoder, reply_decoder

    try:
        nc = await asyncio.wait_for(connect(settings, "usagehub-cli"), CONNECT_WAIT)
    except TimeoutError:
        raise AdminRefused(f"NATS does not answer (waited {CONNECT_WAIT:.0f} s)") from None
    try:
        msg = await nc.request(
            COMMANDS_PREFIX + type(cmd).__name__, encoder.encode(cmd), timeout=settings.command_timeout
        )
    except (NoRespondersError, NatsTimeout):
        raise AdminRefused("the ingest service did not answer") from None
    finally:
        await nc.close()
    reply = reply_decoder.decode(msg.data)
    if reply.status >= 400:
        raise AdminRefused(f"{reply.error or 'refused'} ({reply.status})")
    return reply


async def _read(settings: Settings, query: Callable[[Conn], Awaitable[Any]]) -> Any:
    """``query`` on one read-only snapshot of the read models."""
    import asyncpg

    conn = await asyncpg.connect(settings.database_url)
    try:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            return await query(conn)
    finally:
        await conn.close()


def _link(result: dict[str, Any]) -> dict[str, Any]:
    from services.gateway.links_read import link_json

    created_at = datetime.fromisoformat(result["created_at"])
    return link_json(result["id"], result["name"], result["url"], result["description"], created_at)


def _media_body(path: str, limit: int) -> dict[str, Any]:
    """The file as a route's body: a JSON object, at most ``limit`` bytes and nested as deep as the
    route takes; AdminRefused says why not."""
    import msgspec

    from shared.commands.media import MAX_DEPTH, json_depth

    try:
        with open(path, "rb") as f:
            raw = f.read(limit + 1)
    except OSError as exc:
        raise AdminRefused(f"cannot read {path}: {exc.strerror}") from None
    if len(raw) > limit:
        raise AdminRefused(f"{path} is larger than {limit} bytes")
    try:
        body = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise AdminRefused(f"{path} is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise AdminRefused(f"{path} must hold a JSON object")
    if json_depth(body) > MAX_DEPTH:
        raise AdminRefused(f"{path} is nested more than {MAX_DEPTH} deep")
    return body


def _media_command(settings: Settings, args: argparse.Namespace, rid: str) -> Any:
    """The command the route of ``args.kind`` would send for the file's body."""
    from shared.commands.media import MAX_BODY, recording_command

    limit = settings.media_print_max_kb * 1024 if args.kind == "print" else MAX_BODY
    return recording_command(args.kind, _media_body(args.file, limit), request_id=rid)


def _found(what: str, found: dict[str, Any] | None) -> dict[str, Any]:
    if found is None:
        raise AdminRefused(f"no {what}")
    return found


async def _write(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    """The command ``args`` ask for, sent to ingest; what to print."""
    from shared.commands import CreateLink, DeleteLink, RegenerateDeviceToken, RegisterDevice, UpdateLink
    from shared.commands.media import DeleteMediaUsage, DeleteMediaUsages
    from shared.commands.metering import AddPrincipal, CreateOrg, IssueApiKey, RevokeApiKey
    from shared.logging import new_request_id
    from shared.secrets import hash_token, new_token

    rid = new_request_id()
    # Tokens and keys are made here, as the gateway makes them: only their hash goes to ingest.
    secret = new_token()
    match (args.command, args.action):
        case ("devices", "add"):
            reply = await _ask_ingest(
                settings, RegisterDevice(name=args.name, token_hash=hash_token(secret), request_id=rid)
            )
            return {**reply.result, "token": secret}
        case ("devices", "token"):
            cmd: Any = RegenerateDeviceToken(
                device_id=args.device_id, token_hash=hash_token(secret), request_id=rid
            )
            return {**(await _ask_ingest(settings, cmd)).result, "token": secret}
        case ("links", "add"):
            cmd = CreateLink(name=args.name, url=args.url, description=args.description, request_id=rid)
            return _link((await _ask_ingest(settings, cmd)).result)
        case ("links", "update"):
            fields = {
                k: getattr(args, k) for k in ("name", "url", "description") if getattr(args, k) is not None
            }
            if not fields:
                raise AdminRefused("nothing to change: give --name, --url or --description")
            cmd = UpdateLink(link_id=args.link_id, request_id=rid, **fields)
            return _link((await _ask_ingest(settings, cmd)).result)
        case ("links", "delete"):
            await _ask_ingest(settings, DeleteLink(link_id=args.link_id, request_id=rid))
            return {"deleted": args.link_id}
        case ("orgs", _):
            cmd = CreateOrg(
                org_id=args.id,
                name=args.name,
                time_zone=args.time_zone,
                parent_id=args.parent,
                request_id=rid,
            )
            return dict((await _ask_ingest(settings, cmd)).result)
        case ("keys", "add"):
            cmd = IssueApiKey(
                org_id=args.org,
                key_hash=hash_token(secret),
                principal_id=args.principal,
                name=args.name,
                request_id=rid,
            )
            return {**(await _ask_ingest(settings, cmd)).result, "key": secret}
        case ("keys", "revoke"):
            reply = await _ask_ingest(settings, RevokeApiKey(key_id=args.key_id, request_id=rid))
            return dict(reply.result or {"revoked": args.key_id})
        case ("principals", _):
            cmd = AddPrincipal(principal_id=args.id, super_ops=args.super_ops, request_id=rid)
            return dict((await _ask_ingest(settings, cmd)).result)
        case ("media", "record"):
            await _ask_ingest(settings, _media_command(settings, args, rid))
            return {"recorded": args.kind}
        case ("media", _) if args.usage_id is None:
            await _ask_ingest(settings, DeleteMediaUsages(media_id=args.media_id, request_id=rid))
            return {"deleted": args.media_id}
        case _:
            cmd = DeleteMediaUsage(media_id=args.media_id, usage_id=args.usage_id, request_id=rid)
            await _ask_ingest(settings, cmd)
            return {"deleted": args.media_id, "usage": args.usage_id}


async def _query(settings: Settings, args: argparse.Namespace) -> dict[str, Any]:
    """The read ``args`` ask for, from the read models; what to print."""
    from services.gateway import heartbeat_read, links_read, metering_read

    match (args.command, args.action):
        case ("devices", _):
            return dict(
                await _read(settings, lambda c: heartbeat_read.devices_page(c, args.limit, args.offset))
            )
        case ("links", "list"):
            return dict(await _read(settings, lambda c: links_read.links_page(c, args.limit, args.offset)))
        case ("links", _):
            return _found(
                f"link {args.link_id}", await _read(settings, lambda c: links_read.link(c, args.link_id))
            )
        case ("orgs", "list"):
            return dict(await _read(settings, lambda c: metering_read.orgs_page(c, args.limit, args.offset)))
        case ("orgs", _):
            return _found(f"org {args.id!r}", await _read(settings, lambda c: metering_read.org(c, args.id)))
        case _:

            async def keys_of_org(conn: Conn) -> dict[str, Any] | None:
                if await metering_read.org(conn, args.org) is None:
                    return None
                return await metering_read.keys_page(conn, args.org, args.limit, args.offset)

            return _found(f"org {args.org!r}", await _read(settings, keys_of_org))


_READS = frozenset({"list", "show"})


async def run_admin(settings: Settings, args: argparse.Namespace) -> int:
    """Run the admin subcommand ``args`` name; 0, or 1 with one line on stderr saying why not."""
    import asyncpg

    reads = args.action in _READS
    settings = require_running(settings, nats=not reads, database=reads)
    try:
        if not reads:
            answer = await _write(settings, args)
        else:
            try:
                answer = await _query(settings, args)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                raise AdminRefused(f"the read models in Postgres cannot be read ({exc})") from None
    except AdminRefused as exc:
        print(f"usagehub: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(answer))
    return 0
