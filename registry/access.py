"""Who may do what: the roles and their permissions (one table), and the actor a request acts as.

Every API route names the permission each of its methods needs (`handlers/`), the base handler
checks it against this table, and `/openapi.json` documents it: an endpoint cannot forget it.
"""

from __future__ import annotations

from dataclasses import dataclass

# Permissions, by what they let a caller do.
READ_PROVIDERS = "providers.read"        # list, get, history, events, resolve
CHANGE_PROVIDERS = "providers.change"    # create, update, delete, probe, sync, discover, test-connection
READ_CREDENTIALS = "credentials.read"    # a provider's key in plaintext
MANAGE_BACKUP = "backup.manage"          # export, restore
MANAGE_TOKENS = "tokens.manage"
READ_AUDIT = "audit.read"
READ_OWN_TOKEN = "tokens.self"
MANAGE_WEBHOOKS = "webhooks.manage"
READ_METRICS = "metrics.read"            # /metrics: a consumer (an application spending keys) has no need

ROLE_PERMISSIONS: dict[str, frozenset[str]] = {
    "admin": frozenset({READ_PROVIDERS, CHANGE_PROVIDERS, READ_CREDENTIALS, MANAGE_BACKUP, MANAGE_TOKENS,
                        READ_AUDIT, READ_OWN_TOKEN, MANAGE_WEBHOOKS, READ_METRICS}),
    "viewer": frozenset({READ_PROVIDERS, READ_OWN_TOKEN, READ_METRICS}),
    "consumer": frozenset({READ_PROVIDERS, READ_CREDENTIALS, READ_OWN_TOKEN}),
}
ROLES = tuple(ROLE_PERMISSIONS)

# Actor names of callers that are not tokens.
ADMIN_TOKEN_ACTOR = "BACKEND_ADMIN_TOKEN"
ANONYMOUS_ACTOR = "anonymous"   # no authentication configured (loopback only)
CLI_ACTOR = "cli"
SYSTEM_ACTOR = "system"         # start-up work such as key rotation


def roles_with(permission: str) -> list[str]:
    return [role for role, permissions in ROLE_PERMISSIONS.items() if permission in permissions]


@dataclass(frozen=True)
class Actor:
    """Who a change or a secret read is done by, for the audit log and for scoping."""
    name: str
    role: str
    token_id: int | None = None
    providers: frozenset[int] | None = None  # the providers this actor may see; None = all
    request_id: str | None = None
    client: str | None = None

    def may(self, permission: str) -> bool:
        return permission in ROLE_PERMISSIONS[self.role]

    def sees(self, provider_id: int) -> bool:
        return self.providers is None or provider_id in self.providers


CLI = Actor(CLI_ACTOR, "admin")
SYSTEM = Actor(SYSTEM_ACTOR, "admin")
