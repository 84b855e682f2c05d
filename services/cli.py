"""``usagehub``: the admin command line (up, migrate, rebuild, quarantine, schema, links, the
metering registry: orgs, keys, principals, and contribution imports)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from datetime import datetime
from typing import TYPE_CHECKING, Any

from services.local.running import reach_running
from shared.bus import BusRefused
from shared.logging import configure_logging
from shared.settings import Settings, SettingsError, load_settings, require_servers

if TYPE_CHECKING:
    from shared.commands import Reply


def _servers(settings: Settings) -> Settings:
    missing = require_servers(settings)
    if missing:
        raise SettingsError("; ".join(missing) + _NOTHING_RUNNING)
    return settings


_NOTHING_RUNNING = (
    " (no `usagehub up` runs from the data dir USAGEHUB_DATA_DIR, default .usagehub; start one with"
    " `make up`, or name the servers in the environment)"
)


async def _migrate(settings: Settings) -> None:
    from shared.db import create_pool, migrate

    pool = await create_pool(settings.database_url, max_size=1)
    try:
        async with pool.acquire() as conn:
            applied = await migrate(conn)
        print("applied: " + (", ".join(applied) or "nothing, up to date"))
    finally:
        await pool.close()


async def _rebuild(settings: Settings, names: list[str]) -> int:
    from nats.js.errors import NotFoundError

    from services.projector.projections import PROJECTIONS
    from services.projector.rebuild import rebuild
    from shared.bus import EVENTS_STREAM, connect
    from shared.db import create_pool, migrate

    nc = await connect(settings, "usagehub-rebuild")
    pool = await create_pool(settings.database_url, max_size=1)
    try:
        js = nc.jetstream()
        try:
            await js.stream_info(EVENTS_STREAM)
        except NotFoundError:
            print(
                f"usagehub: the stream {EVENTS_STREAM} does not exist yet: start ingest first",
                file=sys.stderr,
            )
            return 1
        async with pool.acquire() as conn:
            await migrate(conn)
            for name in names:
                position = await rebuild(conn, js, PROJECTIONS[name])
                print(f"rebuilt {name} up to stream position {position}")
        return 0
    finally:
        await pool.close()
        await nc.close()


async def _quarantine(settings: Settings) -> None:
    """Print every quarantined event as a JSON line (without its bytes: their hash and size)."""
    import asyncpg

    conn = await asyncpg.connect(settings.database_url)
    try:
        rows = await conn.fetch(
            "SELECT projection, stream_seq, subject, reason, data_sha256, length(data) AS size"
            " FROM projection_quarantine ORDER BY stream_seq, projection"
        )
    finally:
        await conn.close()
    for r in rows:
        print(json.dumps(dict(r)))
    if not rows:
        print("no quarantined events", file=sys.stderr)


async def _links_add(settings: Settings, name: str, url: str, description: str) -> int:
    """Create a link through ingest, as the gateway would; print it as JSON."""
    from nats.errors import NoRespondersError
    from nats.errors import TimeoutError as NatsTimeout

    from services.gateway.links_read import link_json
    from shared.bus import COMMANDS_PREFIX, connect
    from shared.commands import CreateLink, encoder, reply_decoder
    from shared.logging import new_request_id

    if not settings.nats_url:
        raise SettingsError("USAGEHUB_NATS_URL is required" + _NOTHING_RUNNING)
    cmd = CreateLink(name=name, url=url, description=description, request_id=new_request_id())
    nc = await connect(settings, "usagehub-cli")
    try:
        msg = await nc.request(
            COMMANDS_PREFIX + "CreateLink", encoder.encode(cmd), timeout=settings.command_timeout
        )
    except (NoRespondersError, NatsTimeout):
        print("usagehub: the ingest service did not answer", file=sys.stderr)
        return 1
    finally:
        await nc.close()
    reply = reply_decoder.decode(msg.data)
    if reply.status >= 400:
        print(f"usagehub: {reply.error} ({reply.status})", file=sys.stderr)
        return 1
    r = reply.result
    created_at = datetime.fromisoformat(r["created_at"])
    print(json.dumps(link_json(r["id"], r["name"], r["url"], r["description"], created_at)))
    return 0


async def _ask_ingest(settings: Settings, cmd: Any) -> Reply | None:
    """Send ``cmd`` to ingest over NATS, as the gateway does; None (and why, on stderr) if refused."""
    from nats.errors import NoRespondersError
    from nats.errors import TimeoutError as NatsTimeout

    from shared.bus import COMMANDS_PREFIX, connect
    from shared.commands import encoder, reply_decoder

    if not settings.nats_url:
        raise SettingsError("USAGEHUB_NATS_URL is required" + _NOTHING_RUNNING)
    nc = await connect(settings, "usagehub-cli")
    try:
        msg = await nc.request(
            COMMANDS_PREFIX + type(cmd).__name__, encoder.encode(cmd), timeout=settings.command_timeout
        )
    except (NoRespondersError, NatsTimeout):
        print("usagehub: the ingest service did not answer", file=sys.stderr)
        return None
    finally:
        await nc.close()
    reply = reply_decoder.decode(msg.data)
    if reply.status >= 400:
        print(f"usagehub: {reply.error} ({reply.status})", file=sys.stderr)
        return None
    return reply


async def _metering(settings: Settings, args: argparse.Namespace) -> int:
    """Orgs, keys and principals through ingest; prints what was made as JSON (a new key only here)."""
    from shared.commands.metering import AddPrincipal, CreateOrg, IssueApiKey, RevokeApiKey
    from shared.logging import new_request_id
    from shared.secrets import hash_token, new_token

    rid = new_request_id()
    key = None
    match (args.command, args.action):
        case ("orgs", "add" | "sub-add"):
            parent = getattr(args, "parent", None)
            cmd: Any = CreateOrg(
                org_id=args.id, name=args.name, time_zone=args.time_zone, parent_id=parent, request_id=rid
            )
        case ("keys", "add"):
            key = new_token()  # made here, like the gateway does: only its hash goes to ingest
            cmd = IssueApiKey(
                org_id=args.org,
                key_hash=hash_token(key),
                principal_id=args.principal,
                name=args.name,
                request_id=rid,
            )
        case ("keys", "revoke"):
            cmd = RevokeApiKey(key_id=args.key_id, request_id=rid)
        case _:
            cmd = AddPrincipal(principal_id=args.id, super_ops=args.super_ops, request_id=rid)
    reply = await _ask_ingest(settings, cmd)
    if reply is None:
        return 1
    result = {**reply.result, "key": key} if key is not None else reply.result
    print(json.dumps(result or {"revoked": args.key_id}))
    return 0


async def _devices(settings: Settings, args: argparse.Namespace) -> int:
    """Register a device, or give one a new token, through ingest; prints the device and its token
    as JSON (the token is shown here only: like the gateway, only its hash goes to ingest)."""
    from shared.commands import RegenerateDeviceToken, RegisterDevice
    from shared.logging import new_request_id
    from shared.secrets import hash_token, new_token

    token = new_token()
    cmd: Any
    if args.action == "add":
        cmd = RegisterDevice(name=args.name, token_hash=hash_token(token), request_id=new_request_id())
    else:
        cmd = RegenerateDeviceToken(
            device_id=args.device_id, token_hash=hash_token(token), request_id=new_request_id()
        )
    reply = await _ask_ingest(settings, cmd)
    if reply is None:
        return 1
    print(json.dumps({**reply.result, "token": token}))
    return 0


def _device_parsers(sub: Any) -> None:
    devices = sub.add_parser(
        "devices",
        help="heartbeat: register devices and renew their tokens",
        description="Example: TOKEN=$(usagehub devices add Laptop | jq -r .token)",
    ).add_subparsers(dest="action", required=True)
    devices.add_parser("add", help="register a device; prints it with its token (shown once)").add_argument(
        "name"
    )
    devices.add_parser("token", help="give a device a new token (the old one stops working)").add_argument(
        "device_id", type=int
    )


def _metering_parsers(sub: Any) -> None:
    orgs = sub.add_parser("orgs", help="metering: create organisations").add_subparsers(
        dest="action", required=True
    )
    for action, parent in (("add", False), ("sub-add", True)):
        p = orgs.add_parser(action, help="create a sub-org of PARENT" if parent else "create a root org")
        if parent:
            p.add_argument("parent")
        p.add_argument("id")
        p.add_argument("--name", required=True)
        p.add_argument("--time-zone", required=True, help="IANA zone, e.g. Europe/Paris")
    keys = sub.add_parser("keys", help="metering: org API keys").add_subparsers(dest="action", required=True)
    add = keys.add_parser("add", help="issue a key of ORG and print it (shown once)")
    add.add_argument("org")
    add.add_argument("--principal", default=None, help="the principal the key speaks for")
    add.add_argument("--name", default="")
    keys.add_parser("revoke", help="revoke a key").add_argument("key_id")
    principals = sub.add_parser("principals", help="metering: principals and their roles")
    p_add = principals.add_subparsers(dest="action", required=True).add_parser("add", help="add a principal")
    p_add.add_argument("id")
    p_add.add_argument("--super-ops", action="store_true", help="may ask for every org's history (showAll)")


async def _import_git(
    settings: Settings, path: str, module: str, branch: str | None, bar: bool | None
) -> int:
    """Import a git repository's history through ingest; print what was appended as JSON."""
    from pathlib import Path

    from services.contributions_import.git_history import GitError
    from services.contributions_import.importer import ImportFailed, Progress, import_git, progress_wanted
    from shared.bus import connect

    if not settings.nats_url:
        raise SettingsError("USAGEHUB_NATS_URL is required" + _NOTHING_RUNNING)
    nc = await connect(settings, "usagehub-import")
    try:
        progress = Progress(sys.stderr, progress_wanted(bar), "commits")
        result = await import_git(nc, Path(path), module, branch, progress, settings.command_timeout)
    except GitError as exc:
        print(f"usagehub: {exc}", file=sys.stderr)
        return 2
    except ImportFailed as exc:
        print(f"usagehub: import failed: {exc}", file=sys.stderr)
        return 1
    finally:
        await nc.close()
    print(json.dumps(result.as_json()))
    return 0


async def _import_directory(settings: Settings, path: str) -> int:
    from pathlib import Path

    from services.contributions_import.importer import ImportFailed, import_directory, read_directory_file
    from shared.bus import connect

    if not settings.nats_url:
        raise SettingsError("USAGEHUB_NATS_URL is required" + _NOTHING_RUNNING)
    try:
        cmd = read_directory_file(Path(path))
    except ValueError as exc:
        print(f"usagehub: {exc}", file=sys.stderr)
        return 2
    nc = await connect(settings, "usagehub-import")
    try:
        result = await import_directory(nc, cmd, settings.command_timeout)
    except ImportFailed as exc:
        print(f"usagehub: import failed: {exc}", file=sys.stderr)
        return 1
    finally:
        await nc.close()
    print(json.dumps(result))
    return 0


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("usagehub")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def _status(settings: Settings, *, as_json: bool) -> int:
    import dataclasses

    from services.local.running import running_url
    from services.system_status import gather_status, render_status

    found = asyncio.run(gather_status(settings, running_url(settings)))
    print(json.dumps(dataclasses.asdict(found), indent=2) if as_json else render_status(found), end="")
    return 0 if found.ready else 1


def main(argv: list[str] | None = None) -> int:
    from services.projector.projections import PROJECTIONS

    parser = argparse.ArgumentParser(
        prog="usagehub",
        description="Run usagehub and administer it: every API's admin operations, rebuilds of the"
        " read models, the quarantine. While `usagehub up` (make up) runs, the other commands find it"
        " through the data dir; otherwise they use USAGEHUB_NATS_URL and USAGEHUB_DATABASE_URL.",
        epilog="Examples:\n"
        "  usagehub up                                 start everything here (embedded NATS and Postgres)\n"
        "  usagehub status                             is it ready? where to open it? how far behind?\n"
        "  TOKEN=$(usagehub devices add Laptop | jq -r .token)\n"
        "  usagehub links add Docs https://example.org/docs\n"
        "  usagehub orgs add acme --name Acme --time-zone Europe/Paris\n"
        "  usagehub import git ~/src/project --module project\n"
        "  usagehub rebuild heartbeat                  replay a read model from the event log\n"
        "Each command has its own --help.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"usagehub {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    status = sub.add_parser(
        "status",
        help="what runs, the address to open, each projection's position and lag",
        description="Ask the running system (under `make up`, found through the data dir's"
        " running.json) whether it is ready: gateway, ingest, NATS, Postgres, the streams' sizes and"
        " each projection's position, lag and quarantined events. Exit status 0 when ready, else 1."
        " Example: usagehub status --json | jq .readiness.projection_lag",
    )
    status.add_argument("--json", action="store_true", help="one JSON document instead of the table")
    sub.add_parser(
        "up", help="start everything in the foreground (embedded NATS/Postgres unless URLs are set)"
    )
    sub.add_parser("migrate", help="apply database migrations")
    rebuild = sub.add_parser("rebuild", help="drop read models and replay them from the event stream")
    rebuild.add_argument("projection", nargs="+", choices=[*sorted(PROJECTIONS), "all"])
    sub.add_parser("quarantine", help="list events the projections set aside (see docs/operations.md)")
    schema = sub.add_parser("schema", help="print the JSON Schema of every event")
    schema.add_argument("--markdown", action="store_true", help="as docs/events.md")
    authorization = sub.add_parser(
        "nats-authorization", help="print the NATS server's users and permissions (authorization.conf)"
    )
    authorization.add_argument(
        "--publisher", action="append", default=[], help="also a named publisher (repeatable)"
    )
    links = sub.add_parser("links", help="manage the Lighthouse link registry")
    links_sub = links.add_subparsers(dest="links_command", required=True)
    links_add = links_sub.add_parser("add", help="create a link and print it as JSON")
    links_add.add_argument("name")
    links_add.add_argument("url")
    links_add.add_argument("--description", default="")
    _device_parsers(sub)
    _metering_parsers(sub)
    imports = sub.add_parser("import", help="import contribution records (Stackalytics API)")
    imports_sub = imports.add_subparsers(dest="import_command", required=True)
    git = imports_sub.add_parser("git", help="append the commits of a git repository (only new ones)")
    git.add_argument("path", help="a git repository (a work tree or a bare repository)")
    git.add_argument("--module", required=True, help="the module (repository name) the commits count for")
    git.add_argument("--branch", default=None, help="branch or commit to read from (default: HEAD)")
    bar = git.add_mutually_exclusive_group()
    bar.add_argument(
        "--progress", dest="progress", action="store_true", default=None, help="always show progress"
    )
    bar.add_argument("--no-progress", dest="progress", action="store_false", help="never show progress")
    directory = imports_sub.add_parser(
        "directory", help="save the entries of a default_data.json-shaped file"
    )
    directory.add_argument("file")
    args = parser.parse_args(argv)

    try:
        settings = load_settings()
        configure_logging("cli", settings.log_format, settings.log_level)
        if args.command == "up":
            from services.local.supervisor import up

            return up(settings)
        if args.command == "schema":
            from shared.event_docs import render_events_markdown
            from shared.events import event_schema

            print(render_events_markdown() if args.markdown else json.dumps(event_schema(), indent=2), end="")
            return 0
        if args.command == "nats-authorization":
            from shared.bus_permissions import authorization_file

            try:
                print(authorization_file(args.publisher), end="")
            except ValueError as exc:
                print(f"usagehub: {exc}", file=sys.stderr)
                return 2
            return 0
        # Where the environment names no servers, those of the `usagehub up` running from the data
        # dir, as the NATS user whose rights the command needs.
        settings = reach_running(settings, "projector" if args.command == "rebuild" else "gateway")
        if args.command == "status":
            return _status(settings, as_json=args.json)
        if args.command == "links":
            return asyncio.run(_links_add(settings, args.name, args.url, args.description))
        if args.command == "devices":
            return asyncio.run(_devices(settings, args))
        if args.command in ("orgs", "keys", "principals"):
            return asyncio.run(_metering(settings, args))
        if args.command == "import" and args.import_command == "git":
            return asyncio.run(_import_git(settings, args.path, args.module, args.branch, args.progress))
        if args.command == "import":
            return asyncio.run(_import_directory(settings, args.file))
        if args.command == "quarantine":
            asyncio.run(_quarantine(_servers(settings)))
            return 0
        if args.command == "migrate":
            asyncio.run(_migrate(_servers(settings)))
            return 0
        names = sorted(PROJECTIONS) if "all" in args.projection else args.projection
        return asyncio.run(_rebuild(_servers(settings), names))
    except SettingsError as exc:
        print(f"usagehub: {exc}", file=sys.stderr)
        return 2
    except BusRefused as exc:
        print(f"usagehub: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
