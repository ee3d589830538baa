"""The process's one SQLite connection, its transactions, and the migration runner.

Migration rules: migrations are the numbered files `migrations/NNN-what-it-does.sql`, applied in
order at start-up, each together with its `PRAGMA user_version` bump in one transaction, so a
re-run applies nothing and a failed one leaves the previous version. A released migration is never
edited (a fix is a new one), and there are no down-migrations: a database newer than the code is
refused. Foreign keys are off while a migration runs (SQLite cannot rebuild a table with children
otherwise: dropping it would cascade) and checked before its commit.
"""

from __future__ import annotations

import os
import re
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
_MIGRATION_FILE = re.compile(r"^(\d{3})-[a-z0-9-]+\.sql$")


class DatabaseError(Exception):
    """The database cannot be opened or upgraded; the message says why."""


_CORRUPTION_CODES = {getattr(sqlite3, "SQLITE_CORRUPT", 11), getattr(sqlite3, "SQLITE_NOTADB", 26)}


def is_corruption(exc: sqlite3.Error) -> bool:
    """True when SQLite says the file is damaged or not a database at all (not merely busy)."""
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
    if code is not None:
        return code & 0xFF in _CORRUPTION_CODES
    return "malformed" in str(exc) or "not a database" in str(exc)


def corruption_message(path: Path, exc: sqlite3.Error) -> str:
    return (f"the database {path} is corrupt ({exc}); move it away and restore the inventory from the "
            "backup with: python server.py --restore")


class DatabaseTooNew(DatabaseError):
    pass


class MigrationFailed(DatabaseError):
    pass


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def connect(path: Path) -> sqlite3.Connection:
    """Open the database in autocommit mode: every write goes through `transaction()`."""
    try:
        # Created 0600 by us rather than with the umask's mode by SQLite: it holds ciphertext.
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        conn = sqlite3.connect(path, isolation_level=None)
        # What Litestream's tips ask of an application (README, "Replication with Litestream"):
        # 5 s of busy_timeout, so a write waits out the short write lock Litestream takes to
        # checkpoint instead of failing with SQLITE_BUSY; WAL, the only mode it can replicate; and no
        # long-lived read transaction (autocommit: each read is one statement).
        conn.execute("PRAGMA busy_timeout = 5000")
        conn.execute("PRAGMA journal_mode = WAL")
        # FULL, not the NORMAL Litestream allows: a 201 means the row survives a power cut, not just
        # a crash of this process.
        conn.execute("PRAGMA synchronous = FULL")
        # SQLite's own checkpoints stay on (its default, 1000 pages). Litestream suggests turning
        # them off for tens of thousands of commits a second, where one can slip between its own
        # and cost it a fresh snapshot; group commit keeps this server far below that, and without
        # Litestream running the WAL would then grow until the process exits.
        conn.execute("PRAGMA wal_autocheckpoint = 1000")
        conn.execute("PRAGMA foreign_keys = ON")
        # Reads are served from the read cache, so SQLite's page cache only needs the B-tree paths
        # of writes and index scans: 512 KiB rather than the default 2 MB (bench/RESULTS.md).
        conn.execute("PRAGMA cache_size = -512")
        # Provider JSON is rendered by SQL calling api_key_preview(); without the keyring (which
        # `provider_rows.use_key_preview` brings) every preview is null, but rendering works.
        conn.create_function("api_key_preview", 1, lambda _ciphertext: None, deterministic=True)
    except OSError as exc:
        raise DatabaseError(f"cannot open the database {path}: {exc.strerror}") from None
    except sqlite3.Error as exc:
        if is_corruption(exc):
            raise DatabaseError(corruption_message(path, exc)) from None
        raise DatabaseError(f"cannot open the database {path}: {exc}") from None
    return conn


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception (including KeyboardInterrupt) and
    when the COMMIT itself fails (a full disk, a deferred constraint)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


@contextmanager
def savepoint(conn: sqlite3.Connection) -> Iterator[None]:
    """A nested transaction inside `transaction()`: rolled back alone on any exception."""
    conn.execute("SAVEPOINT change")
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK TO change")
        conn.execute("RELEASE change")
        raise
    conn.execute("RELEASE change")


def data_version(conn: sqlite3.Connection) -> int:
    """SQLite's count of commits made by other connections to this database file."""
    return conn.execute("PRAGMA data_version").fetchone()[0]


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """The `NNN-what-it-does.sql` files of `directory`, numbered 1, 2, 3... without gaps."""
    migrations = []
    for path in sorted(directory.glob("*.sql")):
        match = _MIGRATION_FILE.match(path.name)
        if not match:
            raise DatabaseError(f"migration file {path.name} is not named NNN-what-it-does.sql")
        migrations.append(Migration(int(match.group(1)), path.name, path.read_text(encoding="utf-8")))
    for expected, migration in enumerate(migrations, start=1):
        if migration.version != expected:
            raise DatabaseError(f"migration {migration.name} should be number {expected:03d}")
    return migrations


def schema_version(conn: sqlite3.Connection) -> int:
    return conn.execute("PRAGMA user_version").fetchone()[0]


def apply_migrations(conn: sqlite3.Connection, migrations: Sequence[Migration]) -> list[int]:
    """Apply the pending migrations in order, each with its version bump in one transaction.

    Returns the versions applied (empty when the database is current). A database newer than the
    code is refused, and a failing migration leaves the database at the previous version.
    """
    current = schema_version(conn)
    latest = migrations[-1].version if migrations else 0
    if current > latest:
        raise DatabaseTooNew(
            f"the database is at schema version {current} but this release knows only up to {latest}; "
            "run a newer release or restore a backup into a fresh database")
    applied = []
    conn.execute("PRAGMA foreign_keys = OFF")  # a no-op inside a transaction: set before BEGIN
    try:
        for migration in migrations[current:]:
            # executescript() commits any open transaction first, so BEGIN goes inside the script;
            # the version is an int from the file name, not user input.
            script = f"BEGIN IMMEDIATE;\n{migration.sql}\n;PRAGMA user_version = {migration.version:d};"
            try:
                conn.executescript(script)
                if conn.execute("PRAGMA foreign_key_check").fetchone() is not None:
                    raise sqlite3.IntegrityError("it leaves rows whose foreign keys point nowhere")
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise MigrationFailed(f"migration {migration.name} failed: {exc}") from None
            applied.append(migration.version)
    finally:
        conn.execute("PRAGMA foreign_keys = ON")
    return applied
