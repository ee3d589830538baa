"""Portable exports: a backup document whose keys are encrypted under a key derived from a
passphrase (scrypt; its parameters and salt in the document's `key_wrap`) instead of the server's
secret, so an inventory moves between environments whose secrets differ. Restoring one opens the
keys with the passphrase and encrypts them again under the receiving server's current secret.

The passphrase is checked against `key_wrap.check` (a token of a fixed text under the derived key),
so a wrong one is refused even by a document without keys. The scrypt cost in a document is
bounded (the `KEY_WRAP` schema): a document cannot make a restore spend unbounded memory or time.
"""

from __future__ import annotations

import base64
import os
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from registry.errors import BadRequest, Conflict, Invalid
from registry.keyring import Keyring

MIN_PASSPHRASE_LENGTH = 12
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1  # 32 MiB of memory, about 0.1 s: for each export and restore
_CHECK_TEXT = b"provider-registry portable export"


class PassphraseNeeded(Conflict):
    def __init__(self) -> None:
        super().__init__("This export's keys are protected by a passphrase: send it in the X-Backup-Passphrase "
                         "header (command line: --passphrase-file); nothing was changed.")


class WrongPassphrase(Conflict):
    def __init__(self) -> None:
        super().__init__("The passphrase does not open this export's keys; nothing was changed.")


def check_passphrase(passphrase: str) -> None:
    """At least MIN_PASSPHRASE_LENGTH characters, no whitespace at either end (HTTP drops it from
    the X-Backup-Passphrase header a restore sends it in)."""
    if len(passphrase) < MIN_PASSPHRASE_LENGTH:
        raise BadRequest(f"The passphrase must be at least {MIN_PASSPHRASE_LENGTH} characters long.")
    if passphrase != passphrase.strip():
        raise BadRequest("The passphrase must not start or end with whitespace.")


def _fernet(passphrase: str, salt: bytes, n: int, r: int, p: int) -> Fernet:
    key = Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase.encode("utf-8"))
    return Fernet(base64.urlsafe_b64encode(key))


def wrap(document: dict[str, Any], keyring: Keyring, passphrase: str) -> dict[str, Any]:
    """`document` (a backup document, keys under the server's secret) with its keys under the
    passphrase instead, and the `key_wrap` that says how to open them."""
    check_passphrase(passphrase)
    salt = os.urandom(16)
    fernet = _fernet(passphrase, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    providers = [{**record, "api_key": None if record["api_key"] is None
                  else fernet.encrypt(keyring.decrypt(record["api_key"]).encode("utf-8")).decode("ascii")}
                 for record in document["providers"]]
    key_wrap = {"kdf": "scrypt", "n": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P,
                "salt": base64.b64encode(salt).decode("ascii"), "cipher": "fernet",
                "check": fernet.encrypt(_CHECK_TEXT).decode("ascii")}
    return {**document, "key_wrap": key_wrap, "providers": providers}


def unwrap(document: dict[str, Any], keyring: Keyring, passphrase: str | None) -> dict[str, Any]:
    """A portable `document` (its `key_wrap` already checked by the backup schema) as a plain backup
    document: every key opened with the passphrase and encrypted under the current secret.
    Raises PassphraseNeeded or WrongPassphrase, having changed nothing."""
    if passphrase is None:
        raise PassphraseNeeded()
    key_wrap = document["key_wrap"]
    try:
        # int(): JSON Schema's integers include 16384.0
        fernet = _fernet(passphrase, base64.b64decode(key_wrap["salt"], validate=True), int(key_wrap["n"]),
                         int(key_wrap["r"]), int(key_wrap["p"]))
        if fernet.decrypt(key_wrap["check"].encode("ascii")) != _CHECK_TEXT:
            raise WrongPassphrase()
        providers = [{**record, "api_key": None if record["api_key"] is None
                      else keyring.encrypt(fernet.decrypt(record["api_key"].encode("ascii")).decode("utf-8"))}
                     for record in document["providers"]]
    except MemoryError:  # OpenSSL's own limit on scrypt's memory, below ours on some builds
        raise Invalid("The portable export's scrypt parameters ask for more memory than a restore allows.",
                      [{"path": "/key_wrap/n", "message": "asks for too much memory"}]) from None
    except (InvalidToken, ValueError, UnicodeError):
        raise WrongPassphrase() from None
    return {key: value for key, value in document.items() if key != "key_wrap"} | {"providers": providers}
