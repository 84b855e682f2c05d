"""Typed configuration, read once from ``USAGEHUB_*`` environment variables.

Every component validates its whole configuration at start-up and reports all errors together.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path


class SettingsError(ValueError):
    """One or more ``USAGEHUB_*`` variables are invalid; the message lists all of them."""


@dataclass(frozen=True, slots=True)
class Settings:
    """The whole configuration of every usagehub process (each reads what it needs)."""

    # Empty means "start the embedded server" (``usagehub up``); services require a URL.
    nats_url: str = ""
    database_url: str = ""
    # Empty disables the device routes entirely (the heartbeat document's rule).
    secret_key: str = ""
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    data_dir: Path = Path(".usagehub")
    log_format: str = "auto"  # auto | json | console
    log_level: str = "info"
    stream_replicas: int = 1
    # How long a write waits for its projections before answering anyway (read-your-writes bound).
    read_your_writes_timeout: float = 5.0
    command_timeout: float = 10.0
    projector_batch: int = 500
    # /readyz fails when a projection is more than this many events behind the stream.
    ready_max_lag: int = 10_000
    # /readyz fails when a projection has had events waiting this long without its checkpoint moving.
    ready_stuck_after: float = 15.0
    # ingest and projector serve /healthz, /readyz and /metrics here (the gateway on its HTTP port).
    metrics_port: int = 9100
    stats_interval: float = 1.0

    @property
    def device_routes_enabled(self) -> bool:
        return bool(self.secret_key)


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
    settings = Settings(**values)  # type: ignore[arg-type]
    errors.extend(_validate(settings))
    if errors:
        raise SettingsError("invalid configuration: " + "; ".join(errors))
    return settings


def _validate(s: Settings) -> list[str]:
    errors = []
    if not 0 <= s.http_port <= 65535:
        errors.append(f"USAGEHUB_HTTP_PORT={s.http_port} is not a TCP port")
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
    if s.nats_url and not s.nats_url.startswith(("nats://", "tls://", "ws://", "wss://")):
        errors.append("USAGEHUB_NATS_URL must be a nats:// or tls:// URL")
    if s.database_url and not s.database_url.startswith(("postgres://", "postgresql://")):
        errors.append("USAGEHUB_DATABASE_URL must be a postgresql:// URL")
    return errors


def require_servers(s: Settings) -> list[str]:
    """Services (unlike ``usagehub up``) cannot start without both server URLs."""
    missing = []
    if not s.nats_url:
        missing.append("USAGEHUB_NATS_URL is required")
    if not s.database_url:
        missing.append("USAGEHUB_DATABASE_URL is required")
    return missing
