"""The JSON backup file: the document's parts, written atomically; read back and parsed."""

from __future__ import annotations

import glob
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable

from registry.errors import BadRequest, Failed
from registry.schemas import BACKUP_FORMAT, BACKUP_VERSION, InvalidJson, parse_json
from registry.timestamps import utc_timestamp


class BackupUnreadable(BadRequest):
    """Missing, unreadable, not UTF-8 or not JSON (e.g. truncated)."""


class BackupWriteFailed(Failed):
    """The backup file cannot be written; the message names its path and the OS reason."""


def document_parts(records_json: Iterable[bytes]) -> list[bytes]:
    """The backup document, as parts to concatenate, around provider records that are already
    JSON (UTF-8). Parts, because the records are most of it: written out with writev, they are
    not copied once more."""
    header = {"format": BACKUP_FORMAT, "version": BACKUP_VERSION, "exported_at": utc_timestamp()}
    return [json.dumps(header, separators=(",", ":"))[:-1].encode("utf-8") + b',"providers":[',
            b",".join(records_json), b"]}"]


def write_atomically(path: Path, parts: list[bytes]) -> None:
    """Replace `path` with the concatenated `parts` so that a crash leaves the old or the new file,
    whole, mode 0600.

    The temporary file gets a fresh unpredictable name in the same directory, created exclusively
    (mkstemp: never through a planted symlink, never shared with another writer such as
    `--export` beside the server); it is flushed, fsynced and renamed over the target, then the
    directory is fsynced so the rename itself is durable. It is removed on any failure.
    """
    directory = path.parent
    try:
        make_private_directories(directory)
        fd, temp_name = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise _write_failed(path, exc) from None
    try:
        try:
            os.fchmod(fd, 0o600)  # mkstemp's 0600 is still narrowed by the umask
            _write_all(fd, parts)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp_name, path)
    except BaseException as exc:
        try:
            os.unlink(temp_name)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise _write_failed(path, exc) from None
        raise
    try:
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        raise _write_failed(path, exc) from None


STALE_TEMP_FILE_SECONDS = 3600


def remove_stale_temp_files(path: Path) -> int:
    """Remove the temporary files that writers of `path` killed mid-write left behind (older than
    STALE_TEMP_FILE_SECONDS, so a concurrent `--export` keeps its own); returns how many."""
    removed = 0
    cutoff = time.time() - STALE_TEMP_FILE_SECONDS
    for candidate in path.parent.glob(f".{glob.escape(path.name)}.*tmp"):
        try:
            if candidate.lstat().st_mtime < cutoff:
                candidate.unlink()
                removed += 1
        except OSError:
            continue
    return removed


def make_private_directories(directory: Path) -> None:
    """Create `directory` and its missing parents as 0700 whatever the umask: they hold the
    database, its secret and the backup."""
    missing = []
    while not directory.exists():
        missing.append(directory)
        if directory.parent == directory:
            break
        directory = directory.parent
    for created in reversed(missing):
        created.mkdir(mode=0o700, exist_ok=True)
        os.chmod(created, 0o700)


def _write_failed(path: Path, exc: OSError) -> BackupWriteFailed:
    return BackupWriteFailed(f"Cannot write the backup file {path}: {exc.strerror or type(exc).__name__}. "
                             "Nothing was changed.")


def _write_all(fd: int, parts: list[bytes]) -> None:
    """writev until every byte is written (a short write is allowed to happen, if rarely)."""
    pending = [memoryview(part) for part in parts if part]
    while pending:
        written = os.writev(fd, pending)
        while pending and written >= len(pending[0]):
            written -= len(pending.pop(0))
        if pending:
            pending[0] = pending[0][written:]


def read_backup_file(path: Path) -> Any:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise BackupUnreadable(f"The backup file {path} does not exist.") from None
    except OSError as exc:
        raise BackupUnreadable(f"Cannot read the backup file {path}: {exc.strerror}.") from None
    return parse_document(data, source=f"the backup file {path}")


def parse_document(data: bytes, source: str = "the backup document") -> Any:
    if not data.strip():
        raise BackupUnreadable(f"{source[:1].upper()}{source[1:]} is empty.")
    try:
        return parse_json(data)
    except InvalidJson as exc:
        raise BackupUnreadable(f"{source[:1].upper()}{source[1:]} {exc} (truncated or corrupted?).") from None
