"""Start-up housekeeping: keys and webhook secrets rotated to the current secret, keys no secret
reads named, and the backup made to mirror the database."""

from __future__ import annotations

import logging

from registry.inventory import Inventory
from registry.key_rotation import first_undecryptable_key, rotate_keys
from registry.webhooks import WebhookService

log = logging.getLogger("provider_registry")


def prepare_at_start_up(inventory: Inventory, webhooks: WebhookService) -> None:
    report = rotate_keys(inventory)
    if report.rotated:
        log.info("re-encrypted %d API keys under the current secret", report.rotated)
    if inventory.keyring.has_old_secrets and (rotated := webhooks.rotate_secrets()):
        log.info("re-encrypted %d webhook secrets under the current secret", rotated)
    for name in report.undecryptable:
        log.warning("the API key of provider %r cannot be decrypted with the configured secrets", name)
    if not inventory.keyring.has_old_secrets:
        name = first_undecryptable_key(inventory)
        if name is not None:
            log.warning("the API key of provider %r cannot be decrypted with the configured secret: is "
                        "BACKEND_API_KEY_SECRET (or data/secret.key) the one the keys were stored with?", name)
    warning = inventory.reconcile_backup()
    if warning:
        log.warning(warning)
