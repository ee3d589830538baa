"""The migration runner: fresh database, upgrade in place, idempotent re-run, failure, too new."""

from __future__ import annotations

import sqlite3

import pytest

from store.database import (DatabaseError, DatabaseTooNew, Migration, MigrationFailed, apply_migrations, connect,
                            load_migrations, schema_version, transaction)

V1 = Migration(1, "001-create-things.sql", "CREATE TABLE things (id INTEGER PRIMARY KEY, name TEXT NOT NULL);")
V2 = Migration(2, "002-add-colour.sql", "ALTER TABLE things ADD COLUMN colour TEXT NOT NULL DEFAULT 'red';")
BROKEN_V3 = Migration(3, "003-broken.sql", "CREATE TABLE half_done (id INTEGER);\nTHIS IS NOT SQL;")


def tables(conn) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def test_fresh_database_gets_every_shipped_migration(tmp_path):
    conn = connect(tmp_path / "fresh.db")
    migrations = load_migrations()
    assert [m.version for m in migrations] == list(range(1, len(migrations) + 1))
    assert apply_migrations(conn, migrations) == [m.version for m in migrations]
    assert schema_version(conn) == len(migrations)
    assert {"providers", "probe_results"} <= tables(conn)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert conn.execute("PRAGMA busy_timeout").fetchone()[0] > 0


def test_older_database_is_upgraded_in_place_keeping_its_rows(tmp_path):
    path = tmp_path / "old.db"
    conn = connect(path)
    assert apply_migrations(conn, [V1]) == [1]
    conn.execute("INSERT INTO things (name) VALUES ('kept')")
    conn.close()

    conn = connect(path)
    assert apply_migrations(conn, [V1, V2]) == [2]
    assert conn.execute("SELECT name, colour FROM things").fetchall() == [("kept", "red")]
    assert schema_version(conn) == 2


def test_rerun_applies_nothing(tmp_path):
    conn = connect(tmp_path / "db.db")
    apply_migrations(conn, [V1, V2])
    assert apply_migrations(conn, [V1, V2]) == []
    assert schema_version(conn) == 2


def test_failing_migration_leaves_the_database_at_the_previous_version(tmp_path):
    conn = connect(tmp_path / "db.db")
    apply_migrations(conn, [V1, V2])
    with pytest.raises(MigrationFailed, match="003-broken.sql"):
        apply_migrations(conn, [V1, V2, BROKEN_V3])
    assert schema_version(conn) == 2
    assert "half_done" not in tables(conn)
    assert not conn.in_transaction


def test_migration_newer_than_code_is_refused(tmp_path):
    conn = connect(tmp_path / "db.db")
    apply_migrations(conn, [V1, V2])
    with pytest.raises(DatabaseTooNew, match="schema version 2.*only up to 1"):
        apply_migrations(conn, [V1])
    assert schema_version(conn) == 2


def test_shipped_migrations_upgrade_a_version_one_database(tmp_path):
    """A database made by the first release (only 001) gains last_test and history in place."""
    shipped = load_migrations()
    conn = connect(tmp_path / "release1.db")
    apply_migrations(conn, shipped[:1])
    conn.execute("INSERT INTO providers (name, name_key, type, base_url, created_at, updated_at) "
                 "VALUES ('Old', 'old', 'openai', 'https://x', '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z')")
    apply_migrations(conn, shipped)
    assert conn.execute("SELECT name, last_test FROM providers").fetchall() == [("Old", None)]


@pytest.mark.parametrize("names, message", [
    (["001-a.sql", "003-c.sql"], "should be number 002"),
    (["1-a.sql"], "not named"),
])
def test_badly_numbered_migration_files_are_refused(tmp_path, names, message):
    for name in names:
        (tmp_path / name).write_text("SELECT 1;")
    with pytest.raises(DatabaseError, match=message):
        load_migrations(tmp_path)


def test_transaction_rolls_back_on_any_error(tmp_path):
    conn = connect(tmp_path / "db.db")
    apply_migrations(conn, [V1])
    with pytest.raises(RuntimeError):
        with transaction(conn):
            conn.execute("INSERT INTO things (name) VALUES ('gone')")
            raise RuntimeError("boom")
    assert conn.execute("SELECT count(*) FROM things").fetchone()[0] == 0
    with pytest.raises(sqlite3.IntegrityError):
        with transaction(conn):
            conn.execute("INSERT INTO things (name) VALUES ('gone too')")
            conn.execute("INSERT INTO things (name) VALUES (NULL)")
    assert conn.execute("SELECT count(*) FROM things").fetchone()[0] == 0
