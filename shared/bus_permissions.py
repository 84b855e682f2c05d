"""Who may publish and subscribe what on the bus, one table per NATS user, and the NATS server's
``authorization`` block rendered from it (embedded server, compose and both Kubernetes overlays)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from shared.bus import (
    COMMANDS_PREFIX,
    EVENTS_STREAM,
    EVENTS_SUBJECTS,
    INGEST_QUEUE,
    INTAKE_PREFIX,
    INTAKE_STREAM,
    NOTIFY_SUBJECTS,
    PROJECTED_PREFIX,
    REJECTED_STREAM,
    REJECTED_SUBJECTS,
    STREAMS,
    inbox_prefix,
)

ROLES = ("ingest", "gateway", "projector", "publisher", "operator")
_NAME = re.compile(r"[a-z][a-z0-9_]{0,62}")


@dataclass(frozen=True, slots=True)
class Permissions:
    """Subjects a user may publish to and subscribe to (``"subject queue"`` pins a queue group)."""

    publish: tuple[str, ...]
    subscribe: tuple[str, ...]
    # Publish the answer to a request it received, on the reply subject the request named.
    allow_responses: bool = False


def _stream_infos(*streams: str) -> tuple[str, ...]:
    return tuple(f"$JS.API.STREAM.INFO.{s}" for s in streams)


def _consumers_of(stream: str) -> tuple[str, ...]:
    """Create (named, ephemeral or durable), inspect, delete and pull from consumers of ``stream``."""
    return (
        f"$JS.API.CONSUMER.CREATE.{stream}",
        f"$JS.API.CONSUMER.CREATE.{stream}.>",
        f"$JS.API.CONSUMER.DURABLE.CREATE.{stream}.*",
        f"$JS.API.CONSUMER.INFO.{stream}.*",
        f"$JS.API.CONSUMER.DELETE.{stream}.*",
        f"$JS.API.CONSUMER.MSG.NEXT.{stream}.*",
    )


def _direct_get(stream: str) -> tuple[str, ...]:
    # By sequence the request goes to the bare subject; by last subject, to the subject after it.
    return (f"$JS.API.DIRECT.GET.{stream}", f"$JS.API.DIRECT.GET.{stream}.>")


def _inbox(user: str) -> str:
    return inbox_prefix(user) + ".>"


def _ingest() -> Permissions:
    return Permissions(
        publish=(
            EVENTS_SUBJECTS,
            REJECTED_SUBJECTS,
            *_stream_infos(*STREAMS),
            *(f"$JS.API.STREAM.CREATE.{s}" for s in STREAMS),
            *(f"$JS.API.STREAM.UPDATE.{s}" for s in STREAMS),
            *_consumers_of(INTAKE_STREAM),
            f"$JS.ACK.{INTAKE_STREAM}.>",
            *_consumers_of(EVENTS_STREAM),
            # Single events from the stream's leader (shared.bus.get_stored); direct gets for the
            # reads that tolerate a replica a moment behind (media's last-by-subject lookups).
            f"$JS.API.STREAM.MSG.GET.{EVENTS_STREAM}",
            *_direct_get(EVENTS_STREAM),
        ),
        subscribe=(f"{COMMANDS_PREFIX}> {INGEST_QUEUE}", _inbox("ingest")),
        allow_responses=True,
    )


def _gateway() -> Permissions:
    return Permissions(
        publish=(
            COMMANDS_PREFIX + ">",
            # /readyz reports each projection's lag from its consumer.
            f"$JS.API.CONSUMER.INFO.{EVENTS_STREAM}.*",
            *_stream_infos(*STREAMS),
        ),
        subscribe=(PROJECTED_PREFIX + ">", _inbox("gateway")),
    )


def _projector() -> Permissions:
    return Permissions(
        publish=(
            PROJECTED_PREFIX + ">",
            NOTIFY_SUBJECTS,
            *_stream_infos(*STREAMS),
            *_consumers_of(EVENTS_STREAM),
            f"$JS.ACK.{EVENTS_STREAM}.>",
        ),
        subscribe=(_inbox("projector"),),
    )


def _operator() -> Permissions:
    return Permissions(
        publish=(
            "$JS.API.INFO",
            "$JS.API.STREAM.NAMES",
            "$JS.API.STREAM.LIST",
            *_stream_infos(*STREAMS),
            *_consumers_of(REJECTED_STREAM),
            f"$JS.ACK.{REJECTED_STREAM}.>",
            # Flow control of the push consumers tools such as `nats stream view` use.
            f"$JS.FC.{REJECTED_STREAM}.>",
            f"$JS.API.STREAM.MSG.GET.{REJECTED_STREAM}",
            *_direct_get(REJECTED_STREAM),
        ),
        subscribe=(REJECTED_SUBJECTS, _inbox("operator")),
    )


def publisher_permissions(name: str | None = None) -> Permissions:
    """The generic ``publisher`` publishes ``usagehub.ingest.<kind>``; a named publisher only
    ``usagehub.ingest.<kind>.<name>``, so the subject proves who sent it. Their JetStream
    acknowledgements come back on their own inbox."""
    if name is None:
        return Permissions(publish=(INTAKE_PREFIX + "*",), subscribe=(_inbox("publisher"),))
    return Permissions(publish=(f"{INTAKE_PREFIX}*.{name}",), subscribe=(_inbox(name),))


PERMISSIONS: dict[str, Permissions] = {
    "ingest": _ingest(),
    "gateway": _gateway(),
    "projector": _projector(),
    "publisher": publisher_permissions(),
    "operator": _operator(),
}


def check_publisher_name(name: str) -> str:
    """A named publisher is a NATS user and a subject token: it cannot be a role's name."""
    if not _NAME.fullmatch(name) or name in ROLES:
        raise ValueError(
            f"publisher name {name!r} must be a-z, 0-9 and _ (starting with a letter) and not one of {ROLES}"
        )
    return name


def permissions_of(user: str) -> Permissions:
    return PERMISSIONS.get(user) or publisher_permissions(check_publisher_name(user))


def password_variable(user: str) -> str:
    """The environment variable the NATS server reads ``user``'s password from."""
    return f"NATS_{user.upper()}_PASSWORD"


def _from_environment(user: str) -> str:
    return "$" + password_variable(user)


def _strings(items: Iterable[str], indent: str) -> str:
    return "".join(f"{indent}{json.dumps(item)}\n" for item in items)


def _render_user(user: str, password: str, permissions: Permissions | None) -> str:
    lines = f"    {{\n      user: {json.dumps(user)}\n      password: {password}\n"
    if permissions is not None:
        lines += "      permissions: {\n"
        lines += "        publish: {\n          allow: [\n"
        lines += _strings(permissions.publish, "            ")
        lines += "          ]\n        }\n"
        lines += "        subscribe: {\n          allow: [\n"
        lines += _strings(permissions.subscribe, "            ")
        lines += "          ]\n        }\n"
        if permissions.allow_responses:
            lines += "        allow_responses: true\n"
        lines += "      }\n"
    return lines + "    }\n"


def render_authorization(
    publishers: Iterable[str] = (),
    *,
    superusers: Iterable[str] = (),
    password: Callable[[str], str] = _from_environment,
) -> str:
    """The server's ``authorization`` block: every role, the named ``publishers``, and ``superusers``
    (tests only) without any restriction. ``password(user)`` is the configuration value of a
    password: by default the environment variable ``password_variable(user)``. There is no
    ``no_auth_user``, so a client without credentials is refused."""
    users = [*ROLES, *(check_publisher_name(p) for p in publishers)]
    text = "authorization {\n  users: [\n"
    for user in users:
        text += _render_user(user, password(user), permissions_of(user))
    for user in superusers:
        text += _render_user(user, password(user), None)
    return text + "  ]\n}\n"


def authorization_file(publishers: Iterable[str] = ()) -> str:
    """``authorization.conf`` as deploy/ ships it, included by every NATS configuration there."""
    publishers = list(publishers)
    command = " ".join(["usagehub nats-authorization", *(f"--publisher {p}" for p in publishers)])
    return (
        f"# Made by `{command}` from shared/bus_permissions.py;\n"
        "# tests/deploy checks that it is current. Each user's password is the server's environment\n"
        '# variable NATS_<USER>_PASSWORD (docs/operations.md, "Who may publish what").\n'
        + render_authorization(publishers)
    )
