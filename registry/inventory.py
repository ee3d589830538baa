"""The provider inventory and its backup mirror.

Every change runs in a transaction that also rewrites the backup file before committing, so a
change is either in both the database and the backup, or in neither: a backup that cannot be
written rolls the change back, and a commit that fails puts the backup back as it was. Changes go
through the group commit (`group_commit.py`); reads through the read cache (`read_cache.py`). Keys
are encrypted on the way in and leave as plaintext only through `decrypted_api_key`, for probes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from registry import backup_file, portable, restore
from registry.access import SYSTEM, Actor
from registry.audit import AuditLog
from registry.errors import Conflict, store_errors_translated
from registry.events import EventLog
from registry.fields import normalized, with_defaults
from registry.group_commit import ApplyChange, Change, GroupCommit
from registry.health import HealthPolicy
from registry.keyring import Keyring, UndecryptableKey
from registry.provider_types import PROVIDER_TYPES
from registry.read_cache import CommitWatcher, ReadCache
from registry.restore import RestorePreview
from registry.timestamps import utc_timestamp
from store import api_tokens, probe_history, provider_rows
from store import events as event_rows
from store.database import transaction
from store.provider_rows import NO_FILTER, Provider, ProviderFilter

log = logging.getLogger("provider_registry")
_UNREADABLE = object()
DEFAULT_AUDIT_KEEP = 100_000


class RestorePending(Conflict):
    """The database is empty but the backup file holds providers (the database was deleted or
    emptied): a change would overwrite that backup, so only a restore is allowed."""

    def __init__(self, backup_path: Path, count: int | None):
        held = f"holds {count} providers" if count is not None else "cannot be read (truncated or corrupted?)"
        super().__init__(
            f"The database is empty but the backup file {backup_path} {held}, so changes are refused until an "
            "inventory is restored: POST /api/admin/providers/restore with an empty body or a backup document, "
            "or run python server.py --restore; or, to start afresh, move the backup file away and restart "
            "the server.")
        self.count = count


class Inventory:
    def __init__(self, conn: sqlite3.Connection, keyring: Keyring, backup_path: Path, audit: AuditLog | None = None,
                 health: HealthPolicy | None = None, events: EventLog | None = None):
        self._conn = conn
        self.keyring = keyring
        self.backup_path = backup_path
        self.audit = audit or AuditLog(conn, DEFAULT_AUDIT_KEEP)
        self.health = health or HealthPolicy()
        self.events = events or EventLog(conn)
        # Told (outcome "success" or "failure", seconds) after every write of a backup file: metrics.
        self.observe_backup_write: Callable[[str, float], None] | None = None
        provider_rows.use_key_preview(conn, keyring.preview)
        # Each provider's backup record JSON as committed, in id order: a change re-renders only
        # the records it touched, and the backup file is these joined. None until first needed.
        self._records: dict[int, bytes] | None = None
        self._cache = ReadCache()
        self._watcher = CommitWatcher(conn)
        self._group = GroupCommit(lambda: self._mirrored_change(set()))
        # In restore-pending mode, (how many providers the backup file holds, or None when it
        # cannot be read); else None. See check_restore_pending.
        self._pending_restore: tuple[int | None] | None = None

    # -- reads ---------------------------------------------------------------------------------

    def list(self, filters: ProviderFilter = NO_FILTER) -> list[Provider]:
        """Every provider matching `filters`, ordered by id."""
        return provider_rows.list_providers(self._conn, filters)

    def get(self, provider_id: int) -> Provider:
        with store_errors_translated():
            return provider_rows.get_provider(self._conn, provider_id)

    def first_provider_with_key(self) -> Provider | None:
        return provider_rows.first_provider_with_key(self._conn)

    def list_json(self, is_active: bool | None = None, provider_type: str | None = None,
                  name_contains: str | None = None, limit: int | None = None, offset: int = 0,
                  ids: frozenset[int] | None = None) -> tuple[list[bytes], int]:
        """A page of providers as API JSON (UTF-8), ordered by id, and the total matching; `ids`
        limits them to a token's scope."""
        filters = ProviderFilter(is_active=is_active, type=provider_type, name_contains=name_contains, ids=ids)
        self._follow_other_processes(reading=True)
        ids, total = provider_rows.list_provider_ids(self._conn, filters, limit, offset)
        texts = {i: text for i in ids if (text := self._cache.get(i)) is not None}
        if len(texts) < len(ids):
            fresh = provider_rows.providers_json(self._conn, [i for i in ids if i not in texts])
            texts.update(fresh)
            self._cache.remember(fresh)
        return [texts[i] for i in ids if i in texts], total  # one deleted by another process meanwhile is gone

    def get_json(self, provider_id: int) -> bytes:
        """One provider as API JSON (UTF-8)."""
        self._follow_other_processes(reading=True)
        text = self._cache.get(provider_id)
        if text is None:
            with store_errors_translated():
                text = provider_rows.provider_json(self._conn, provider_id)
            self._cache.remember({provider_id: text})
        return text

    def history(self, provider_id: int, limit: int) -> list[dict[str, Any]]:
        with store_errors_translated():
            return probe_history.probe_history(self._conn, provider_id, limit)

    def decrypted_api_key(self, provider: Provider) -> str | None:
        """The plaintext key for an outbound request; raises UndecryptableKey."""
        if provider.api_key_ciphertext is None:
            return None
        return self.keyring.decrypt(provider.api_key_ciphertext)

    # -- restore-pending mode -------------------------------------------------------------------

    def check_restore_pending(self) -> RestorePending | None:
        """Look again whether the database is empty next to a backup file that holds providers;
        while it is, every change but a restore is refused (`ensure_writable`)."""
        self._pending_restore = None
        if provider_rows.provider_count(self._conn) == 0 and self.backup_path.exists():
            try:
                held = backup_file.read_backup_file(self.backup_path)
            except backup_file.BackupUnreadable:
                held = _UNREADABLE
            if held is _UNREADABLE or not isinstance(held, dict) or not isinstance(held.get("providers", []), list):
                # Truncated, corrupted or of another shape, and not empty: it may be all that is left.
                if self.backup_path.stat().st_size > 0:
                    self._pending_restore = (None,)
            elif held.get("providers"):
                self._pending_restore = (len(held["providers"]),)
        return self._restore_pending()

    @property
    def restore_pending(self) -> bool:
        self._follow_other_processes()
        return self._pending_restore is not None

    def ensure_writable(self) -> None:
        """Raises RestorePending while the database is empty next to a backup that holds providers."""
        self._follow_other_processes()
        pending = self._restore_pending()
        if pending is not None:
            raise pending

    def _restore_pending(self) -> RestorePending | None:
        # A new exception each time: raising one instance again would keep growing its traceback.
        return None if self._pending_restore is None else RestorePending(self.backup_path, self._pending_restore[0])

    # -- changes (each mirrored into the backup) -----------------------------------------------

    async def create(self, body: dict[str, Any], actor: Actor = SYSTEM) -> int:
        """Create from a validated create body; returns the new provider's id."""
        fields = with_defaults(body)
        named = sorted(name for name, value in body.items() if not (name == "api_key" and value is None))
        now = utc_timestamp()
        values = {"name": fields["name"], "type": fields["type"], "base_url": fields["base_url"],
                  "api_key_ciphertext": self._encrypt(fields["api_key"]), "models": fields["models"],
                  "is_active": fields["is_active"], "created_at": now, "updated_at": now}

        def insert(change: Change) -> int:
            provider_id = provider_rows.insert_provider(change.conn, values)
            self.audit.record(change.conn, actor, "provider.create", "provider", provider_id, values["name"], named)
            change.touched.add(provider_id)
            return provider_id

        return await self._submit(insert)

    async def update(self, provider_id: int, changes: dict[str, Any], actor: Actor = SYSTEM,
                     action: str = "provider.update") -> None:
        """Apply a validated PATCH body. Fields equal to what is stored then are not changes: a
        PATCH that changes nothing writes nothing and keeps `updated_at`."""
        wanted = {name: normalized(name, value) for name, value in changes.items()}
        new_ciphertext = self._encrypt(wanted["api_key"]) if wanted.get("api_key") is not None else None

        def apply(change: Change) -> None:
            current = provider_rows.get_provider(change.conn, provider_id)  # as it is inside the transaction
            values = {}
            for name, value in wanted.items():
                if name == "api_key":
                    if value is None and current.api_key_ciphertext is not None:
                        values["api_key_ciphertext"] = None
                    elif value is not None and value != self._plaintext_or_none(current):
                        values["api_key_ciphertext"] = new_ciphertext
                elif getattr(current, name) != value:
                    values[name] = value
            if values:
                provider_rows.update_provider(change.conn, provider_id, {**values, "updated_at": utc_timestamp()})
                self.audit.record(change.conn, actor, action, "provider", provider_id, values.get("name", current.name),
                                  ["api_key" if name == "api_key_ciphertext" else name for name in values])
                change.touched.add(provider_id)

        await self._submit(apply)

    async def delete(self, provider_id: int, actor: Actor = SYSTEM) -> None:
        def apply(change: Change) -> None:
            name = provider_rows.get_provider(change.conn, provider_id).name
            provider_rows.delete_provider(change.conn, provider_id)
            api_tokens.remove_from_scopes(change.conn, {provider_id})
            self.audit.record(change.conn, actor, "provider.delete", "provider", provider_id, name)
            change.touched.add(provider_id)

        await self._submit(apply)

    async def record_probe_results(self, results: dict[int, dict[str, Any]]) -> None:
        """Store probe results (as `last_test` and in history) and count them towards each
        provider's health, raising an event on every change of state, all in the same group
        commit. Providers deleted while they were being probed are skipped."""
        def apply(change: Change) -> None:
            current = event_rows.read_health(change.conn, results)
            counted, events = [], []
            for provider_id, result in results.items():
                if provider_id not in current:
                    continue
                name, before = current[provider_id]
                after = self.health.after(before, result)
                if after.state != before.state:
                    events.append({"provider_id": provider_id, "provider_name": name,
                                   "type": f"provider.{after.state}", "at": utc_timestamp(), "from": before.state,
                                   "to": after.state, "reason": after.reason, "result": result})
                certificate = self.health.certificate_to_warn_about(after, result)
                if certificate is not None:
                    after = dataclasses.replace(after, warned_certificate=certificate)
                    tls = result["tls"]
                    events.append({"provider_id": provider_id, "provider_name": name,
                                   "type": "provider.cert_expiring", "at": utc_timestamp(), "from": None,
                                   "to": None, "result": result,
                                   "reason": f"the TLS certificate of {tls['subject']} expires on {tls['not_after']} "
                                             f"({tls['days_left']} days left)"})
                counted.append((provider_id, result, after))
                change.touched.add(provider_id)
            probe_history.add_probe_results(change.conn, counted)
            self.events.raise_events(change.conn, events)

        await self._submit(apply)

    def restore(self, document: Any, actor: Actor = SYSTEM, passphrase: str | None = None) -> int:
        """Replace the whole inventory with a backup document's, keeping ids; nothing changes
        unless the whole document passes `restore.check_document` (a portable export's keys open
        with `passphrase`). Ends restore-pending mode."""
        return self._restore_records(restore.check_document(document, self.keyring, passphrase), actor)

    def _restore_records(self, records: list[dict[str, Any]], actor: Actor) -> int:
        with self._mirrored_change(None) as change:
            self.audit.record(change.conn, actor, "inventory.restore", "inventory",
                              target_name=f"{len(records)} providers")
            previous_sequence, before = provider_rows.id_sequence(change.conn), provider_rows.provider_ids(change.conn)
            provider_rows.delete_all_providers(change.conn)
            for record in records:
                values = {k: v for k, v in record.items() if k not in ("id", "api_key")}
                values["api_key_ciphertext"] = record["api_key"]
                with store_errors_translated():
                    provider_rows.insert_provider(change.conn, values, provider_id=int(record["id"]))
            provider_rows.restart_id_sequence(change.conn, previous_sequence)
            api_tokens.remove_from_scopes(change.conn, before - {int(r["id"]) for r in records})
        self._pending_restore = None
        return len(records)

    def preview_restore(self, document: Any, passphrase: str | None = None) -> RestorePreview:
        """What `restore(document)` would change; validates exactly as restore does."""
        return restore.preview(restore.check_document(document, self.keyring, passphrase), self.list(),
                               self.keyring)

    async def restore_from(self, body: bytes, actor: Actor = SYSTEM, passphrase: str | None = None) -> int:
        """Restore from a request body holding a backup document, or from the backup file when the
        body is empty. The document is parsed and checked on a worker thread (a large one takes a
        while), the event loop serving meanwhile."""
        records = await asyncio.to_thread(self._checked_records, body, passphrase)
        return self._restore_records(records, actor)

    async def preview_restore_from(self, body: bytes, passphrase: str | None = None) -> RestorePreview:
        records = await asyncio.to_thread(self._checked_records, body, passphrase)
        return restore.preview(records, self.list(), self.keyring)

    def _checked_records(self, body: bytes, passphrase: str | None) -> list[dict[str, Any]]:
        if body.strip():
            document = backup_file.parse_document(body, source="the request body")
        else:
            document = backup_file.read_backup_file(self.backup_path)
        return restore.check_document(document, self.keyring, passphrase)

    def replace_ciphertexts(self, ciphertexts: list[tuple[int, str]]) -> None:
        """Store re-encrypted keys (key rotation), in one transaction mirrored into the backup."""
        with self._mirrored_change({provider_id for provider_id, _ in ciphertexts}) as change:
            provider_rows.set_api_key_ciphertexts(change.conn, ciphertexts)

    # -- the backup ----------------------------------------------------------------------------

    def export_json(self, actor: Actor | None = None) -> bytes:
        """The backup document of the whole inventory, read from the database; an export for an
        actor (a person, not the backup mirror) is on record."""
        if actor is not None:
            with transaction(self._conn) as conn:
                self.audit.record(conn, actor, "inventory.export", "inventory")
        records = (record for _, record in provider_rows.backup_records_json(self._conn))
        return b"".join(backup_file.document_parts(records))

    async def export_portable(self, passphrase: str, actor: Actor) -> bytes:
        """The backup document with its keys encrypted under `passphrase` instead of the server's
        secret (`portable.py`), on record. The keys are re-encrypted on a worker thread."""
        portable.check_passphrase(passphrase)
        with transaction(self._conn) as conn:
            self.audit.record(conn, actor, "inventory.export", "inventory", target_name="portable export")
        document = json.loads(self.export_json())
        wrapped = await asyncio.to_thread(portable.wrap, document, self.keyring, passphrase)
        return json.dumps(wrapped, ensure_ascii=False).encode("utf-8")

    def write_portable_export(self, path: Path, passphrase: str, actor: Actor) -> int:
        """`export_portable` into a file (never the backup file the server mirrors to); returns
        how many providers."""
        if _same_file(path, self.backup_path):
            raise Conflict(f"A portable export does not go to the backup file {self.backup_path}, which mirrors the "
                           "database under the server's secret: name another file.")
        portable.check_passphrase(passphrase)
        with transaction(self._conn) as conn:
            self.audit.record(conn, actor, "inventory.export", "inventory", target_name=f"portable export {path}")
        wrapped = portable.wrap(json.loads(self.export_json()), self.keyring, passphrase)
        backup_file.write_atomically(path, [json.dumps(wrapped, ensure_ascii=False).encode("utf-8")])
        return len(wrapped["providers"])

    def write_backup(self, path: Path | None = None, actor: Actor | None = None) -> int:
        """Write the backup document to `path` (default: the backup file); returns how many providers.
        Raises RestorePending rather than overwrite a backup that holds providers with an empty inventory."""
        if path is None or _same_file(path, self.backup_path):
            path = None
            pending = self.check_restore_pending()
            if pending is not None:
                raise pending
        if actor is not None:
            with transaction(self._conn) as conn:
                self.audit.record(conn, actor, "inventory.export", "inventory",
                                  target_name=str(path or self.backup_path))
        records = dict(provider_rows.backup_records_json(self._conn))
        self._write_backup_file(path or self.backup_path, records.values())
        if path is None:
            self._records = records
        return len(records)

    def credentials(self, provider_id: int, actor: Actor) -> dict[str, Any]:
        """What an application needs to call a provider: its base URL, plaintext key, and the headers
        and query its type authenticates with. The read is on record (committed) before the key is
        returned. Inactive providers and keys no secret decrypts are 409."""
        provider = self.get(provider_id)
        if not provider.is_active:
            raise Conflict(f"Provider {provider_id} is inactive: applications should not use it.")
        api_key = self.decrypted_api_key(provider)  # UndecryptableKey is a 409
        provider_type = PROVIDER_TYPES[provider.type]
        with transaction(self._conn) as conn:
            self.audit.record(conn, actor, "credentials.read", "provider", provider.id, provider.name)
        return {"id": provider.id, "name": provider.name, "type": provider.type, "base_url": provider.base_url,
                "api_key": api_key, "headers": provider_type.auth_headers(api_key),
                "query": provider_type.credential_query}

    def reconcile_backup(self) -> str | None:
        """At start-up, make the backup mirror the database again (a crash may have left it one
        change ahead). Never replaces a backup that holds providers with an empty inventory: that
        is a deleted or emptied database next to a backup worth restoring (restore-pending mode).
        Returns a warning, or None."""
        backup_file.remove_stale_temp_files(self.backup_path)
        pending = self.check_restore_pending()
        if pending is not None:
            return f"restore pending: {pending}"
        self.write_backup()
        return None

    # -- internals -----------------------------------------------------------------------------

    def _submit(self, apply: ApplyChange):
        """Queue a change for the next group commit (RestorePending at once in that mode)."""
        self.ensure_writable()

        def translated(change: Change) -> Any:
            with store_errors_translated():
                return apply(change)

        return self._group.submit(translated)

    @contextmanager
    def _mirrored_change(self, touched: set[int] | None) -> Iterator[Change]:
        """A transaction whose end rewrites the backup file before committing. `touched` names the
        providers the change may affect (the body adds to it); None means any (a restore), and
        then every record is re-rendered."""
        everything = touched is None
        committed_records = self._records
        backup_written = False
        change = Change(self._conn, set(touched or ()))
        try:
            with transaction(self._conn):
                # Under the write lock: no other process can commit between this look and COMMIT.
                self._follow_other_processes()
                committed_records = self._records
                yield change
                if everything or change.touched:  # a group whose changes all failed leaves the backup alone
                    records = self._records_after(change, everything)
                    backup_written = True  # from here on, even a failing write may have replaced the file
                    self._write_backup_file(self.backup_path, records.values())
        except BaseException:
            if backup_written:
                self._put_backup_back(committed_records)
            raise
        if everything:
            # Not kept after a restore: rendered beside the whole parsed document, they would pin its
            # freed memory; the next change renders them afresh.
            self._records = None
            self._cache.clear()
        elif change.touched:
            self._records = records
            self._cache.forget(change.touched)

    def _records_after(self, change: Change, everything: bool) -> dict[int, bytes]:
        """The backup records as they will be once `change` commits."""
        if everything or self._records is None:
            return dict(provider_rows.backup_records_json(change.conn))
        records = dict(self._records)  # the committed state stays intact until COMMIT
        fresh = dict(provider_rows.backup_records_json(change.conn, change.touched))
        for provider_id in sorted(change.touched):
            if provider_id in fresh:
                records[provider_id] = fresh[provider_id]  # new ids are the highest: order holds
            else:
                records.pop(provider_id, None)
        return records

    def _put_backup_back(self, committed_records: dict[int, bytes] | None) -> None:
        """After a commit that failed once the backup held the change: the backup mirrors the
        database as committed again."""
        try:
            records = committed_records if committed_records is not None else dict(
                provider_rows.backup_records_json(self._conn))
            self._write_backup_file(self.backup_path, records.values())
        except Exception as exc:  # the original failure is what the caller must see
            log.error("the backup file %s could not be put back after a failed commit: %s", self.backup_path, exc)

    def _write_backup_file(self, path: Path, records) -> None:
        """Write the backup document of `records`, and tell `observe_backup_write` how it went."""
        started = time.perf_counter()
        try:
            backup_file.write_atomically(path, backup_file.document_parts(records))
        except BaseException:
            if self.observe_backup_write is not None:
                self.observe_backup_write("failure", time.perf_counter() - started)
            raise
        if self.observe_backup_write is not None:
            self.observe_backup_write("success", time.perf_counter() - started)

    def _follow_other_processes(self, reading: bool = False) -> None:
        """After a commit by another process, nothing kept from before it is trusted."""
        if self._watcher.changed_elsewhere(reading):
            self._cache.clear()
            self._records = None
            # `server.py --restore` may have ended restore-pending mode, or emptied the database.
            self.check_restore_pending()

    def _encrypt(self, api_key: str | None) -> str | None:
        return None if api_key is None else self.keyring.encrypt(api_key)

    def _plaintext_or_none(self, provider: Provider) -> str | None:
        try:
            return self.decrypted_api_key(provider)
        except UndecryptableKey:
            return None


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)
