"""Typed configuration, read once from ``USAGEHUB_*`` environment variables.

Every component validates its whole configuration at start-up and reports all errors together.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from urllib.parse import urlsplit

# A print request becomes one event; beyond this its event could outgrow a NATS message (1 MiB).
MAX_PRINT_KB = 560

# Gateway worker processes on one port: far beyond any core count worth one host.
MAX_HTTP_WORKERS = 64

# The admin key is compared as given, so its length is all its strength (32 hex characters: 128 bits).
MIN_SECRET_KEY_LENGTH = 32


class SettingsError(ValueError):
    """One or more ``USAGEHUB_*`` variables are invalid; the message lists all of them."""


@dataclass(frozen=True, slots=True)
class Settings:
    """The whole configuration of every usagehub process (each reads what it needs)."""

    # Empty means "start the embedded server" (``usagehub up``); services require a URL.
    nats_url: str = ""
    # The NATS user this process connects as, which decides what it may publish and subscribe
    # (shared/bus_permissions.py). Empty: no authentication (a server without users).
    nats_user: str = ""
    nats_password: str = field(default="", repr=False)
    # A mounted secret holding the password (Kubernetes, compose secrets), instead of the variable.
    nats_password_file: str = ""
    # CA certificate that signed the NATS server's (tls:// URLs); empty: the system's CAs.
    nats_ca_file: str = ""
    database_url: str = field(default="", repr=False)
    # Empty disables the device routes entirely (the heartbeat document's rule).
    secret_key: str = field(default="", repr=False)
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    # Gateway processes `usagehub up` starts on the one HTTP port; 0: one per core, at most two
    # (docs/operations.md, "Gateway workers"). A gateway above 1 binds with SO_REUSEPORT so that its
    # siblings share the port.
    http_workers: int = 0
    data_dir: Path = Path(".usagehub")
    log_format: str = "auto"  # auto | json | console
    log_level: str = "info"
    stream_replicas: int = 1
    # How long a write waits for its projections before answering anyway (read-your-writes bound).
    read_your_writes_timeout: float = 5.0
    command_timeout: float = 10.0
    # The most events a projector applies in one transaction: a batch is what has arrived meanwhile.
    projector_batch: int = 5000
    # /readyz fails when a projection is more than this many events behind the stream.
    ready_max_lag: int = 10_000
    # /readyz fails when a projection has had events waiting this long without its checkpoint moving.
    ready_stuck_after: float = 15.0
    # ingest and projector serve /healthz, /readyz and /metrics here (the gateway on its HTTP port).
    metrics_port: int = 9100
    stats_interval: float = 1.0
    # Limits at the gateway's door (docs/operations.md, "Limits at the door").
    # A connection must send a request's headers within this many seconds of opening (or of the
    # first byte of a next request on a kept-alive connection), else it is closed.
    http_header_timeout: float = 10.0
    # A request's whole body must arrive within this many seconds of its headers, else 408.
    http_body_timeout: float = 10.0
    # Connections one gateway process holds at once; beyond it new ones get 503 and are closed.
    http_max_connections: int = 1000
    # WebSocket clients of one gateway process; beyond it the upgrade is answered 503.
    ws_max_clients: int = 500
    # Origins (``https://host[:port]``, comma-separated) allowed to open WebSockets besides the
    # request's own; a request without Origin (not a browser) is always allowed.
    ws_allowed_origins: str = ""
    # Failed authentications (401/403) a client address may have in a burst, and how fast that
    # budget refills; over it, requests with an unproven credential get 429.
    auth_failure_burst: int = 20
    auth_failures_per_minute: float = 30.0
    # Client addresses whose failure budget the gateway remembers (least recently failing forgotten).
    auth_tracked_clients: int = 10_000
    # Proxies (comma-separated CIDRs) whose X-Forwarded-For names the client; empty: the peer is.
    trusted_proxies: str = ""

    @property
    def listens_on_loopback_only(self) -> bool:
        return _is_loopback(self.http_host)

    @property
    def weak_secret_key(self) -> bool:
        """A short admin key: refused beyond loopback, accepted (with a warning) on a laptop's loopback."""
        return bool(self.secret_key) and len(self.secret_key) < MIN_SECRET_KEY_LENGTH

    # Absolute base of the links the media-usage API answers with (usage uris); empty: this gateway's
    # own address (``http://<http_host>:<http_port>``), right for ``usagehub up``.
    public_url: str = ""
    # Base of the ``media`` links (``<media_api_url>/images/<mediaId>``); empty: the public URL, where
    # the gateway answers a minimal media document.
    media_api_url: str = ""
    # Largest POST /usages/print body, in KiB (the original service's api.setPrint.maxLength).
    media_print_max_kb: int = 500

    @property
    def device_routes_enabled(self) -> bool:
        return bool(self.secret_key)

    @property
    def public_base_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host = self.http_host
        if host in {"", "0.0.0.0", "::"}:
            host = "localhost"  # listening everywhere: this machine is one place that reaches it
        elif ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.http_port}"

    @property
    def media_api_base_url(self) -> str:
        return self.media_api_url.rstrip("/") if self.media_api_url else self.public_base_url

    @property
    def trusted_proxy_networks(self) -> tuple[IPNetwork, ...]:
        """``trusted_proxies`` parsed (a bare address is a /32 or /128)."""
        return tuple(ipaddress.ip_network(c.strip(), strict=False) for c in _items(self.trusted_proxies))

    @property
    def ws_allowed_origin_set(self) -> frozenset[str]:
        return frozenset(o.strip().rstrip("/").lower() for o in _items(self.ws_allowed_origins))


IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _items(comma_separated: str) -> list[str]:
    return [item for item in comma_separated.split(",") if item.strip()]


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _env_name(field_name: str) -> str:
    return "USAGEHUB_" + field_name.upper()


ENV_VARS: tuple[str, ...] = tuple(_env_name(f.name) for f in fields(Settings))


def load_settings(environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
    """Build settings from the environment, collecting every invalid value before failing."""
    env = os.environ if environ is None else environ
    values: dict[str, object] = {}
    errors: list[str] = []
    defaults = Settings()
    for f in fields(Settings):
        if f.name in overrides:
            values[f.name] = overrides[f.name]
            continue
        raw = env.get(_env_name(f.name))
        if raw is None:
            continue
        default = getattr(defaults, f.name)
        try:
            if isinstance(default, bool):
                values[f.name] = raw.strip().lower() in {"1", "true", "yes", "on"}
            elif isinstance(default, int):
                values[f.name] = int(raw)
            elif isinstance(default, float):
                values[f.name] = float(raw)
            elif isinstance(default, Path):
                values[f.name] = Path(raw)
            else:
                values[f.name] = raw
        except ValueError:
            errors.append(f"{_env_name(f.name)}={raw!r} is not a valid {type(default).__name__}")
    password_file = str(values.get("nats_password_file", ""))
    if password_file:
        if values.get("nats_password"):
            errors.append("set USAGEHUB_NATS_PASSWORD or USAGEHUB_NATS_PASSWORD_FILE, not both")
        try:
            # A secret file usually ends with a newline that is not part of the password.
            values["nats_password"] = Path(password_file).read_text().rstrip("\r\n")
        except OSError as exc:
            errors.append(f"USAGEHUB_NATS_PASSWORD_FILE: cannot read {password_file} ({exc.strerror})")
    settings = Settings(**values)  # type: ignore[arg-type]
    errors.extend(_validate(settings))
    if errors:
        raise SettingsError("invalid configuration: " + "; ".join(errors))
    return settings


def _validate(s: Settings) -> list[str]:
    errors = []
    if not 0 <= s.http_port <= 65535:
        errors.append(f"USAGEHUB_HTTP_PORT={s.http_port} is not a TCP port")
    if not 0 <= s.http_workers <= MAX_HTTP_WORKERS:
        errors.append(f"USAGEHUB_HTTP_WORKERS must be from 1 to {MAX_HTTP_WORKERS}, or 0 for one per core")
    if s.log_format not in {"auto", "json", "console"}:
        errors.append("USAGEHUB_LOG_FORMAT must be auto, json or console")
    if s.log_level.lower() not in {"debug", "info", "warning", "error"}:
        errors.append("USAGEHUB_LOG_LEVEL must be debug, info, warning or error")
    if s.stream_replicas not in {1, 3, 5}:
        errors.append("USAGEHUB_STREAM_REPLICAS must be 1, 3 or 5")
    if s.read_your_writes_timeout < 0 or s.command_timeout <= 0:
        errors.append("timeouts must be positive")
    if s.projector_batch < 1:
        errors.append("USAGEHUB_PROJECTOR_BATCH must be at least 1")
    if s.nats_url and not all(
        part.strip().startswith(("nats://", "tls://", "ws://", "wss://")) for part in s.nats_url.split(",")
    ):
        errors.append("USAGEHUB_NATS_URL must be a nats:// or tls:// URL, or several separated by commas")
    if s.database_url and not s.database_url.startswith(("postgres://", "postgresql://")):
        errors.append("USAGEHUB_DATABASE_URL must be a postgresql:// URL")
    for name, url in (("USAGEHUB_PUBLIC_URL", s.public_url), ("USAGEHUB_MEDIA_API_URL", s.media_api_url)):
        if url and not _base_url(url):
            errors.append(f"{name} must be an absolute http(s) URL without query or fragment")
    if not 1 <= s.media_print_max_kb <= MAX_PRINT_KB:
        errors.append(f"USAGEHUB_MEDIA_PRINT_MAX_KB must be from 1 to {MAX_PRINT_KB}")
    if s.nats_user and not (s.nats_password or s.nats_password_file):
        errors.append("USAGEHUB_NATS_USER needs USAGEHUB_NATS_PASSWORD or USAGEHUB_NATS_PASSWORD_FILE")
    if s.nats_password and not s.nats_user:
        errors.append("a NATS password needs USAGEHUB_NATS_USER")
    if s.nats_ca_file and not Path(s.nats_ca_file).is_file():
        errors.append(f"USAGEHUB_NATS_CA_FILE: {s.nats_ca_file} is not a file")
    if s.secret_key and len(s.secret_key) < MIN_SECRET_KEY_LENGTH and not s.listens_on_loopback_only:
        errors.append(
            f"USAGEHUB_SECRET_KEY must be at least {MIN_SECRET_KEY_LENGTH} characters when the gateway"
            f" listens beyond loopback (USAGEHUB_HTTP_HOST={s.http_host}); openssl rand -hex 32 makes one;"
            " empty turns the device and admin routes off"
        )
    if s.http_header_timeout <= 0 or s.http_body_timeout <= 0:
        errors.append("USAGEHUB_HTTP_HEADER_TIMEOUT and USAGEHUB_HTTP_BODY_TIMEOUT must be positive")
    for name in ("http_max_connections", "ws_max_clients", "auth_failure_burst", "auth_tracked_clients"):
        if getattr(s, name) < 1:
            errors.append(f"{_env_name(name)} must be at least 1")
    if s.auth_failures_per_minute <= 0:
        errors.append("USAGEHUB_AUTH_FAILURES_PER_MINUTE must be positive")
    try:
        s.trusted_proxy_networks  # noqa: B018 (parsing is the check)
    except ValueError:
        errors.append("USAGEHUB_TRUSTED_PROXIES must be comma-separated CIDRs, e.g. 10.0.0.0/8,::1/128")
    if any(not o.startswith(("http://", "https://")) for o in s.ws_allowed_origin_set):
        errors.append("USAGEHUB_WS_ALLOWED_ORIGINS must be comma-separated http(s)://host[:port] origins")
    return errors


def _base_url(url: str) -> bool:
    try:
        parts = urlsplit(url)
        _ = parts.port  # reading the port validates it
    except ValueError:
        return False
    return (
        parts.scheme in {"http", "https"}
        and bool(parts.hostname)
        and not parts.query
        and not parts.fragment
        and "#" not in url
        and "?" not in url
        and not any(c.isspace() or ord(c) < 32 for c in url)
    )


def require_servers(s: Settings) -> list[str]:
    """Services (unlike ``usagehub up``) cannot start without both server URLs."""
    missing = []
    if not s.nats_url:
        missing.append("USAGEHUB_NATS_URL is required")
    if not s.database_url:
        missing.append("USAGEHUB_DATABASE_URL is required")
    return missing
