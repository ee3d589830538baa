-- Why: latency and availability over time, not just the latest probe. The store keeps the last 100
-- results per provider; deleting a provider deletes its history.
CREATE TABLE probe_results (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    provider_id INTEGER NOT NULL REFERENCES providers (id) ON DELETE CASCADE,
    checked_at TEXT NOT NULL,
    result TEXT NOT NULL
);
CREATE INDEX probe_results_by_provider ON probe_results (provider_id, id);
