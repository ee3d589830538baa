"""Restoring a backup document: everything checked before anything is touched, and the preview of
what a restore would change."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from registry import portable
from registry.errors import Conflict, Invalid
from registry.fields import MAX_NAME_LENGTH, NAME_TOO_LONG, normalize_name
from registry.keyring import Keyring, UndecryptableKey
from registry.schemas import BACKUP_FORMAT, BACKUP_VERSION, backup_document_validator, validation_errors
from store.provider_rows import Provider, name_key

COMPARED_FIELDS = ("name", "type", "base_url", "api_key", "models", "is_active", "created_at", "updated_at",
                   "last_test")


class BackupInvalid(Invalid):
    """Valid JSON that is not a usable backup document; `errors` has one entry per problem."""


class BackupDuplicates(Conflict):
    """Two providers in the document share an id or a name: it cannot be restored as it is."""


class BackupKeysUndecryptable(Conflict):
    """Keys in the document that no configured secret decrypts (a backup from another secret)."""


@dataclass
class RestorePreview:
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[dict[str, Any]] = field(default_factory=list)
    unchanged: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"dry_run": True, "added": self.added, "removed": self.removed,
                "changed": self.changed, "unchanged": self.unchanged}


def check_document(document: Any, keyring: Keyring, passphrase: str | None = None) -> list[dict[str, Any]]:
    """Everything a restore checks before touching anything; returns the provider records (names
    in their stored form, keys under the current secret).

    The schema (format, version, every field), unique ids and names, and that every key decrypts
    with the current secrets, or, in a portable export, with the passphrase (they are then
    encrypted again under the current secret).
    """
    check_schema(document)
    if "key_wrap" in document:
        document = portable.unwrap(document, keyring, passphrase)
    return _check_records([{**record, "name": normalize_name(record["name"])} for record in document["providers"]],
                          keyring)


def check_schema(document: Any) -> None:
    """The document's shape: format, version, every field (BackupInvalid with every error)."""
    errors = validation_errors(backup_document_validator, document)
    if not errors and isinstance(document["version"], float):  # JSON Schema's const also takes 1.0
        errors = [{"path": "/version", "message": f"must be {BACKUP_VERSION!r}"}]
    if errors:
        if isinstance(document, dict) and document.get("format") != BACKUP_FORMAT:
            message = f"This is not a {BACKUP_FORMAT} document."
        elif isinstance(document, dict) and document.get("version") != BACKUP_VERSION:
            message = f"Unsupported backup version {document.get('version')!r}; this release reads version 1."
        else:
            message = f"The backup document is invalid ({len(errors)} problem{'s' * (len(errors) > 1)})."
        raise BackupInvalid(message, errors)


def _check_records(records: list[dict[str, Any]], keyring: Keyring) -> list[dict[str, Any]]:
    errors = [{"path": f"/providers/{index}/name", "message": NAME_TOO_LONG}
              for index, record in enumerate(records) if len(record["name"]) > MAX_NAME_LENGTH]
    if errors:
        raise BackupInvalid(f"The backup document is invalid ({len(errors)} problem{'s' * (len(errors) > 1)}).",
                            errors)
    errors = _duplicates(records, "id", lambda r: r["id"]) + _duplicates(records, "name", lambda r: name_key(r["name"]))
    if errors:
        raise BackupDuplicates("The backup document repeats an id or a name.", errors)
    undecryptable = [r["name"] for r in records if r["api_key"] is not None and not keyring.can_decrypt(r["api_key"])]
    if undecryptable:
        raise BackupKeysUndecryptable(
            "The API keys of " + ", ".join(repr(n) for n in undecryptable[:10])
            + (f" and {len(undecryptable) - 10} more" if len(undecryptable) > 10 else "")
            + " cannot be decrypted with the configured secrets (a backup made under another secret? "
              "Add that secret to BACKEND_API_KEY_SECRET).")
    return records


def _duplicates(records: list[dict], field_name: str, key) -> list[dict[str, str]]:
    seen: dict[Any, int] = {}
    errors = []
    for index, record in enumerate(records):
        value = key(record)
        if value in seen:
            errors.append({"path": f"/providers/{index}/{field_name}",
                           "message": f"repeats the {field_name} of /providers/{seen[value]}"})
        else:
            seen[value] = index
    return errors


def preview(records: list[dict[str, Any]], current: list[Provider], keyring: Keyring) -> RestorePreview:
    """What restoring checked `records` over the `current` providers would change, matched by id;
    a changed key shows as the field `api_key`, never as a value."""
    by_id = {p.id: p for p in current}
    report = RestorePreview()
    for record in records:
        existing = by_id.pop(record["id"], None)
        if existing is None:
            report.added.append(record["name"])
            continue
        changed = [f for f in COMPARED_FIELDS if _differs(existing, record, f, keyring)]
        if changed:
            report.changed.append({"name": record["name"], "fields": changed})
        else:
            report.unchanged += 1
    report.removed = [p.name for p in by_id.values()]
    return report


def _differs(existing: Provider, record: dict[str, Any], name: str, keyring: Keyring) -> bool:
    if name != "api_key":
        return getattr(existing, name) != record[name]
    if (existing.api_key_ciphertext is None) != (record["api_key"] is None):
        return True
    return record["api_key"] is not None and (
        _plaintext_or_none(keyring, existing.api_key_ciphertext) != keyring.decrypt(record["api_key"]))


def _plaintext_or_none(keyring: Keyring, ciphertext: str | None) -> str | None:
    try:
        return None if ciphertext is None else keyring.decrypt(ciphertext)
    except UndecryptableKey:
        return None
