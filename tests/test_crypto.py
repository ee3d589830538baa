"""Keys at rest: the keyring, and the generated secret file."""

from __future__ import annotations

import os
import stat

import pytest

from registry.keyring import Keyring, SecretFileError, UndecryptableKey, derive_fernet_key, load_or_create_secret


def test_keys_round_trip_and_ciphertext_hides_the_key():
    keyring = Keyring(["secret-one"])
    ciphertext = keyring.encrypt("sk-round-trip-123456")
    assert "sk-round-trip" not in ciphertext
    assert keyring.decrypt(ciphertext) == "sk-round-trip-123456"
    assert keyring.encrypt("sk-round-trip-123456") != ciphertext  # random IV each time


def test_first_secret_encrypts_and_every_secret_decrypts():
    old = Keyring(["old-secret"])
    ciphertext = old.encrypt("sk-rotate-me")
    both = Keyring(["new-secret", "old-secret"])
    assert both.decrypt(ciphertext) == "sk-rotate-me"
    assert not both.is_current(ciphertext)
    rotated = both.rotate(ciphertext)
    assert both.is_current(rotated)
    assert Keyring(["new-secret"]).decrypt(rotated) == "sk-rotate-me"
    with pytest.raises(UndecryptableKey):
        old.decrypt(rotated)


@pytest.mark.parametrize("ciphertext", ["", "not a token", "gAAAAAB" + "A" * 80,
                                        Keyring(["another secret"]).encrypt("sk-other-secret-key")])
def test_unreadable_ciphertext_raises_a_typed_error_without_the_value(ciphertext):
    with pytest.raises(UndecryptableKey) as info:
        Keyring(["s"]).decrypt(ciphertext)
    assert str(info.value) == "the stored API key cannot be decrypted with the configured secrets"
    assert info.value.__cause__ is None and info.value.__suppress_context__  # "from None": no library error shown


def test_tampered_ciphertext_is_rejected():
    keyring = Keyring(["s"])
    ciphertext = keyring.encrypt("sk-abc")
    tampered = ciphertext[:-6] + ("A" if ciphertext[-6] != "A" else "B") + ciphertext[-5:]
    with pytest.raises(UndecryptableKey):
        keyring.decrypt(tampered)


def test_key_derivation_is_deterministic_and_secret_dependent():
    assert derive_fernet_key("a") == derive_fernet_key("a")
    assert derive_fernet_key("a") != derive_fernet_key("b")


def test_secret_file_is_generated_0600_and_reused(tmp_path):
    path = tmp_path / "secret.key"
    first = load_or_create_secret(path)
    assert len(first) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_or_create_secret(path) == first


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_secret_file_readable_by_others_is_refused(tmp_path, mode):
    path = tmp_path / "secret.key"
    load_or_create_secret(path)
    os.chmod(path, mode)
    with pytest.raises(SecretFileError, match="chmod 600"):
        load_or_create_secret(path)


def test_empty_secret_file_is_refused(tmp_path):
    path = tmp_path / "secret.key"
    path.write_text("\n")
    os.chmod(path, 0o600)
    with pytest.raises(SecretFileError, match="empty"):
        load_or_create_secret(path)
