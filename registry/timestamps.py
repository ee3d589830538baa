"""The one timestamp format of the API, the database and the backup: UTC ISO 8601 with a literal Z."""

from datetime import datetime, timezone


def utc_timestamp(at: float | None = None) -> str:
    """`at` (Unix seconds; default now), to the millisecond, e.g. '2026-11-26T10:00:00.123Z'."""
    moment = datetime.now(timezone.utc) if at is None else datetime.fromtimestamp(at, timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
