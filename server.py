"""Provider registry: serve the REST API, or export / restore the backup from the command line.

    python server.py [--host H] [--port P]
    python server.py --export [--backup-file F] [--passphrase-file P]
    python server.py --restore [--backup-file F] [--dry-run] [--passphrase-file P]
    python server.py --create-token NAME --role admin|viewer|consumer [--providers ID,ID] [--expires-in-days N]
    python server.py --list-tokens | --revoke-token NAME
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import re
import signal
import sqlite3
import sys
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tornado.ioloop
import tornado.web

try:
    import uvloop
except ImportError:  # not built for Windows; run_event_loop falls back to asyncio's own loop
    uvloop = None

from handlers import AccessLog, NotFoundHandler, RequestMetrics, RequestsInFlight, default_handlers, ui_settings
from handlers.listener import HTTPListener, raise_open_file_limit
from handlers.request_guard import RequestGuard
from outbound.client import USER_AGENT as OUTBOUND_USER_AGENT
from outbound.client import OutboundClient
from registry import backup_file
from registry.access import CLI, ROLES
from registry.audit import AuditLog
from registry.config import ConfigError, Settings, check_listen_address, load_settings, read_environment
from registry.errors import RegistryError
from registry.events import EventLog
from registry.health import HealthPolicy
from registry.housekeeping import prepare_at_start_up
from registry.inventory import Inventory
from registry.keyring import Keyring, SecretFileError, load_or_create_secret
from registry.memory import release_freed_memory, return_large_blocks_promptly, tune_garbage_collector
from registry.metrics import Metrics
from registry.probes import ProbeService
from registry.tokens import TokenService
from registry.webhook_delivery import MAX_ANSWER_BYTES, TRANSFER_SLOTS, WebhookDelivery
from registry.webhooks import WebhookService
from store.database import (DatabaseError, apply_migrations, connect, corruption_message, is_corruption,
                            load_migrations)

log = logging.getLogger("provider_registry")
SHUTDOWN_GRACE_SECONDS = 10.0
SINGLE_PROBE_SLOTS = 10


class StartupError(Exception):
    """Something outside the code stops start-up; one line for stderr."""


@dataclass
class Runtime:
    settings: Settings
    conn: sqlite3.Connection
    inventory: Inventory
    tokens: TokenService
    audit: AuditLog
    events: EventLog


@dataclass
class Service:
    """What serving adds to the runtime: the Application and what runs beside it."""
    app: tornado.web.Application
    probes: ProbeService
    webhooks: WebhookService
    clients: tuple[OutboundClient, ...]

    def close(self) -> None:
        for client in self.clients:
            client.close()


class OneLineErrorParser(argparse.ArgumentParser):
    """Bad arguments are one line on stderr and exit code 1, like every other refusal."""

    def error(self, message: str):
        print(f"error: {message} (see python server.py --help)", file=sys.stderr)
        sys.exit(1)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = OneLineErrorParser(
        prog="server.py", description="Self-hosted registry of LLM providers (REST API, JSON backup).")
    parser.add_argument("--host", help="listen address (default: BACKEND_HOST or 127.0.0.1)")
    parser.add_argument("--port", type=int, help="listen port (default: BACKEND_PORT or 8000)")
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--export", action="store_true", help="write the backup file and exit")
    action.add_argument("--restore", action="store_true", help="restore the database from the backup file and exit")
    action.add_argument("--create-token", metavar="NAME", help="create an API token, print its secret and exit")
    action.add_argument("--list-tokens", action="store_true", help="list the API tokens (no secrets) and exit")
    action.add_argument("--revoke-token", metavar="NAME", help="revoke an API token and exit")
    parser.add_argument("--role", choices=ROLES, help="with --create-token: the token's role")
    parser.add_argument("--providers", metavar="ID,ID", help="with --create-token: the provider ids it may see")
    parser.add_argument("--expires-in-days", type=int, metavar="N", help="with --create-token: its lifetime")
    parser.add_argument("--backup-file", help="backup file to export to / restore from "
                                              "(default: BACKEND_BACKUP_FILE)")
    parser.add_argument("--dry-run", action="store_true",
                        help="with --restore: report what would change, change nothing")
    parser.add_argument("--passphrase-file", metavar="P",
                        help="with --export: write a portable export, its keys under the passphrase in file P "
                             "(to --backup-file, not the server's backup file); with --restore: the passphrase "
                             "of a portable export")
    args = parser.parse_args(argv)
    if args.create_token is not None and args.role is None:
        parser.error("--create-token needs --role (admin, viewer or consumer)")
    if (args.role or args.providers or args.expires_in_days is not None) and args.create_token is None:
        parser.error("--role, --providers and --expires-in-days go with --create-token")
    if args.providers is not None and not re.fullmatch(r"[0-9]+(,[0-9]+)*", args.providers):
        parser.error("--providers takes provider ids separated by commas, such as 1,4,7")
    if args.dry_run and not args.restore:
        parser.error("--dry-run goes with --restore")
    if args.passphrase_file is not None and not (args.export or args.restore):
        parser.error("--passphrase-file goes with --export or --restore")
    if args.port is not None and not 1 <= args.port <= 65535:
        parser.error("--port must be from 1 to 65535")
    return args


def open_runtime(settings: Settings) -> Runtime:
    """Data directories, secret, database (migrated) and registry; raises StartupError."""
    for directory in {settings.database_path.parent, settings.backup_file.parent}:
        try:
            backup_file.make_private_directories(directory)
        except OSError as exc:
            raise StartupError(f"cannot create the data directory {directory}: {exc.strerror}") from None
        if not os.access(directory, os.W_OK | os.X_OK):
            raise StartupError(f"the data directory {directory} is not writable")
    try:
        secrets = settings.api_key_secrets or (load_or_create_secret(settings.secret_file),)
        conn = connect(settings.database_path)
        apply_migrations(conn, load_migrations())
    except (SecretFileError, DatabaseError) as exc:
        raise StartupError(str(exc)) from None
    audit = AuditLog(conn, settings.audit_keep)
    events = EventLog(conn)
    inventory = Inventory(conn, Keyring(secrets), settings.backup_file, audit,
                          HealthPolicy(settings.down_after, settings.up_after, settings.cert_warn_days), events)
    return Runtime(settings, conn, inventory, TokenService(conn, audit, settings.admin_token), audit, events)


def make_app(runtime: Runtime, probes: ProbeService, webhooks: WebhookService,
             metrics: Metrics | None = None) -> tornado.web.Application:
    return tornado.web.Application(
        default_handlers,
        default_handler_class=NotFoundHandler,
        inventory=runtime.inventory,
        probes=probes,
        tokens=runtime.tokens,
        audit=runtime.audit,
        events=runtime.events,
        webhooks=webhooks,
        request_guard=RequestGuard(runtime.settings.allowed_origins, runtime.settings.allowed_hosts),
        routes=tuple(default_handlers),
        log_function=AccessLog(),
        requests_in_flight=RequestsInFlight(),
        outbound_user_agent=OUTBOUND_USER_AGENT,  # what the API refuses: requests this registry sent itself
        metrics=metrics,
        observe_request=None if metrics is None else RequestMetrics(metrics.registry),
        **ui_settings,
    )


def build_service(runtime: Runtime) -> Service:
    """The outbound clients, the probe and webhook services, the metrics (unless BACKEND_METRICS=off)
    and the Application, then start-up housekeeping."""
    settings = runtime.settings
    # Bulk tests hold at most probe_concurrency transfers; the rest are kept free for single probes.
    ca_bundle = None if settings.probe_ca_bundle is None else str(settings.probe_ca_bundle)
    probe_client = OutboundClient(settings.request_timeout_seconds,
                                  max_clients=settings.probe_concurrency + SINGLE_PROBE_SLOTS,
                                  egress=settings.egress, ca_bundle=ca_bundle)
    probes = ProbeService(runtime.inventory, probe_client, settings.probe_concurrency)
    webhook_client = OutboundClient(settings.webhook_timeout_seconds, max_clients=TRANSFER_SLOTS,
                                    fresh_connections=False, egress=settings.egress, ca_bundle=ca_bundle,
                                    max_answer_bytes=MAX_ANSWER_BYTES)
    delivery = WebhookDelivery(runtime.conn, runtime.inventory.keyring, webhook_client,
                               settings.webhook_retry_seconds)
    runtime.events.on_queued = delivery.wake
    webhooks = WebhookService(runtime.conn, runtime.inventory.keyring, runtime.audit, delivery)
    metrics = Metrics(runtime.inventory) if settings.metrics_enabled else None
    if metrics is not None:  # before housekeeping, whose backup write counts too
        probes.observe_probe = metrics.observe_probe
        runtime.inventory.observe_backup_write = metrics.observe_backup_write
        delivery.observe_delivery = metrics.observe_delivery
    prepare_at_start_up(runtime.inventory, webhooks)
    return Service(make_app(runtime, probes, webhooks, metrics), probes, webhooks, (probe_client, webhook_client))


async def serve(runtime: Runtime) -> None:
    settings = runtime.settings
    raise_open_file_limit()
    return_large_blocks_promptly()
    service = build_service(runtime)
    app, probes = service.app, service.probes
    tune_garbage_collector()
    release_freed_memory()  # what start-up housekeeping (rendering the backup) used
    # The API's body limit (1 MiB, a JSON 413) is enforced by its handlers, which see the headers
    # first; max_body_size bounds what Tornado buffers for the few routes that do not stream.
    # idle_connection_timeout is also Tornado's header timeout: it closes idle keep-alive connections
    # and drops those whose request headers have not all arrived in time; body_timeout, a stalled body.
    # A 4 KiB read chunk holds any usual request (bench/RESULTS.md has why not 64 KiB).
    server = HTTPListener(app, idle_connection_timeout=settings.idle_timeout_seconds,
                          body_timeout=settings.idle_timeout_seconds, max_body_size=64 * 1024 * 1024, chunk_size=4096)
    try:
        server.listen(settings.port, settings.host, backlog=1024)
    except OSError as exc:
        raise StartupError(f"cannot listen on {settings.host}:{settings.port}: {exc.strerror}") from None
    probes.start_schedule(settings.probe_interval_seconds)
    service.webhooks.delivery.start()  # messages left pending by a crash or a stop go out now
    access_log = app.settings["log_function"]
    flush_access_log = tornado.ioloop.PeriodicCallback(access_log.flush, 500)
    flush_access_log.start()
    flush_denied = tornado.ioloop.PeriodicCallback(runtime.audit.flush_denied, 1000)
    flush_denied.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    log.info("listening on http://%s:%d (database %s, backup %s, event loop %s)", settings.host, settings.port,
             settings.database_path, settings.backup_file, type(loop).__module__.split(".")[0])
    await stop.wait()
    log.info("shutting down: no new connections, finishing requests in flight")
    server.stop()
    await probes.stop_schedule()
    await service.webhooks.delivery.stop()
    deadline = time.monotonic() + SHUTDOWN_GRACE_SECONDS
    while app.settings["requests_in_flight"].count and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await server.close_all_connections()
    flush_access_log.stop()
    access_log.flush()
    flush_denied.stop()
    runtime.audit.flush_denied()
    service.close()


def run_event_loop(main: Coroutine[Any, Any, None]) -> None:
    """Serve on uvloop where it is installed (every platform but Windows): the same asyncio API on
    libuv, with the loop's own work (scheduling callbacks, timers, watching sockets) in C: fewer
    instructions per GET (bench/RESULTS.md). Elsewhere, asyncio's loop."""
    if uvloop is None:
        asyncio.run(main)
    else:
        uvloop.run(main)


def run_export(runtime: Runtime, target: Path, passphrase: str | None = None) -> str:
    if passphrase is not None:
        count = runtime.inventory.write_portable_export(target, passphrase, CLI)
        return f"exported {count} providers to {target}, their keys under the passphrase (a portable export)"
    return f"exported {runtime.inventory.write_backup(target, actor=CLI)} providers to {target}"


def read_passphrase_file(path: str) -> str:
    """The passphrase in `path`: its text (UTF-8) without the line break an editor leaves at the end."""
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except OSError as exc:
        raise StartupError(f"cannot read the passphrase file {path}: {exc.strerror}") from None
    except UnicodeError:
        raise StartupError(f"the passphrase file {path} is not UTF-8 text") from None
    return text.removesuffix("\n").removesuffix("\r")


def run_list_tokens(runtime: Runtime) -> str:
    lines = [f"{'id':>4}  {'name':30} {'role':9} {'providers':12} {'expires':24} last used"]
    for token in runtime.tokens.list():
        scope = "all" if token["providers"] is None else ",".join(map(str, token["providers"]))
        lines.append(f"{token['id']:>4}  {token['name'][:30]:30} {token['role']:9} {scope[:12]:12} "
                     f"{token['expires_at'] or 'never':24} {token['last_used_at'] or 'never'}")
    return "\n".join(lines)


def run_restore(runtime: Runtime, source: Path, dry_run: bool, passphrase: str | None = None) -> str:
    document = backup_file.read_backup_file(source)
    if dry_run:
        preview = runtime.inventory.preview_restore(document, passphrase)
        lines = [f"dry run: restoring {source} would add {len(preview.added)}, remove {len(preview.removed)}, "
                 f"change {len(preview.changed)} and leave {preview.unchanged} providers unchanged"]
        lines += [f"  add: {name}" for name in preview.added]
        lines += [f"  remove: {name}" for name in preview.removed]
        lines += [f"  change: {c['name']} ({', '.join(c['fields'])})" for c in preview.changed]
        return "\n".join(lines)
    restored = runtime.inventory.restore(document, CLI, passphrase)
    return f"restored {restored} providers from {source}; backup written to {runtime.inventory.backup_path}"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = load_settings(read_environment(), host=args.host, port=args.port,
                                 backup_file=None if args.restore or args.passphrase_file else args.backup_file)
        serving = not (args.export or args.restore or args.create_token or args.list_tokens or args.revoke_token)
        if serving and not settings.database_path.exists():
            check_listen_address(settings, tokens_exist=False)  # before anything is created
        runtime = open_runtime(settings)
        try:
            if args.create_token is not None:
                providers = None if args.providers is None else [int(i) for i in args.providers.split(",")]
                _, secret = runtime.tokens.create(args.create_token, args.role, providers, args.expires_in_days, CLI)
                print(secret)
                return 0
            if args.list_tokens:
                print(run_list_tokens(runtime))
                return 0
            if args.revoke_token is not None:
                name = runtime.tokens.revoke(None, CLI, name=args.revoke_token, allow_last_admin=True)
                print(f"revoked the token {name!r}")
                return 0
            if args.export or args.restore:
                file_arg = Path(args.backup_file) if args.backup_file else settings.backup_file
                passphrase = None if args.passphrase_file is None else read_passphrase_file(args.passphrase_file)
                if args.export:
                    print(run_export(runtime, file_arg, passphrase))
                else:
                    print(run_restore(runtime, file_arg, args.dry_run, passphrase))
                return 0
            check_listen_address(settings, tokens_exist=runtime.tokens.auth_enabled)
            run_event_loop(serve(runtime))
        finally:
            runtime.conn.close()
    except (ConfigError, StartupError, RegistryError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except sqlite3.Error as exc:
        if is_corruption(exc):
            print(f"error: {corruption_message(settings.database_path, exc)}", file=sys.stderr)
        else:  # e.g. --restore while a running server holds the write lock
            print(f"error: the database {settings.database_path} cannot be written now ({exc}); "
                  "is the server running? Stop it first or restore through the API", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
