-- Why: the provider types are one table in the code (registry/provider_types.py), so the CHECK list
-- of types goes: adding a type no longer needs a table rebuild. The rebuild keeps every id and row,
-- and the AUTOINCREMENT sequence. It also moves ids beyond 2^53 - 1 (9007199254740991), which JSON
-- and JavaScript cannot carry exactly and a restore once accepted, to the first free ids (their
-- probe history goes with them), so that every id is reachable and new ones are too.
CREATE TEMP TABLE kept_sequence AS
    SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'providers'), 0) AS seq;
CREATE TEMP TABLE moved_ids AS
    SELECT id AS old_id,
           (SELECT coalesce(max(id), 0) FROM providers WHERE id <= 9007199254740991)
               + row_number() OVER (ORDER BY id) AS new_id
    FROM providers WHERE id > 9007199254740991;

CREATE TABLE providers_rebuilt (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    name_key TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL,
    base_url TEXT NOT NULL,
    api_key_ciphertext TEXT,
    models TEXT NOT NULL DEFAULT '[]',
    is_active INTEGER NOT NULL DEFAULT 1 CHECK (is_active IN (0, 1)),
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    last_test TEXT
);
INSERT INTO providers_rebuilt (id, name, name_key, type, base_url, api_key_ciphertext, models, is_active,
                               created_at, updated_at, last_test)
    SELECT coalesce((SELECT new_id FROM moved_ids WHERE old_id = providers.id), id), name, name_key, type,
           base_url, api_key_ciphertext, models, is_active, created_at, updated_at, last_test
    FROM providers;
UPDATE probe_results SET provider_id = (SELECT new_id FROM moved_ids WHERE old_id = probe_results.provider_id)
    WHERE provider_id IN (SELECT old_id FROM moved_ids);
DROP TABLE providers;
ALTER TABLE providers_rebuilt RENAME TO providers;
UPDATE sqlite_sequence
    SET seq = max((SELECT coalesce(max(id), 0) FROM providers),
                  CASE WHEN (SELECT seq FROM kept_sequence) <= 9007199254740991 THEN (SELECT seq FROM kept_sequence)
                       ELSE 0 END)
    WHERE name = 'providers';
DROP TABLE kept_sequence;
DROP TABLE moved_ids;
