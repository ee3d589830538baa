"""The read cache: each provider's API JSON as committed, kept as it is read, so a read costs a
dict lookup instead of a query; and the watch on commits by other processes that empties it.

Contract: the inventory drops a provider's entry whenever a change touches it, and everything
when `CommitWatcher.changed_elsewhere()` says another connection committed (`server.py
--restore` run while the server is up, say). Bounded: past `limit` entries it starts afresh.
"""

from __future__ import annotations

import os
import sqlite3
import time

from store.database import data_version

API_JSON_CACHE_LIMIT = 2000
# How often reads look for commits by other processes (writes always look).
READ_RECHECK_SECONDS = 0.1


class ReadCache:
    def __init__(self, limit: int = API_JSON_CACHE_LIMIT):
        self.limit = limit
        self._texts: dict[int, bytes] = {}

    def get(self, provider_id: int) -> bytes | None:
        return self._texts.get(provider_id)

    def remember(self, texts: dict[int, bytes]) -> None:
        if len(self._texts) + len(texts) > self.limit:
            self._texts.clear()  # bounded memory; a cold cache only costs queries
        self._texts.update(texts)

    def forget(self, provider_ids: set[int]) -> None:
        for provider_id in provider_ids:
            self._texts.pop(provider_id, None)

    def clear(self) -> None:
        self._texts.clear()


class CommitWatcher:
    """Notices commits by other connections (SQLite's data_version)."""

    def __init__(self, conn: sqlite3.Connection):
        self._conn = conn
        self._version = data_version(conn)
        self._checked = time.monotonic()
        # In WAL mode every commit writes the -wal file: when it has not changed (one stat), no
        # other connection can have committed, and the PRAGMA is not needed.
        main_file = next((row[2] for row in conn.execute("PRAGMA database_list") if row[1] == "main"), "")
        self._wal = main_file + "-wal" if main_file else None
        self._wal_seen: tuple[int, int] | None = None

    def changed_elsewhere_now(self) -> bool:
        """changed_elsewhere(), exact at every call: a stat of the WAL file, and the PRAGMA only when
        that file changed since the last look."""
        if self._wal is not None:
            try:
                stat = os.stat(self._wal)
                seen = (stat.st_mtime_ns, stat.st_size)
            except OSError:
                seen = None
            # (and the PRAGMA at least every READ_RECHECK_SECONDS, should a file system's mtime be coarse)
            if seen is not None and seen == self._wal_seen and time.monotonic() - self._checked < READ_RECHECK_SECONDS:
                return False
            self._wal_seen = seen
        return self.changed_elsewhere()

    def changed_elsewhere(self, reading: bool = False) -> bool:
        """True once after another connection committed; a read looks at most every READ_RECHECK_SECONDS."""
        now = time.monotonic()
        if reading and now - self._checked < READ_RECHECK_SECONDS:
            return False
        self._checked = now
        version = data_version(self._conn)
        if version == self._version:
            return False
        self._version = version
        return True
