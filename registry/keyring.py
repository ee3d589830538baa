"""API keys at rest: a keyring of Fernet keys derived from the configured secrets.

The first secret encrypts, every secret decrypts (rotation). Keys are derived with scrypt, so a
weak secret still costs an attacker real work per guess. Nothing here logs, prints or raises with
a plaintext key in it.
"""

from __future__ import annotations

import base64
import os
import secrets
import stat
from pathlib import Path
from typing import Sequence

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from registry.errors import Conflict

# Fixed salt: the same secret must derive the same key on every instance that restores a backup.
_KDF_SALT = b"provider-registry/api-key/v1"
_PREVIEW_MIN_LENGTH = 12


class UndecryptableKey(Conflict):
    """No configured secret decrypts this ciphertext (wrong secret, or the data was altered)."""

    def __init__(self) -> None:
        super().__init__("the stored API key cannot be decrypted with the configured secrets")


class SecretFileError(Exception):
    """The generated secret file is unreadable, empty or readable by others."""


def derive_fernet_key(secret: str) -> bytes:
    kdf = Scrypt(salt=_KDF_SALT, length=32, n=2**14, r=8, p=1)
    return base64.urlsafe_b64encode(kdf.derive(secret.encode("utf-8")))


class Keyring:
    """Encrypts with the first secret, decrypts with any of them."""

    def __init__(self, secrets_: Sequence[str]):
        if not secrets_:
            raise ValueError("a keyring needs at least one secret")
        self._fernets = [Fernet(derive_fernet_key(s)) for s in secrets_]
        self._multi = MultiFernet(self._fernets)

    @property
    def has_old_secrets(self) -> bool:
        return len(self._fernets) > 1

    def encrypt(self, api_key: str) -> str:
        return self._multi.encrypt(api_key.encode("utf-8")).decode("ascii")

    def decrypt(self, ciphertext: str) -> str:
        try:
            return self._multi.decrypt(ciphertext.encode("ascii")).decode("utf-8")
        except (InvalidToken, UnicodeError, ValueError):
            raise UndecryptableKey() from None

    def can_decrypt(self, ciphertext: str) -> bool:
        try:
            self.decrypt(ciphertext)
        except UndecryptableKey:
            return False
        return True

    def is_current(self, ciphertext: str) -> bool:
        """True when the first (current) secret decrypts it: nothing to rotate."""
        try:
            self._fernets[0].decrypt(ciphertext.encode("ascii"))
        except (InvalidToken, ValueError):
            return False
        return True

    def rotate(self, ciphertext: str) -> str:
        """Re-encrypt under the current secret; raises UndecryptableKey when no secret can read it."""
        try:
            return self._multi.rotate(ciphertext.encode("ascii")).decode("ascii")
        except (InvalidToken, ValueError):
            raise UndecryptableKey() from None

    def preview(self, ciphertext: str | None) -> str | None:
        """'…' plus the last four characters of a key of 12+ characters, a bare '…' for a shorter
        one, None without a key or when it cannot be decrypted. Not cached here: it is part of the
        provider JSON the read cache keeps, so a key is decrypted only when that JSON is rendered."""
        if ciphertext is None:
            return None
        try:
            key = self.decrypt(ciphertext)
        except UndecryptableKey:
            return None
        return "…" + key[-4:] if len(key) >= _PREVIEW_MIN_LENGTH else "…"


def load_or_create_secret(path: Path) -> str:
    """The secret in `path`, generated (random, mode 0600) when the file does not exist yet.

    A file that others can read is refused rather than silently trusted or "fixed".
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_secret_file(path)
    except OSError as exc:
        raise SecretFileError(f"cannot create the secret file {path}: {exc.strerror}") from None
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_urlsafe(48) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    return _read_secret_file(path)


def _read_secret_file(path: Path) -> str:
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise SecretFileError(
                f"the secret file {path} has mode {mode:04o}, readable by others; run: chmod 600 {path}")
        secret = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise SecretFileError(f"cannot read the secret file {path}: {exc.strerror}") from None
    except UnicodeError:
        raise SecretFileError(f"the secret file {path} is not text") from None
    if not secret:
        raise SecretFileError(f"the secret file {path} is empty; delete it to generate a new one "
                              "(keys encrypted with the old secret will no longer decrypt)")
    return secret
