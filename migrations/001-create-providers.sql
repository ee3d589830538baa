-- Why: the inventory itself. `name_key` holds the Unicode-casefolded name because SQLite's NOCASE
-- folds ASCII only, and names must be unique case-insensitively in every script.
-- AUTOINCREMENT so a deleted provider's id is never handed to a new one.
CREATE TABLE providers (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    name_key TEXT NOT NULL UNIQUE,
    type TEXT NOT NULL CHECK (type IN ('openai', 'anthropic', 'gemini', 'azure', 'ollama')),
    base_url TEXT NOT NULL,
    api_key_ciphertext TEXT,
    models TEXT NOT NULL DEFAULT '[]',
    is_active INTEGER NOT NULL DEFAULT 1 CHECK (is_active IN (0, 1)),
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
