"""``usagehub``: the admin command line (up, migrate, rebuild, quarantine, schema, links, the
metering registry: orgs, keys, principals, and contribution imports)."""

from __future__ import annotations

import argparse
import json
import os
import sys

from services.admin_cli import ADMIN_COMMANDS, add_admin_parsers, run_admin
from services.local.running import reach_running, require_running
from shared.bus import BusRefused
from shared.lifecycle import run_async
from shared.logging import configure_logging
from shared.settings import Settings, SettingsError, load_settings


async def _migrate(settings: Settings) -> None:
    from shared.db import create_pool, migrate

    pool = await create_pool(settings.database_url, max_size=1)
    try:
        async with pool.acquire() as conn:
            applied = await migrate(conn)
        print("applied: " + (", ".join(applied) or "nothing, up to date"))
    finally:
        await pool.close()


async def _rebuild(settings: Settings, names: list[str], *, progress: bool) -> int:
    from nats.js.errors import NotFoundError

    from services.progress import ProgressBar
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
                # The events to replay: the stream as it is now; the checkpoint is how far the replay is.
                total = int((await js.stream_info(EVENTS_STREAM)).state.last_seq)
                with ProgressBar(sys.stderr, f"rebuild {name}", "events", total, enabled=progress) as bar:
                    position = await rebuild(conn, js, PROJECTIONS[name], on_checkpoint=bar.update)
                    # The replay read the stream to its end: a projection's last event may come before it.
                    bar.finish(max(position, total))
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


async def _import_git(
    settings: Settings, path: str, module: str, branch: str | None, *, progress: bool
) -> int:
    """Import a git repository's history through ingest; print what was appended as JSON."""
    from pathlib import Path

    from services.contributions_import.git_history import GitError
    from services.contributions_import.importer import ImportFailed, import_git
    from services.progress import ProgressBar
    from shared.bus import connect

    nc = await connect(require_running(settings, database=False), "usagehub-import")
    try:
        with ProgressBar(sys.stderr, f"import {module}", "commits", 0, enabled=progress) as bar:
            result = await import_git(nc, Path(path), module, branch, bar, settings.command_timeout)
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


async def _import_directory(settings: Settings, path: str, *, progress: bool) -> int:
    from pathlib import Path

    from services.contributions_import.importer import ImportFailed, import_directory, read_directory_file
    from services.progress import ProgressBar
    from shared.bus import connect

    require_running(settings, database=False)
    try:
        cmd = read_directory_file(Path(path))
    except ValueError as exc:
        print(f"usagehub: {exc}", file=sys.stderr)
        return 2
    nc = await connect(settings, "usagehub-import")
    try:
        with ProgressBar(sys.stderr, "import directory", "entries", 0, enabled=progress) as bar:
            result = await import_directory(nc, cmd, bar, settings.command_timeout)
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

    found = run_async(gather_status(settings, running_url(settings)))
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
        "  usagehub links list | jq '.items[].name'\n"
        "  usagehub orgs create acme --name Acme --time-zone Europe/Paris\n"
        "  KEY=$(usagehub keys add acme | jq -r .key)\n"
        "  usagehub media record front front.json         the body of POST /usages/front, from a file\n"
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
        "up",
        help="start everything in the foreground (embedded NATS/Postgres unless URLs are set)",
        description="Start NATS and Postgres (embedded, under the data dir, unless USAGEHUB_NATS_URL"
        " and USAGEHUB_DATABASE_URL name servers), ingest, the projector and the gateway, and say"
        " where to open it once it is ready; Ctrl-C stops everything. Example: usagehub up",
    )
    sub.add_parser(
        "migrate",
        help="apply database migrations",
        description="Apply the migrations Postgres does not have yet and name them (every service"
        " also does this at start). Example: usagehub migrate",
    )
    rebuild = sub.add_parser(
        "rebuild",
        help="drop read models and replay them from the event stream",
        description="Empty each named read model and replay it from the first event, in one"
        " transaction, while the projector keeps running; a progress bar on stderr counts the events"
        " (redrawn on a terminal, a plain line every few seconds otherwise)."
        " Example: usagehub rebuild heartbeat links",
    )
    rebuild.add_argument("projection", nargs="+", choices=[*sorted(PROJECTIONS), "all"])
    rebuild.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    sub.add_parser(
        "quarantine",
        help="list events the projections set aside (see docs/operations.md)",
        description="Print each event a projection could not apply, as a JSON line: its projection,"
        " stream position, subject, reason, and the hash and size of its bytes."
        " Example: usagehub quarantine | jq -r .reason",
    )
    schema = sub.add_parser(
        "schema",
        help="print the JSON Schema of every event",
        description="Print the JSON Schema of every event type (docs/events.md with --markdown)."
        " Example: usagehub schema --markdown > docs/events.md",
    )
    schema.add_argument("--markdown", action="store_true", help="as docs/events.md")
    authorization = sub.add_parser(
        "nats-authorization",
        help="print the NATS server's users and permissions (authorization.conf)",
        description="Print the NATS server's authorization block: each service's user and what it may"
        " publish and subscribe to. Example: usagehub nats-authorization --publisher media",
    )
    authorization.add_argument(
        "--publisher", action="append", default=[], help="also a named publisher (repeatable)"
    )
    add_admin_parsers(sub)
    imports = sub.add_parser(
        "import",
        help="import contribution records (Stackalytics API)",
        description="Send contribution records to ingest, with a progress bar on stderr."
        " Example: usagehub import git . --module usagehub",
    )
    imports_sub = imports.add_subparsers(dest="import_command", required=True)
    git = imports_sub.add_parser(
        "git",
        help="append the commits of a git repository (only new ones)",
        description="Append the non-merge commits of a git repository's branch; a second run"
        " appends only what is new. Example: usagehub import git ~/src/nova --module nova --branch master",
    )
    git.add_argument("path", help="a git repository (a work tree or a bare repository)")
    git.add_argument("--module", required=True, help="the module (repository name) the commits count for")
    git.add_argument("--branch", default=None, help="branch or commit to read from (default: HEAD)")
    directory = imports_sub.add_parser(
        "directory",
        help="save the entries of a default_data.json-shaped file",
        description="Save the users, companies, releases, repos, project types and module groups of"
        " a Stackalytics default_data.json-shaped file. Example: usagehub import directory default_data.json",
    )
    directory.add_argument("file")
    for command in (git, directory):
        bar = command.add_mutually_exclusive_group()
        # Shown by default: redrawn on a terminal, an occasional plain line in a log.
        bar.add_argument(
            "--progress",
            dest="progress",
            action="store_true",
            default=True,
            help="show progress (the default)",
        )
        bar.add_argument(
            "--no-progress", dest="progress", action="store_false", help="no progress bar on stderr"
        )
    args = parser.parse_args(argv)

    try:
        settings = load_settings()
        # The other commands say what went wrong themselves, in one line: a library's warnings (NATS
        # retrying an unreachable server twice a second) would bury it. USAGEHUB_LOG_LEVEL shows them.
        quiet = args.command != "up" and "USAGEHUB_LOG_LEVEL" not in os.environ
        configure_logging("cli", settings.log_format, "error" if quiet else settings.log_level)
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
        if args.command in ADMIN_COMMANDS:
            return run_async(run_admin(settings, args))
        if args.command == "import" and args.import_command == "git":
            return run_async(
                _import_git(settings, args.path, args.module, args.branch, progress=args.progress)
            )
        if args.command == "import":
            return run_async(_import_directory(settings, args.file, progress=args.progress))
        if args.command == "quarantine":
            run_async(_quarantine(require_running(settings, nats=False)))
            return 0
        if args.command == "migrate":
            run_async(_migrate(require_running(settings, nats=False)))
            return 0
        names = sorted(PROJECTIONS) if "all" in args.projection else args.projection
        return run_async(_rebuild(require_running(settings), names, progress=not args.no_progress))
    except SettingsError as exc:
        print(f"usagehub: {exc}", file=sys.stderr)
        return 2
    except BusRefused as exc:
        print(f"usagehub: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("usagehub: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
