"""Settings from the environment (and a `.env` file), validated once at start-up.

Every problem is a `ConfigError` whose message is one sentence a person can act on;
`server.py` prints it on stderr and exits non-zero instead of showing a traceback.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping
from urllib.parse import urlsplit

from dotenv import dotenv_values

DEFAULT_DATABASE_URL = "sqlite:///./data/providers.db"
DEFAULT_BACKUP_FILE = "./data/config_backup.json"
SECRET_FILE_NAME = "secret.key"
MIN_ADMIN_TOKEN_LENGTH = 16
EGRESS_MODES = ("no-metadata", "public-only", "any")  # the first is the default


class ConfigError(Exception):
    """A setting is missing, malformed or unusable; the message says which and how to fix it."""


@dataclass(frozen=True)
class Settings:
    database_path: Path
    backup_file: Path
    # Secrets from BACKEND_API_KEY_SECRET, first one current; empty means "use secret_file".
    api_key_secrets: tuple[str, ...]
    secret_file: Path
    request_timeout_seconds: float
    admin_token: str | None
    host: str
    port: int
    probe_concurrency: int
    probe_interval_seconds: float
    # Origins (scheme://host[:port]) whose browser pages may call the API, with CORS.
    allowed_origins: frozenset[str] = frozenset()
    # Host names the API answers to besides loopback ones; None = any (only with an admin token).
    allowed_hosts: frozenset[str] | None = None
    idle_timeout_seconds: float = 75.0
    audit_keep: int = 100_000
    # Consecutive results that make a provider down / up.
    down_after: int = 2
    up_after: int = 1
    webhook_timeout_seconds: float = 10.0
    webhook_retry_seconds: float = 5.0  # the base the retry schedule multiplies
    egress: str = "no-metadata"  # which addresses outbound requests may connect to (outbound/egress.py)
    probe_ca_bundle: Path | None = None  # extra CAs (PEM) trusted by probes and webhook deliveries
    cert_warn_days: int = 14
    metrics_enabled: bool = True


def read_environment(env_file: Path | None = None) -> dict[str, str]:
    """The process environment over the values of a `.env` file (the real environment wins)."""
    env_file = env_file or Path.cwd() / ".env"
    from_file = {k: v for k, v in dotenv_values(env_file).items() if v is not None} if env_file.is_file() else {}
    return {**from_file, **os.environ}


def load_settings(env: Mapping[str, str], host: str | None = None, port: int | None = None,
                  backup_file: str | None = None) -> Settings:
    """Build `Settings` from `env`; command-line values (when given) win over the environment."""
    database_path = parse_database_url(env.get("BACKEND_DATABASE_URL") or DEFAULT_DATABASE_URL)
    secrets = tuple(s.strip() for s in env.get("BACKEND_API_KEY_SECRET", "").split(",") if s.strip())
    token = env.get("BACKEND_ADMIN_TOKEN") or None
    if token is not None and (len(token) < MIN_ADMIN_TOKEN_LENGTH or not re.fullmatch(r"[!-~]+", token)):
        raise ConfigError(
            f"BACKEND_ADMIN_TOKEN must be at least {MIN_ADMIN_TOKEN_LENGTH} characters of printable ASCII without "
            "whitespace (a header carries it) "
            "(e.g. BACKEND_ADMIN_TOKEN=$(python -c 'import secrets; print(secrets.token_urlsafe(32))'))")
    settings = Settings(
        database_path=database_path,
        backup_file=Path(backup_file or env.get("BACKEND_BACKUP_FILE") or DEFAULT_BACKUP_FILE),
        api_key_secrets=secrets,
        secret_file=database_path.parent / SECRET_FILE_NAME,
        request_timeout_seconds=_number(env, "BACKEND_REQUEST_TIMEOUT_SECONDS", "10", float, minimum=0.001),
        admin_token=token,
        host=host or env.get("BACKEND_HOST") or "127.0.0.1",
        port=port if port is not None else _number(env, "BACKEND_PORT", "8000", int, minimum=1, maximum=65535),
        probe_concurrency=_number(env, "BACKEND_TEST_CONCURRENCY", "20", int, minimum=1, maximum=1000),
        probe_interval_seconds=_number(env, "BACKEND_CHECK_INTERVAL_SECONDS", "0", float, minimum=0),
        allowed_origins=parse_allowed_origins(env.get("BACKEND_ALLOWED_ORIGINS", "")),
        allowed_hosts=parse_allowed_hosts(env.get("BACKEND_ALLOWED_HOSTS", "")),
        idle_timeout_seconds=_number(env, "BACKEND_IDLE_TIMEOUT_SECONDS", "75", float, minimum=0.001),
        audit_keep=_number(env, "BACKEND_AUDIT_KEEP", "100000", int, minimum=1),
        down_after=_number(env, "BACKEND_DOWN_AFTER", "2", int, minimum=1, maximum=1000),
        up_after=_number(env, "BACKEND_UP_AFTER", "1", int, minimum=1, maximum=1000),
        webhook_timeout_seconds=_number(env, "BACKEND_WEBHOOK_TIMEOUT_SECONDS", "10", float, minimum=0.001,
                                        maximum=3600),
        webhook_retry_seconds=_number(env, "BACKEND_WEBHOOK_RETRY_SECONDS", "5", float, minimum=0.001,
                                      maximum=86_400),
        egress=_choice(env, "BACKEND_EGRESS", EGRESS_MODES),
        probe_ca_bundle=parse_ca_bundle(env.get("BACKEND_PROBE_CA_BUNDLE", "")),
        cert_warn_days=_number(env, "BACKEND_CERT_WARN_DAYS", "14", int, minimum=0, maximum=3650),
        metrics_enabled=_choice(env, "BACKEND_METRICS", ("on", "off")) == "on",
    )
    return settings


def check_listen_address(settings: Settings, tokens_exist: bool) -> None:
    """Without authentication (no BACKEND_ADMIN_TOKEN, no API token) the server listens on loopback only."""
    if settings.admin_token is None and not tokens_exist and not is_loopback_host(settings.host):
        raise ConfigError(
            f"refusing to listen on {settings.host} without authentication: set BACKEND_ADMIN_TOKEN "
            "(e.g. BACKEND_ADMIN_TOKEN=$(python -c 'import secrets; print(secrets.token_urlsafe(32))')), "
            "create an admin token (python server.py --create-token NAME --role admin), or listen on 127.0.0.1")


def parse_database_url(url: str) -> Path:
    """`sqlite:///relative.db`, `sqlite:////absolute.db` or a bare path -> the database file's path."""
    url = url.strip()
    if "://" in url:
        scheme, _, rest = url.partition("://")
        if scheme.lower() != "sqlite":
            raise ConfigError(f"BACKEND_DATABASE_URL must be a sqlite:/// URL or a file path, not a {scheme}:// URL")
        if not rest.startswith("/") or rest == "/":
            raise ConfigError("BACKEND_DATABASE_URL is malformed: write sqlite:///relative/path.db "
                              "or sqlite:////absolute/path.db")
        path = rest[1:]  # sqlite:///x.db -> "x.db"; sqlite:////abs/x.db -> "/abs/x.db"
    else:
        path = url
    if not path or path == ":memory:" or path.endswith("/"):
        raise ConfigError("BACKEND_DATABASE_URL must name a database file, e.g. sqlite:///./data/providers.db")
    return Path(path)


def parse_allowed_origins(raw: str) -> frozenset[str]:
    """`BACKEND_ALLOWED_ORIGINS`: comma-separated exact origins, `scheme://host[:port]` (compared lower-case,
    as browsers send them)."""
    origins = set()
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        parts = urlsplit(item)
        try:
            parts.port  # noqa: B018 (a port that is not a number raises ValueError)
        except ValueError:
            parts = None
        if (parts is None or parts.scheme.lower() not in ("http", "https") or not parts.hostname
                or parts.path or parts.query or parts.fragment or "@" in parts.netloc):
            raise ConfigError(f"BACKEND_ALLOWED_ORIGINS entries must be origins such as https://app.example.com "
                              f"or http://localhost:3000 (scheme://host[:port], no path), not {item!r}")
        origins.add(item.lower())
    return frozenset(origins)


def parse_allowed_hosts(raw: str) -> frozenset[str] | None:
    """`BACKEND_ALLOWED_HOSTS`: comma-separated host names (no port); unset or empty = None."""
    hosts = {part.strip().lower().rstrip(".") for part in raw.split(",") if part.strip()}
    for host in hosts:
        if not re.fullmatch(r"[a-z0-9.\-_]+|\[[0-9a-f:.]+\]", host):
            raise ConfigError(f"BACKEND_ALLOWED_HOSTS entries must be host names or addresses without a port, "
                              f"such as registry.example.com, not {host!r}")
    return frozenset(hosts) or None


def parse_ca_bundle(raw: str) -> Path | None:
    """`BACKEND_PROBE_CA_BUNDLE`: a readable PEM file of certificate authorities; unset or empty = None."""
    if not raw.strip():
        return None
    path = Path(raw.strip())
    try:
        text = path.read_text(encoding="ascii", errors="replace")
    except OSError as exc:
        raise ConfigError(f"BACKEND_PROBE_CA_BUNDLE {path} cannot be read: {exc.strerror}") from None
    if "-----BEGIN CERTIFICATE-----" not in text:
        raise ConfigError(f"BACKEND_PROBE_CA_BUNDLE {path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)")
    return path


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str:
    """One of `choices` (the first is the default), compared case-insensitively."""
    raw = (env.get(name) or choices[0]).strip()
    if raw.lower() not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, not {raw!r}")
    return raw.lower()


def is_loopback_host(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _number(env: Mapping[str, str], name: str, default: str, kind: type, minimum: float,
            maximum: float | None = None):
    raw = (env.get(name) or default).strip()
    try:
        value = kind(raw)
    except ValueError:
        value = None
    kind_name = "a whole number" if kind is int else "a number"
    if value is None or not math.isfinite(value) or value < minimum or (maximum is not None and value > maximum):
        bounds = f"at least {minimum:g}" if maximum is None else f"from {minimum:g} to {maximum:g}"
        raise ConfigError(f"{name} must be {kind_name} {bounds}, not {raw!r}")
    return value
