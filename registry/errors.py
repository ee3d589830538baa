"""Errors that carry their own HTTP status and public message.

Every failure a client should hear about is a `RegistryError`: `detail` is one sentence meant for
the client (never a key), `errors` the per-field problems of a validation failure. The HTTP layer
renders them as they are; anything else is a generic 500. Store errors (SQL-level, typed in
`store/`) become registry errors in one place: `store_errors_translated`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from store.provider_rows import DuplicateName, IdsExhausted, ProviderNotFound
from store.webhooks import WebhookNotFound


class RegistryError(Exception):
    status = 500

    def __init__(self, detail: str, errors: list[dict[str, str]] | None = None):
        super().__init__(detail)
        self.detail = detail
        self.errors = errors


class BadRequest(RegistryError):
    status = 400


class NotFound(RegistryError):
    status = 404


class Conflict(RegistryError):
    status = 409


class Invalid(RegistryError):
    status = 422


class UpstreamUnusable(RegistryError):
    """The provider gave no usable answer (non-2xx, offline, redirect, no model list)."""
    status = 502


class Failed(RegistryError):
    """Something the server needs failed (the backup file cannot be written, say); nothing changed."""
    status = 500


@contextmanager
def store_errors_translated() -> Iterator[None]:
    """The one map from the store's typed errors to the registry's (not-found 404, duplicate 409)."""
    try:
        yield
    except ProviderNotFound as exc:
        raise NotFound(f"Provider {exc.provider_id} does not exist.") from None
    except WebhookNotFound as exc:
        raise NotFound(f"Webhook {exc.webhook_id} does not exist.") from None
    except DuplicateName as exc:
        raise Conflict(f"A provider named {exc.name!r} already exists (names are compared case-insensitively).") \
            from None
    except IdsExhausted as exc:
        raise Conflict(f"No provider id is left: ids go up to {exc.max_id}, and a restore used the highest.") \
            from None
