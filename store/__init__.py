"""Persistence: SQLite (raw sqlite3, numbered migrations) and the JSON backup. Never imports tornado."""
