"""/openapi.json, built from the same schema objects the handlers validate with, and /docs, Swagger UI
served from the files of the installed swagger-ui-py package (no internet needed)."""

from __future__ import annotations

import copy
import functools
import json
import re
import importlib.util
import os
from typing import Any

from registry import schemas
from registry.access import roles_with
from registry.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from handlers.base import BaseHandler, GuardedStaticFileHandler

# Located, not imported: the package's Python side (Jinja2, YAML) is not needed to serve its files.
SWAGGER_UI_DIR = os.path.join(importlib.util.find_spec("swagger_ui").submodule_search_locations[0], "static")
API_VERSION = "1.0.0"


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


_ERROR_DESCRIPTIONS = {
    400: "Malformed request: body not JSON / not an object, or a bad query parameter.",
    401: "Missing or wrong admin token.",
    403: "Refused: a cross-origin request from an origin not in BACKEND_ALLOWED_ORIGINS, or a Host the server "
         "does not answer to (DNS rebinding).",
    404: "Unknown provider id or path.",
    409: "Conflict (duplicate name, a bulk test already running, keys that no secret decrypts, or restore "
         "pending: the database is empty next to a backup that holds providers).",
    413: "Body larger than 1 MiB.",
    415: "A body that is not sent as Content-Type: application/json.",
    422: "Body fails the schema; `errors` lists each problem with its JSON pointer.",
    502: "The provider gave no usable model list.",
}


def _errors(*codes: int) -> dict[str, Any]:
    responses = {str(code): _json(_ref("Error"), _ERROR_DESCRIPTIONS[code]) for code in codes}
    if 401 in codes:
        responses["401"]["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"}}}
    return responses


_PROVIDER_ID = {"name": "provider_id", "in": "path", "required": True,
                "schema": {"type": "integer", "minimum": 0, "maximum": 999_999_999_999_999_999}}
_LIMIT = {"name": "limit", "in": "query", "required": False,
          "schema": {"type": "integer", "minimum": 1, "maximum": 1000}}


def _operation(operation_id: str, tag: str, summary: str, responses: dict[str, Any], body: dict | None = None,
               parameters: list | None = None, body_required: bool = True, public: bool = False) -> dict[str, Any]:
    operation: dict[str, Any] = {"operationId": operation_id, "tags": [tag], "summary": summary,
                                 "responses": responses}
    if parameters:
        operation["parameters"] = parameters
    if body is not None:
        operation["requestBody"] = {"required": body_required, "content": {"application/json": {"schema": body}}}
    if public:
        operation["security"] = []
    else:
        operation["responses"] = {**responses, **_errors(401, 403, *([415] if body is not None else []))}
    return operation


def build_openapi(routes: tuple = ()) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the API; `routes` (the Application's) give each operation the
    roles that may call it."""
    return _build_openapi(tuple((route[0], route[1]) for route in routes))


@functools.cache
def _build_openapi(routes: tuple[tuple[str, type], ...]) -> dict[str, Any]:
    """Built once per route table: the schemas do not change while running."""
    bulk_result = {**schemas.TEST_RESULT,
                   "properties": {"id": {"type": "integer"}, "name": {"type": "string"},
                                  **schemas.TEST_RESULT["properties"]},
                   "required": ["id", "name", *schemas.TEST_RESULT["required"]]}
    history = {"type": "object", "required": ["results", "summary"], "properties": {
        "results": {"type": "array", "items": _ref("TestResult")},
        "summary": {"type": "object", "required": ["count", "online_pct", "p50_ms", "p95_ms"], "properties": {
            "count": {"type": "integer"}, "online_pct": {"type": ["number", "null"]},
            "p50_ms": {"type": ["number", "null"]}, "p95_ms": {"type": ["number", "null"]}}}}}
    discovered = {"type": "object", "required": ["models", "missing", "new"], "properties": {
        k: {"type": "array", "items": {"type": "string"}} for k in ("models", "missing", "new")}}
    restored = {"type": "object", "required": ["restored"], "properties": {"restored": {"type": "integer"}}}
    preview = {"type": "object", "required": ["dry_run", "added", "removed", "changed", "unchanged"], "properties": {
        "dry_run": {"const": True},
        "added": {"type": "array", "items": {"type": "string"}},
        "removed": {"type": "array", "items": {"type": "string"}},
        "changed": {"type": "array", "items": {"type": "object", "required": ["name", "fields"], "properties": {
            "name": {"type": "string"}, "fields": {"type": "array", "items": {"type": "string"}}}}},
        "unchanged": {"type": "integer"}}}
    list_parameters = [
        {"name": "is_active", "in": "query", "required": False,
         "schema": {"type": "string", "enum": ["true", "false"]}},
        {"name": "type", "in": "query", "required": False, "schema": _ref("ProviderType")},
        {"name": "q", "in": "query", "required": False,
         "schema": {"type": "string", "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"},
         "description": "Name substring, case-insensitive; % and _ are literal; no control characters."},
        _LIMIT,
        {"name": "offset", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 0}},
    ]
    credentials = {"type": "object", "required": ["id", "name", "type", "base_url", "api_key", "headers", "query"],
                   "properties": {"id": {"type": "integer"}, "name": {"type": "string"}, "type": _ref("ProviderType"),
                                  "base_url": {"type": "string"}, "api_key": {"type": ["string", "null"]},
                                  "headers": {"type": "object", "additionalProperties": {"type": "string"}},
                                  "query": {"type": "object", "additionalProperties": {"type": "string"}}}}
    resolved = {"type": "object", "required": ["model", "candidates"], "properties": {
        "model": {"type": "string"}, "candidates": {"type": "array", "items": {
            "type": "object", "required": ["id", "name", "type", "base_url", "health", "p50_ms"], "properties": {
                "id": {"type": "integer"}, "name": {"type": "string"}, "type": _ref("ProviderType"),
                "base_url": {"type": "string"}, "health": schemas.HEALTH["properties"]["state"],
                "p50_ms": {"type": ["number", "null"]}}}}}}
    created_token = {**schemas.TOKEN, "properties": {**schemas.TOKEN["properties"], "token": {"type": "string"}},
                     "required": [*schemas.TOKEN["required"], "token"]}
    audit_page = {"type": "object", "required": ["events", "next_before"], "properties": {
        "events": {"type": "array", "items": {"type": "object"}}, "next_before": {"type": ["integer", "null"]}}}
    created_webhook = {**schemas.WEBHOOK, "properties": {**schemas.WEBHOOK["properties"], "secret": {
        "type": "string", "description": "whsec_ + base64 of 32 random bytes: the Standard Webhooks signing "
                                         "secret, shown this once."}},
        "required": [*schemas.WEBHOOK["required"], "secret"]}
    provider_events = {"type": "object", "required": ["events"],
                       "properties": {"events": {"type": "array", "items": _ref("Event")}}}
    event_feed = {"type": "object", "required": ["events", "next_after"], "properties": {
        "events": {"type": "array", "items": _ref("Event")},
        "next_after": {"type": "integer", "description": "The `after` of the next poll."}}}
    deliveries = {"type": "object", "required": ["deliveries"],
                  "properties": {"deliveries": {"type": "array", "items": _ref("Delivery")}}}
    webhook_id = {"name": "webhook_id", "in": "path", "required": True,
                  "schema": {"type": "integer", "minimum": 0, "maximum": 999_999_999_999_999_999}}
    webhook = _json(_ref("Webhook"), "The webhook (never its secret).")
    provider = _json(_ref("Provider"), "The provider.")
    test_result = _json(_ref("TestResult"), "The result of the connectivity test.")
    paths = {
        "/ping": {"get": _operation("ping", "service", "Liveness", {"200": _json(
            {"type": "object", "properties": {"status": {"const": "ok"}}, "required": ["status"]}, "Alive.")},
            public=True)},
        "/metrics": {"get": {**_operation("getMetrics", "service", "Prometheus metrics (open when no authentication "
                                          "is configured; a viewer sees only its providers' series)", {
            "200": {"description": "The Prometheus text format.",
                    "content": {METRICS_CONTENT_TYPE: {"schema": {"type": "string"}}}},
            "404": _json(_ref("Error"), "Metrics are off (BACKEND_METRICS=off).")})}},
        "/api/providers": {
            "get": _operation("listProviders", "providers", "List providers (ordered by id)", {
                "200": {**_json({"type": "array", "items": _ref("Provider")}, "One page of providers."),
                        "headers": {"X-Total-Count": {"schema": {"type": "integer"},
                                                      "description": "How many match the filters in all."}}},
                **_errors(400)}, parameters=list_parameters),
            "post": _operation("createProvider", "providers", "Create a provider", {
                "201": {**provider, "headers": {"Location": {"schema": {"type": "string"}}}},
                **_errors(400, 409, 413, 422)}, body=_ref("ProviderCreate")),
        },
        "/api/providers/{provider_id}": {
            "parameters": [_PROVIDER_ID],
            "get": _operation("getProvider", "providers", "Get a provider", {"200": provider, **_errors(404)}),
            "patch": _operation("updateProvider", "providers",
                                "Update some fields of a provider (`api_key: null` removes the key)",
                                {"200": provider, **_errors(400, 404, 409, 413, 422)}, body=_ref("ProviderUpdate")),
            "delete": _operation("deleteProvider", "providers", "Delete a provider",
                                 {"204": {"description": "Deleted."}, **_errors(404, 409)}),
        },
        "/api/providers/{provider_id}/test": {
            "parameters": [_PROVIDER_ID],
            "post": _operation("testProvider", "probes", "Test a provider's connectivity (result stored as last_test)",
                               {"200": test_result, **_errors(404, 409)}),
        },
        "/api/providers/test": {
            "post": _operation("testAllProviders", "probes", "Test every active provider concurrently", {"200": _json(
                {"type": "object", "required": ["results"],
                 "properties": {"results": {"type": "array", "items": _ref("BulkTestResult")}}}, "All results."),
                **_errors(409)}),
        },
        "/api/providers/test-connection": {
            "post": _operation("testConnection", "probes", "Test an unsaved provider (nothing is stored)",
                               {"200": test_result, **_errors(400, 413, 422)}, body=_ref("ProviderCreate")),
        },
        "/api/providers/{provider_id}/tests": {
            "parameters": [_PROVIDER_ID],
            "get": _operation("getProviderTests", "probes",
                              "Probe history (newest first, last 100 kept) with a summary",
                              {"200": _json(history, "History."), **_errors(400, 404)}, parameters=[_LIMIT]),
        },
        "/api/providers/{provider_id}/models/discover": {
            "parameters": [_PROVIDER_ID],
            "get": _operation("discoverModels", "probes", "Compare configured models with the provider's list",
                              {"200": _json(discovered, "Upstream, missing and new models."), **_errors(404, 502)}),
        },
        "/api/providers/{provider_id}/models/sync": {
            "parameters": [_PROVIDER_ID],
            "post": _operation("syncModels", "probes", "Set the provider's models to its upstream list",
                               {"200": provider, **_errors(404, 409, 502)}),
        },
        "/api/admin/providers/export": {
            "get": _operation("exportBackup", "backup", "The backup document",
                              {"200": _json(_ref("BackupDocument"), "The whole inventory.")}),
            "post": _operation("exportPortableBackup", "backup",
                               "A portable export: the backup document with its keys under a passphrase (scrypt; "
                               "see key_wrap) instead of the server's secret",
                               {"200": _json(_ref("BackupDocument"), "The whole inventory, keys under the passphrase."),
                                **_errors(400, 413, 422)}, body=_ref("PortableExport")),
        },
        "/api/admin/providers/restore": {
            "post": _operation(
                "restoreBackup", "backup",
                "Restore the inventory from a backup document (the body) or, with an empty body, the backup file",
                {"200": _json({"oneOf": [_ref("RestoreResult"), _ref("RestorePreview")]},
                              "Restored, or the dry-run report."),
                 **_errors(400, 409, 413, 422)},
                body=_ref("BackupDocument"), body_required=False,
                parameters=[{"name": "dry_run", "in": "query", "required": False,
                             "schema": {"type": "string", "enum": ["true", "false"]}},
                            {"name": "X-Backup-Passphrase", "in": "header", "required": False,
                             "schema": {"type": "string"},
                             "description": "The passphrase of a portable export (UTF-8)."}]),
        },
        "/api/providers/{provider_id}/credentials": {
            "parameters": [_PROVIDER_ID],
            "get": _operation("getCredentials", "access",
                              "The provider's key and the headers and query its type authenticates with (audited)",
                              {"200": _json(credentials, "What an application needs to call the provider."),
                               **_errors(404, 409)}),
        },
        "/api/resolve": {
            "get": _operation("resolveModel", "access", "The active providers offering a model, best first",
                              {"200": _json(resolved, "Candidates, best first."), **_errors(400, 404)},
                              parameters=[{"name": "model", "in": "query", "required": True,
                                           "schema": {"type": "string", "minLength": 1}},
                                          {"name": "type", "in": "query", "required": False,
                                           "schema": _ref("ProviderType")}]),
        },
        "/api/providers/{provider_id}/events": {
            "parameters": [_PROVIDER_ID],
            "get": _operation("getProviderEvents", "health", "The provider's health events, newest first",
                              {"200": _json(provider_events, "Events."), **_errors(400, 404)}, parameters=[_LIMIT]),
        },
        "/api/events": {
            "get": _operation("listEvents", "health", "The events after an id, oldest first: a feed to poll",
                              {"200": _json(event_feed, "Events."), **_errors(400)},
                              parameters=[_LIMIT, {"name": "after", "in": "query", "required": False,
                                                   "schema": {"type": "integer", "minimum": 0,
                                                              "maximum": 2**53 - 1}}]),
        },
        "/api/webhooks": {
            "get": _operation("listWebhooks", "webhooks", "The webhooks (never their secrets)",
                              {"200": _json({"type": "array", "items": _ref("Webhook")}, "Every webhook.")}),
            "post": _operation("createWebhook", "webhooks",
                               "Create a webhook (its signing secret is shown this once)",
                               {"201": _json(created_webhook, "The webhook and its secret."),
                                **_errors(400, 413, 422)}, body=_ref("WebhookCreate")),
        },
        "/api/webhooks/{webhook_id}": {
            "parameters": [webhook_id],
            "get": _operation("getWebhook", "webhooks", "Get a webhook", {"200": webhook, **_errors(404)}),
            "patch": _operation("updateWebhook", "webhooks", "Update some fields of a webhook",
                                {"200": webhook, **_errors(400, 404, 413, 422)}, body=_ref("WebhookUpdate")),
            "delete": _operation("deleteWebhook", "webhooks", "Delete a webhook (its pending messages go with it)",
                                 {"204": {"description": "Deleted."}, **_errors(404)}),
        },
        "/api/webhooks/{webhook_id}/ping": {
            "parameters": [webhook_id],
            "post": _operation("pingWebhook", "webhooks", "Send a webhook.ping now and answer with the attempt",
                               {"200": _json(_ref("Delivery"), "The delivery attempt."), **_errors(404)}),
        },
        "/api/webhooks/{webhook_id}/deliveries": {
            "parameters": [webhook_id],
            "get": _operation("listWebhookDeliveries", "webhooks", "The webhook's delivery attempts, newest first",
                              {"200": _json(deliveries, "Attempts."), **_errors(400, 404)}, parameters=[_LIMIT]),
        },
        "/api/tokens": {
            "get": _operation("listTokens", "access", "The API tokens (never their secrets)",
                              {"200": _json({"type": "array", "items": _ref("Token")}, "Every token.")}),
            "post": _operation("createToken", "access", "Create an API token (its secret is shown this once)",
                               {"201": _json(created_token, "The token and its secret."),
                                **_errors(400, 409, 413, 422)}, body=_ref("TokenCreate")),
        },
        "/api/tokens/self": {
            "get": _operation("getOwnToken", "access", "The caller's own token",
                              {"200": _json({"type": "object"}, "The caller's token record.")}),
        },
        "/api/tokens/{token_id}": {
            "parameters": [{"name": "token_id", "in": "path", "required": True,
                            "schema": {"type": "integer", "minimum": 0, "maximum": 999_999_999_999_999_999}}],
            "delete": _operation("revokeToken", "access", "Revoke an API token",
                                 {"204": {"description": "Revoked."}, **_errors(404, 409)}),
        },
        "/api/audit": {
            "get": _operation("listAuditEvents", "access", "The audit log, newest first",
                              {"200": _json(audit_page, "One page of records."), **_errors(400)},
                              parameters=[_LIMIT, *({"name": name, "in": "query", "required": False,
                                                     "schema": schema} for name, schema in (
                                  ("before", {"type": "integer", "minimum": 1, "maximum": 2**53 - 1}),
                                  ("action", {"type": "string", "minLength": 1}),
                                  ("actor", {"type": "string"}),
                                  ("target_id", {"type": "integer", "minimum": 0, "maximum": 2**53 - 1})))]),
        },
    }
    _document_roles(paths, routes)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Provider registry", "version": API_VERSION,
                 "description": "Inventory of the LLM providers a team uses: base URLs, encrypted API keys, "
                                "models and reachability."},
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": _shared_by_reference({
                "ProviderType": schemas.PROVIDER_TYPE,
                "ProviderCreate": schemas.PROVIDER_CREATE,
                "ProviderUpdate": schemas.PROVIDER_UPDATE,
                "Provider": schemas.PROVIDER,
                "TestResult": schemas.TEST_RESULT,
                "Timings": schemas.TIMINGS,
                "BulkTestResult": bulk_result,
                "RestoreResult": restored,
                "RestorePreview": preview,
                "BackupDocument": schemas.BACKUP_DOCUMENT,
                "BackupProvider": schemas.BACKUP_PROVIDER,
                "Error": schemas.ERROR,
                "Role": schemas.TOKEN_CREATE["properties"]["role"],
                "Token": schemas.TOKEN,
                "TokenCreate": schemas.TOKEN_CREATE,
                "PortableExport": schemas.PORTABLE_EXPORT,
                "KeyWrap": schemas.KEY_WRAP,
                "Health": schemas.HEALTH,
                "Event": schemas.EVENT,
                "Webhook": schemas.WEBHOOK,
                "WebhookCreate": schemas.WEBHOOK_CREATE,
                "WebhookUpdate": schemas.WEBHOOK_UPDATE,
                "Delivery": schemas.DELIVERY,
            }),
            "securitySchemes": {"bearerAuth": {
                "type": "http", "scheme": "bearer",
                "description": "BACKEND_ADMIN_TOKEN or an API token (prt_...). Each operation's security "
                               "requirement lists the roles that may call it."}},
        },
        "security": [{"bearerAuth": []}],
    }


def _document_roles(paths: dict[str, Any], routes: tuple) -> None:
    """Each API operation's security requirement lists the roles its handler's permission table
    allows (OpenAPI 3.1: role names for an http scheme), read from the routes themselves."""
    for pattern, handler, *_ in routes:
        path = re.sub(r"\(\?P<(\w+)>[^)]*\)", r"{\1}", pattern).replace("\\.", ".")
        permissions = getattr(handler, "permissions", None)
        for method, operation in paths.get(path, {}).items():
            if method == "parameters" or not permissions:
                continue
            permission = permissions.get(method.upper())
            operation["security"] = [{"bearerAuth": roles_with(permission) if permission else []}]
            operation["x-permission"] = permission


def _shared_by_reference(components: dict[str, dict]) -> dict[str, dict]:
    """Copies of the validating schemas in which every other shared schema appears as a `$ref`
    (a generated client then gets one class per shared schema, not one per place it is used)."""
    shared = {json.dumps(schema, sort_keys=True): name for name, schema in components.items()}

    def referenced(value: Any, top: bool = False) -> Any:
        if isinstance(value, dict):
            annotations = {k: v for k, v in value.items() if k == "default"}
            bare = {k: v for k, v in value.items() if k != "default"}
            name = shared.get(json.dumps(bare, sort_keys=True))
            if name is not None and not top:
                return {**_ref(name), **annotations}  # OpenAPI 3.1: a $ref may carry a default beside it
            return {key: referenced(item) for key, item in value.items()}
        if isinstance(value, list):
            return [referenced(item) for item in value]
        return value

    return {name: referenced(copy.deepcopy(schema), top=True) for name, schema in components.items()}


class OpenApiHandler(BaseHandler):
    def get(self) -> None:
        self.write_json(build_openapi(self.settings["routes"]))


_DOCS_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Provider registry API</title>
  <link rel="stylesheet" href="/docs/static/swagger-ui.css">
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="/docs/static/swagger-ui-bundle.js"></script>
  <script src="/docs/init.js"></script>
</body>
</html>
"""

# Kept out of the page so the Content-Security-Policy can forbid inline scripts.
_DOCS_INIT = """window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui", deepLinking: true,
  persistAuthorization: false});
"""

_DOCS_CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
             "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'")


class DocsHandler(BaseHandler):
    def get(self) -> None:
        self.set_header("Content-Type", "text/html; charset=UTF-8")
        self.set_header("Content-Security-Policy", _DOCS_CSP)
        self.finish(_DOCS_PAGE)


class DocsInitHandler(BaseHandler):
    def get(self) -> None:
        self.set_header("Content-Type", "application/javascript; charset=UTF-8")
        self.finish(_DOCS_INIT)


default_handlers = [
    (r"/openapi\.json", OpenApiHandler),
    (r"/docs/?", DocsHandler),
    (r"/docs/init\.js", DocsInitHandler),
    (r"/docs/static/(.*)", GuardedStaticFileHandler, {"path": SWAGGER_UI_DIR}),
]
