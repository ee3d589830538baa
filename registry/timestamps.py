"""The one timestamp format of the API, the database and the backup: UTC ISO 8601 with a literal Z."""

from datetime import datetime, timezone


def utc_timestamp() -> str:
    """Now, to the millisecond, e.g. '2026-11-26T10:00:00.123Z'."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
