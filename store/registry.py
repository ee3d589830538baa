"""The provider inventory as the rest of the program sees it.

Every change runs in a transaction that also rewrites the backup file before committing, so a
change is either in both the database and the backup, or in neither (a failed backup write rolls
the change back). Keys are encrypted here on the way in and never leave as plaintext except
through `decrypted_api_key`, which the prober uses.

Creates, updates, deletes and test results are committed in groups: the changes requested while
the event loop is busy are applied together, each in its own savepoint (one failing does not undo
the others), with one backup write and one commit for the group. With 32 clients writing at once
that is several times the throughput of one transaction, fsync and backup write per change.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from crypto import Keyring, UndecryptableKey
from schemas import normalize_name, with_defaults
from store import backup, providers
from store.database import transaction
from store.providers import NO_FILTER, Provider, ProviderFilter
from timestamps import utc_timestamp

log = logging.getLogger("provider_registry")

_RESTORE_COMPARED_FIELDS = ("name", "type", "base_url", "api_key", "models", "is_active",
                            "created_at", "updated_at", "last_test")


@dataclass
class RestorePreview:
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[dict[str, Any]] = field(default_factory=list)
    unchanged: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"dry_run": True, "added": self.added, "removed": self.removed,
                "changed": self.changed, "unchanged": self.unchanged}


_API_JSON_CACHE_LIMIT = 2000  # ~0.9 MB of kept JSON at most
READ_RECHECK_SECONDS = 0.1
EVERYTHING = None  # for _mirrored_change: the change may affect any provider (restore)


@dataclass
class _Change:
    conn: sqlite3.Connection
    touched: set[int]


class RestorePending(Exception):
    """The database is empty but the backup file holds providers (the database was deleted or
    emptied): a change would overwrite that backup, so only a restore is allowed."""

    def __init__(self, backup_path: Path, count: int):
        super().__init__(
            f"the database is empty but the backup file {backup_path} holds {count} providers, so changes are "
            "refused until it is restored: POST /api/admin/providers/restore with an empty body, or run "
            "python server.py --restore; or, to start afresh, move the backup file away and restart the server")
        self.backup_path = backup_path
        self.count = count


@dataclass
class RotationReport:
    rotated: int
    undecryptable: list[str]


class ProviderRegistry:
    def __init__(self, conn: sqlite3.Connection, keyring: Keyring, backup_path: Path):
        self._conn = conn
        self.keyring = keyring
        self.backup_path = backup_path
        # The SQL that renders providers as JSON calls this for the preview.
        conn.create_function("api_key_preview", 1, keyring.preview, deterministic=True)
        # Each provider's backup record JSON as committed, in id order: a change re-renders only
        # the records it touched, and the backup file is these joined. None until first needed.
        self._records: dict[int, bytes] | None = None
        # Each provider's API JSON as committed, filled as providers are read and dropped when a
        # change touches them: a read then costs a dict lookup instead of a query.
        self._api_json: dict[int, bytes] = {}
        # SQLite's count of commits by other connections (e.g. `server.py --restore` run while the
        # server is up): when it moves, both caches above are dropped. Reads look at most every
        # READ_RECHECK_SECONDS (the PRAGMA costs ~5 µs, a few % of a cached GET); writes always do.
        self._data_version = self._current_data_version()
        self._data_version_checked = time.monotonic()
        # Changes waiting for the next group commit, each with the future its caller awaits.
        self._pending: list[tuple[Callable[[_Change], Any], asyncio.Future]] = []
        # How many providers the backup file holds while the database is empty (restore-pending
        # mode), else 0; see check_restore_pending.
        self._pending_restore_count = 0

    # -- reads ---------------------------------------------------------------------------------

    def list(self, filters: ProviderFilter = NO_FILTER) -> list[Provider]:
        """Every provider matching `filters`, ordered by id."""
        return providers.list_providers(self._conn, filters)

    def get(self, provider_id: int) -> Provider:
        return providers.get_provider(self._conn, provider_id)

    def list_json(self, filters: ProviderFilter = NO_FILTER, limit: int | None = None,
                  offset: int = 0) -> tuple[list[bytes], int]:
        """A page of providers as API JSON (UTF-8), and the total matching."""
        self._forget_if_changed_elsewhere(reading=True)
        ids, total = providers.list_provider_ids(self._conn, filters, limit, offset)
        texts = {i: self._api_json[i] for i in ids if i in self._api_json}
        if len(texts) < len(ids):
            fresh = providers.providers_json(self._conn, [i for i in ids if i not in texts])
            texts.update(fresh)
            self._remember_api_json(fresh)
        return [texts[i] for i in ids], total

    def get_json(self, provider_id: int) -> bytes:
        """One provider as API JSON (UTF-8)."""
        self._forget_if_changed_elsewhere(reading=True)
        text = self._api_json.get(provider_id)
        if text is None:
            text = providers.provider_json(self._conn, provider_id)
            self._remember_api_json({provider_id: text})
        return text

    def history(self, provider_id: int, limit: int) -> list[dict[str, Any]]:
        return providers.probe_history(self._conn, provider_id, limit)

    def check_restore_pending(self) -> RestorePending | None:
        """Look again whether the database is empty next to a backup file that holds providers;
        while it is, every change but a restore is refused (`ensure_writable`)."""
        self._pending_restore_count = 0
        if providers.provider_count(self._conn) == 0 and self.backup_path.exists():
            try:
                held = backup.read_backup_file(self.backup_path)
            except backup.BackupError:
                return None  # unreadable: reconcile_backup warns about it
            self._pending_restore_count = len(held.get("providers") or []) if isinstance(held, dict) else 0
        return self._restore_pending()

    @property
    def restore_pending(self) -> bool:
        self._forget_if_changed_elsewhere()
        return self._pending_restore_count > 0

    def ensure_writable(self) -> None:
        """Raises RestorePending while the database is empty next to a backup that holds providers."""
        self._forget_if_changed_elsewhere()
        pending = self._restore_pending()
        if pending is not None:
            raise pending

    def _restore_pending(self) -> RestorePending | None:
        # A new exception each time: raising one instance again would keep growing its traceback.
        return RestorePending(self.backup_path, self._pending_restore_count) if self._pending_restore_count else None

    def decrypted_api_key(self, provider: Provider) -> str | None:
        """The plaintext key for an outbound request; raises UndecryptableKey."""
        if provider.api_key_ciphertext is None:
            return None
        return self.keyring.decrypt(provider.api_key_ciphertext)

    # -- changes (each mirrored into the backup) -----------------------------------------------

    async def create(self, fields: dict[str, Any]) -> int:
        """Create from a validated create body; returns the new provider's id."""
        now = utc_timestamp()
        fields = with_defaults(fields)
        values = {
            "name": normalize_name(fields["name"]),
            "type": fields["type"],
            "base_url": fields["base_url"].rstrip("/"),
            "api_key_ciphertext": self._encrypt(fields["api_key"]),
            "models": fields["models"],
            "is_active": fields["is_active"],
            "created_at": now,
            "updated_at": now,
        }

        def insert(change: _Change) -> int:
            provider_id = providers.insert_provider(change.conn, values)
            change.touched.add(provider_id)
            return provider_id

        return await self._grouped(insert)

    async def update(self, provider_id: int, changes: dict[str, Any]) -> None:
        """Apply a validated PATCH body. Fields equal to what is stored are not changes: a PATCH
        that changes nothing writes nothing and keeps `updated_at`."""
        current = self.get(provider_id)
        values = {}
        for name, value in changes.items():
            if name == "api_key":
                unchanged = (current.api_key_ciphertext is None if value is None
                             else value == self._plaintext_or_none(current))
                if not unchanged:
                    values["api_key_ciphertext"] = self._encrypt(value)
                continue
            if name == "name":
                value = normalize_name(value)
            elif name == "base_url":
                value = value.rstrip("/")
            if getattr(current, name) != value:
                values[name] = value
        if not values:
            return
        values["updated_at"] = utc_timestamp()

        def apply(change: _Change) -> None:
            providers.update_provider(change.conn, provider_id, values)
            change.touched.add(provider_id)

        await self._grouped(apply)

    async def delete(self, provider_id: int) -> None:
        def apply(change: _Change) -> None:
            providers.delete_provider(change.conn, provider_id)
            change.touched.add(provider_id)

        await self._grouped(apply)

    async def record_probe_results(self, results: dict[int, dict[str, Any]]) -> None:
        """Store test results (as `last_test` and in history), all in the same group commit.
        Providers deleted while they were being probed are skipped."""
        def apply(change: _Change) -> None:
            for provider_id, result in results.items():
                try:
                    providers.add_probe_result(change.conn, provider_id, result)
                except providers.ProviderNotFound:
                    continue
                change.touched.add(provider_id)

        await self._grouped(apply)

    def restore(self, document: Any) -> int:
        """Replace the whole inventory with a backup document's, keeping ids; nothing changes
        unless the whole document passes `backup.check_document`."""
        records = backup.check_document(document, self.keyring)
        with self._mirrored_change(EVERYTHING) as change:
            providers.delete_all_providers(change.conn)
            for record in records:
                values = {k: v for k, v in record.items() if k not in ("id", "api_key")}
                values["api_key_ciphertext"] = record["api_key"]
                providers.insert_provider(change.conn, values, provider_id=int(record["id"]))  # 7.0 is an int too
        return len(records)

    def preview_restore(self, document: Any) -> RestorePreview:
        """What `restore(document)` would change, matched by id; validates exactly as restore does."""
        records = backup.check_document(document, self.keyring)
        current = {p.id: p for p in providers.list_providers(self._conn)}
        preview = RestorePreview()
        for record in records:
            existing = current.pop(record["id"], None)
            if existing is None:
                preview.added.append(record["name"])
                continue
            changed = [f for f in _RESTORE_COMPARED_FIELDS if self._differs(existing, record, f)]
            if changed:
                preview.changed.append({"name": record["name"], "fields": changed})
            else:
                preview.unchanged += 1
        preview.removed = [p.name for p in current.values()]
        return preview

    def rotate_keys(self) -> RotationReport:
        """Re-encrypt every key that an old secret reads under the current one, in one transaction.
        With a single secret there is nothing to rotate and no key is read."""
        rotated, undecryptable = [], []
        if not self.keyring.has_old_secrets:
            return RotationReport(0, [])
        for provider in providers.list_providers(self._conn):
            ciphertext = provider.api_key_ciphertext
            if ciphertext is None or self.keyring.is_current(ciphertext):
                continue
            try:
                rotated.append((provider.id, self.keyring.rotate(ciphertext)))
            except UndecryptableKey:
                undecryptable.append(provider.name)
        if rotated:
            with self._mirrored_change({provider_id for provider_id, _ in rotated}) as change:
                providers.set_api_key_ciphertexts(change.conn, rotated)
        return RotationReport(len(rotated), undecryptable)

    def first_undecryptable_key(self) -> str | None:
        """The name of the first stored provider whose key no secret decrypts, checking only the
        first stored key: a cheap start-up check for a wrong secret."""
        first = providers.first_provider_with_key(self._conn)
        if first is None or self.keyring.can_decrypt(first.api_key_ciphertext):
            return None
        return first.name

    # -- the backup ----------------------------------------------------------------------------

    def export_json(self) -> bytes:
        """The backup document of the whole inventory, read from the database."""
        return b"".join(backup.document_parts(record for _, record in providers.backup_records_json(self._conn)))

    def write_backup(self, path: Path | None = None) -> int:
        """Write the backup document to `path` (default: the backup file); returns how many providers.
        Raises RestorePending rather than overwrite a backup that holds providers with an empty inventory."""
        if path is None or _same_file(path, self.backup_path):
            path = None
            pending = self.check_restore_pending()
            if pending is not None:
                raise pending
        records = dict(providers.backup_records_json(self._conn))
        backup.write_atomically(path or self.backup_path, backup.document_parts(records.values()))
        if path is None:
            self._records = records
        return len(records)

    def reconcile_backup(self) -> str | None:
        """At start-up, make the backup mirror the database again (a crash may have left it one
        change ahead). Never replaces a backup that holds providers with an empty inventory: that
        is a deleted or emptied database next to a backup worth restoring (restore-pending mode).
        Returns a warning, or None."""
        backup.remove_stale_temp_files(self.backup_path)
        pending = self.check_restore_pending()
        if pending is not None:
            return f"restore pending: {pending}"
        if providers.provider_count(self._conn) == 0 and self.backup_path.exists():
            try:
                backup.read_backup_file(self.backup_path)
            except backup.BackupError:
                return f"the backup file {self.backup_path} is unreadable and the database is empty; left as is"
        self.write_backup()
        return None

    # -- helpers -------------------------------------------------------------------------------

    @contextmanager
    def _mirrored_change(self, touched: set[int] | None) -> Iterator[_Change]:
        """A transaction whose end rewrites the backup file before committing (so a backup that
        cannot be written rolls the change back, and a commit that fails puts the backup back as
        it was). `touched` names the providers the change may affect (the body adds to it), or is
        EVERYTHING; only their records are re-rendered."""
        committed_records = self._records
        backup_written = False
        try:
            with transaction(self._conn) as conn:
                self._forget_if_changed_elsewhere()
                committed_records = self._records
                change = _Change(conn, set(touched) if touched is not None else set())
                yield change
                if touched is not EVERYTHING and not change.touched:
                    return  # every change of a group failed: nothing to mirror, the backup stays as it is
                if touched is EVERYTHING or self._records is None:
                    records = dict(providers.backup_records_json(conn))
                else:
                    records = dict(self._records)  # the committed state stays intact until COMMIT
                    fresh = dict(providers.backup_records_json(conn, change.touched))
                    for provider_id in sorted(change.touched):
                        if provider_id in fresh:
                            records[provider_id] = fresh[provider_id]  # new ids are the highest: order holds
                        else:
                            records.pop(provider_id, None)
                backup_written = True  # from here on, even a failing write may have replaced the file
                backup.write_atomically(self.backup_path, backup.document_parts(records.values()))
        except BaseException:
            if backup_written:
                self._put_backup_back(committed_records)
            raise
        if touched is EVERYTHING:
            # Not kept after a restore: rendered beside the whole parsed document, they would pin its
            # freed memory; the next change renders them afresh.
            self._records = None
            self._api_json.clear()
            self._pending_restore_count = 0
        else:
            self._records = records
        for provider_id in change.touched:
            self._api_json.pop(provider_id, None)

    def _put_backup_back(self, committed_records: dict[int, bytes] | None) -> None:
        """After a commit that failed once the backup held the change: the backup mirrors the
        database as committed again."""
        try:
            records = committed_records if committed_records is not None else dict(
                providers.backup_records_json(self._conn))
            backup.write_atomically(self.backup_path, backup.document_parts(records.values()))
        except Exception as exc:  # the original failure is what the caller must see
            log.error("the backup file %s could not be put back after a failed commit: %s", self.backup_path, exc)

    def _grouped(self, apply: Callable[[_Change], Any]) -> asyncio.Future:
        """Queue a change for the next group commit; the future resolves to what `apply` returns
        (or raises what it raised) once the group is committed and mirrored. Raises RestorePending
        at once in restore-pending mode."""
        self.ensure_writable()
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._pending.append((apply, future))
        if len(self._pending) == 1:
            loop.call_soon(self._commit_group)
        return future

    def _commit_group(self) -> None:
        group, self._pending = self._pending, []
        outcomes: list[tuple[asyncio.Future, BaseException | None, Any]] = []
        try:
            with self._mirrored_change(set()) as change:
                for apply, future in group:
                    before = set(change.touched)
                    change.conn.execute("SAVEPOINT change")
                    try:
                        result = apply(change)
                    except Exception as exc:  # this change fails alone; the others go on
                        change.conn.execute("ROLLBACK TO change")
                        change.touched = before
                        outcomes.append((future, exc, None))
                    else:
                        outcomes.append((future, None, result))
                    change.conn.execute("RELEASE change")
        except Exception as exc:  # the backup or the commit failed: none of the group happened
            for _, future in group:
                if not future.done():
                    future.set_exception(exc)
            return
        for future, exc, result in outcomes:
            if future.done():
                continue
            if exc is not None:
                future.set_exception(exc)
            else:
                future.set_result(result)

    def _current_data_version(self) -> int:
        return self._conn.execute("PRAGMA data_version").fetchone()[0]

    def _forget_if_changed_elsewhere(self, reading: bool = False) -> None:
        now = time.monotonic()
        if reading and now - self._data_version_checked < READ_RECHECK_SECONDS:
            return
        self._data_version_checked = now
        version = self._current_data_version()
        if version != self._data_version:
            self._data_version = version
            self._api_json.clear()
            self._records = None
            if self._pending_restore_count:
                self.check_restore_pending()  # e.g. `server.py --restore` ran meanwhile

    def _remember_api_json(self, texts: dict[int, bytes]) -> None:
        if len(self._api_json) + len(texts) > _API_JSON_CACHE_LIMIT:
            self._api_json.clear()  # bounded memory; a cold cache only costs queries
        self._api_json.update(texts)

    def _encrypt(self, api_key: str | None) -> str | None:
        return None if api_key is None else self.keyring.encrypt(api_key)

    def _plaintext_or_none(self, provider: Provider) -> str | None:
        try:
            return self.decrypted_api_key(provider)
        except UndecryptableKey:
            return None

    def _differs(self, existing: Provider, record: dict[str, Any], name: str) -> bool:
        if name == "api_key":
            if (existing.api_key_ciphertext is None) != (record["api_key"] is None):
                return True
            return record["api_key"] is not None and (
                self._plaintext_or_none(existing) != self.keyring.decrypt(record["api_key"]))
        return getattr(existing, name) != record[name]


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.abspath(a) == os.path.abspath(b)
