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


def test_migration_4_drops_the_type_list_keeping_ids_rows_history_and_the_sequence(tmp_path):
    """On a database made by migrations 1-3 (the releases before the provider-type table)."""
    conn = connect(tmp_path / "old.db")
    shipped = load_migrations()
    assert apply_migrations(conn, shipped[:3]) == [1, 2, 3]
    with transaction(conn):
        for provider_id, name in ((3, "Three"), (7, "Seven"), (2**60, "Unreachable")):
            conn.execute("INSERT INTO providers (id, name, name_key, type, base_url, api_key_ciphertext, models, "
                         "is_active, created_at, updated_at, last_test) VALUES (?, ?, ?, 'openai', 'https://x', "
                         "'ct', '[\"m\"]', 1, '2026-01-01T00:00:00Z', '2026-01-02T00:00:00Z', "
                         "'{\"status\":\"online\"}')",
                         (provider_id, name, name.casefold()))
            conn.execute("INSERT INTO probe_results (provider_id, checked_at, result) VALUES (?, 't', '{}')",
                         (provider_id,))
        conn.execute("DELETE FROM providers WHERE id = 7")  # and its history with it (cascade)
        with pytest.raises(sqlite3.IntegrityError):
            conn.execute("INSERT INTO providers (name, name_key, type, base_url, created_at, updated_at) "
                         "VALUES ('n', 'n', 'mistral', 'https://x', 't', 't')")
    before = conn.execute("SELECT id, name, api_key_ciphertext, models, last_test FROM providers "
                          "WHERE id = 3").fetchall()

    assert apply_migrations(conn, shipped) == list(range(4, len(shipped) + 1))
    assert conn.execute("SELECT id, name, api_key_ciphertext, models, last_test FROM providers "
                        "WHERE id = 3").fetchall() == before
    assert [r[0] for r in conn.execute("SELECT id FROM providers ORDER BY id")] == [3, 4]  # 2^60 moved to 4
    assert conn.execute("SELECT name FROM providers WHERE id = 4").fetchone()[0] == "Unreachable"
    assert sorted(r[0] for r in conn.execute("SELECT provider_id FROM probe_results")) == [3, 4]
    assert conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'providers'").fetchone()[0] == 4
    with transaction(conn):  # any type string is storable now; the type table validates
        conn.execute("INSERT INTO providers (name, name_key, type, base_url, created_at, updated_at) "
                     "VALUES ('n', 'n', 'mistral', 'https://x', 't', 't')")
    assert conn.execute("SELECT max(id) FROM providers").fetchone()[0] == 5
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    assert conn.execute("PRAGMA foreign_key_check").fetchall() == []


def test_a_migration_leaving_dangling_foreign_keys_is_refused(tmp_path):
    conn = connect(tmp_path / "fk.db")
    parent = Migration(1, "001-parent.sql", "CREATE TABLE parent (id INTEGER PRIMARY KEY);"
                                            "CREATE TABLE child (parent_id INTEGER REFERENCES parent (id));")
    dangling = Migration(2, "002-dangling.sql", "INSERT INTO child VALUES (42);")
    with pytest.raises(MigrationFailed, match="foreign keys"):
        apply_migrations(conn, [parent, dangling])
    assert schema_version(conn) == 1
    assert conn.execute("SELECT count(*) FROM child").fetchone()[0] == 0
