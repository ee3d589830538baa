"""Key rotation at start-up: with BACKEND_API_KEY_SECRET=new,old every key an old secret reads is
re-encrypted under the new one, in one transaction mirrored into the backup."""

from __future__ import annotations

from dataclasses import dataclass

from registry.inventory import Inventory
from registry.keyring import UndecryptableKey


@dataclass
class RotationReport:
    rotated: int
    undecryptable: list[str]


def rotate_keys(inventory: Inventory) -> RotationReport:
    """Re-encrypt under the current secret every key only an old one reads. With a single secret
    there is nothing to rotate and no key is read."""
    keyring = inventory.keyring
    if not keyring.has_old_secrets:
        return RotationReport(0, [])
    rotated, undecryptable = [], []
    for provider in inventory.list():
        ciphertext = provider.api_key_ciphertext
        if ciphertext is None or keyring.is_current(ciphertext):
            continue
        try:
            rotated.append((provider.id, keyring.rotate(ciphertext)))
        except UndecryptableKey:
            undecryptable.append(provider.name)
    if rotated:
        inventory.replace_ciphertexts(rotated)
    return RotationReport(len(rotated), undecryptable)


def first_undecryptable_key(inventory: Inventory) -> str | None:
    """The name of the first stored provider whose key no secret decrypts, checking only the first
    stored key: a cheap start-up check for a wrong secret."""
    first = inventory.first_provider_with_key()
    if first is None or inventory.keyring.can_decrypt(first.api_key_ciphertext):
        return None
    return first.name
