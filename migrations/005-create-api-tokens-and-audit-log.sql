-- Why: team access. Named API tokens with a role and an optional provider scope (only the SHA-256
-- of each secret is kept), and the audit log: one record per change and per secret read, written
-- in the transaction of the change it records. Neither is part of the JSON backup.
CREATE TABLE api_tokens (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    name_key TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL,
    providers TEXT,
    secret_sha256 TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL,
    expires_at TEXT,
    last_used_at TEXT
);
CREATE TABLE audit_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    actor TEXT NOT NULL,
    role TEXT,
    action TEXT NOT NULL,
    target_type TEXT,
    target_id INTEGER,
    target_name TEXT,
    fields TEXT NOT NULL DEFAULT '[]',
    request_id TEXT,
    client TEXT,
    count INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX audit_events_by_action ON audit_events (action, id);
CREATE INDEX audit_events_by_actor ON audit_events (actor, id);
CREATE INDEX audit_events_by_target ON audit_events (target_id, id);
CREATE INDEX audit_events_denied ON audit_events (client, action, id);
