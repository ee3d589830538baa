-- Why: health signals. Each provider gets a health state (up / down / unknown, since when, why)
-- worked out from its consecutive probe results (the streaks); every change of state is an event;
-- webhooks are told of events through a durable outbox (webhook_messages), queued in the event's
-- own transaction (a delivered message leaves it), with one record per delivery attempt. None of
-- this is part of the JSON backup: a restored provider starts unknown. Webhook secrets are stored
-- encrypted like API keys.
ALTER TABLE providers ADD COLUMN health_state TEXT NOT NULL DEFAULT 'unknown'
    CHECK (health_state IN ('up', 'down', 'unknown'));
ALTER TABLE providers ADD COLUMN health_since TEXT;
ALTER TABLE providers ADD COLUMN health_reason TEXT;
ALTER TABLE providers ADD COLUMN online_streak INTEGER NOT NULL DEFAULT 0;
ALTER TABLE providers ADD COLUMN failing_streak INTEGER NOT NULL DEFAULT 0;
-- The certificate a provider.cert_expiring event was last raised for: one event per certificate.
ALTER TABLE providers ADD COLUMN warned_certificate TEXT;

CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    provider_id INTEGER NOT NULL REFERENCES providers (id) ON DELETE CASCADE,
    provider_name TEXT NOT NULL,
    type TEXT NOT NULL,
    at TEXT NOT NULL,
    from_state TEXT,
    to_state TEXT,
    reason TEXT,
    result TEXT
);
CREATE INDEX events_by_provider ON events (provider_id, id);

CREATE TABLE webhooks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    url TEXT NOT NULL,
    events TEXT,
    description TEXT,
    is_active INTEGER NOT NULL DEFAULT 1 CHECK (is_active IN (0, 1)),
    secret_ciphertext TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);

CREATE TABLE webhook_messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    webhook_id INTEGER NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    message_id TEXT NOT NULL UNIQUE,
    event_id INTEGER,
    type TEXT NOT NULL,
    body TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'failed')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL,
    created_at TEXT NOT NULL
);
CREATE INDEX webhook_messages_due ON webhook_messages (webhook_id, state, next_attempt_at, id);

CREATE TABLE webhook_deliveries (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    webhook_id INTEGER NOT NULL REFERENCES webhooks (id) ON DELETE CASCADE,
    message_id TEXT NOT NULL,
    event_id INTEGER,
    type TEXT NOT NULL,
    attempt INTEGER NOT NULL,
    at TEXT NOT NULL,
    status_code INTEGER,
    latency_ms REAL,
    error TEXT,
    outcome TEXT NOT NULL CHECK (outcome IN ('delivered', 'retry', 'failed')),
    next_attempt_at TEXT
);
CREATE INDEX webhook_deliveries_by_webhook ON webhook_deliveries (webhook_id, id);
