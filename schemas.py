"""Every JSON schema of the API and of the backup document, and the validators built from them.

One source of truth: the handlers validate with these objects and `/openapi.json` is generated
from the same dicts.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import urlsplit

from jsonschema import Draft202012Validator, FormatChecker

PROVIDER_TYPES = ["openai", "anthropic", "gemini", "azure", "ollama"]
TIMESTAMP_PATTERN = (r"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])T([01]\d|2[0-3]):[0-5]\d:([0-5]\d|60)"
                     r"(\.\d{1,6})?Z$")

_format_checker = FormatChecker(formats=())


@_format_checker.checks("uri")
def is_provider_base_url(value: object) -> bool:
    """Absolute http(s) URL with a host, no user-info, no fragment, no whitespace or control chars."""
    if not isinstance(value, str):
        return True
    if re.search(r"[\s\x00-\x1f\x7f]", value):
        return False
    try:
        parts = urlsplit(value)
        _ = parts.port  # a port that is not a number from 0 to 65535 raises ValueError
    except ValueError:
        return False
    return (parts.scheme.lower() in ("http", "https") and bool(parts.hostname)
            and "@" not in parts.netloc and "#" not in value)


# What "trimming" removes: exactly the characters of JavaScript's \s (the regex dialect of JSON
# Schema), listed explicitly so Python's re, ECMA-262 regexes and str.strip(WHITESPACE) all agree.
WHITESPACE = "\t\n\x0b\x0c\r \xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a" \
             "\u2028\u2029\u202f\u205f\u3000\ufeff"
_WS = "[" + "".join(f"\\u{ord(c):04x}" for c in WHITESPACE) + "]"
_NOT_WS = "[^" + _WS[1:]
NAME = {"type": "string", "maxLength": 1000, "pattern": f"^{_WS}*{_NOT_WS}(?:[\\s\\S]{{0,98}}{_NOT_WS})?{_WS}*$",
        "description": "1-100 characters after trimming whitespace; unique, case-insensitively; stored trimmed."}
TRIMMED_NAME = {"type": "string", "minLength": 1, "maxLength": 100, "pattern": f"^{_NOT_WS}(?:[\\s\\S]*{_NOT_WS})?$"}
PROVIDER_TYPE = {"type": "string", "enum": PROVIDER_TYPES}
BASE_URL = {"type": "string", "format": "uri", "maxLength": 2048, "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://",
            "description": "Absolute http/https URL with a host, no user-info, no fragment; a trailing / is dropped."}
# Keys are opaque, but they travel in an HTTP header: printable ASCII only (a CR/LF would inject
# headers into the probe, and curl sends header lines as ASCII).
API_KEY = {"type": ["string", "null"], "minLength": 1, "maxLength": 4096, "pattern": "^[ -~]+$",
           "description": "Write-only; printable ASCII. null removes the key."}
MODELS = {"type": "array", "maxItems": 1000, "uniqueItems": True,
          "items": {"type": "string", "minLength": 1, "maxLength": 200}}
IS_ACTIVE = {"type": "boolean"}

# What a create body means for the fields it leaves out (also the schemas' documented defaults).
PROVIDER_DEFAULTS = {"type": "openai", "api_key": None, "models": [], "is_active": True}


def with_defaults(body: dict[str, Any]) -> dict[str, Any]:
    """A validated create body with every optional field filled in."""
    return {**PROVIDER_DEFAULTS, **body}


_WRITABLE = {"name": NAME, "type": PROVIDER_TYPE, "base_url": BASE_URL, "api_key": API_KEY,
             "models": MODELS, "is_active": IS_ACTIVE}

PROVIDER_CREATE = {
    "type": "object",
    "properties": {name: {**schema, "default": PROVIDER_DEFAULTS[name]} if name in PROVIDER_DEFAULTS else schema
                   for name, schema in _WRITABLE.items()},
    "required": ["name", "base_url"],
    "additionalProperties": False,
}
PROVIDER_UPDATE = {
    "type": "object",
    "properties": _WRITABLE,
    "additionalProperties": False,
}

_MILLISECONDS = {"type": ["number", "null"], "minimum": 0}
TIMINGS = {
    "type": "object",
    "properties": {k: _MILLISECONDS for k in ("dns_ms", "connect_ms", "tls_ms", "first_byte_ms", "total_ms")},
    "required": ["dns_ms", "connect_ms", "tls_ms", "first_byte_ms", "total_ms"],
    "additionalProperties": False,
}
TEST_RESULT = {
    "type": "object",
    "properties": {
        "status": {"type": "string", "enum": ["online", "unauthorized", "error", "offline"]},
        "status_code": {"type": ["integer", "null"], "minimum": 100, "maximum": 999},
        "latency_ms": {"type": "number", "minimum": 0},
        "detail": {"type": ["string", "null"], "maxLength": 2000},
        "missing_models": {"type": ["array", "null"], "maxItems": 1000, "items": {"type": "string"}},
        "checked_at": {"type": "string", "pattern": TIMESTAMP_PATTERN},
        "timings": TIMINGS,
    },
    "required": ["status", "status_code", "latency_ms", "detail", "missing_models", "checked_at"],
    "additionalProperties": False,
}

PROVIDER = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "name": {"type": "string"},
        "type": PROVIDER_TYPE,
        "base_url": {"type": "string"},
        "models": {"type": "array", "items": {"type": "string"}},
        "is_active": {"type": "boolean"},
        "has_api_key": {"type": "boolean"},
        "api_key_preview": {"type": ["string", "null"]},
        "created_at": {"type": "string"},
        "updated_at": {"type": "string"},
        "last_test": {"oneOf": [TEST_RESULT, {"type": "null"}]},
    },
    "required": ["id", "name", "type", "base_url", "models", "is_active", "has_api_key",
                 "api_key_preview", "created_at", "updated_at", "last_test"],
}

BACKUP_FORMAT = "provider-registry-backup"
BACKUP_VERSION = 1
BACKUP_PROVIDER = {
    "type": "object",
    "properties": {
        "id": {"type": "integer", "minimum": 1, "maximum": 2**62},
        "name": TRIMMED_NAME,
        "type": PROVIDER_TYPE,
        "base_url": {**BASE_URL, "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://[\\s\\S]*[^/]$"},
        "api_key": {"type": ["string", "null"], "minLength": 1, "maxLength": 20000,
                    "description": "Fernet ciphertext of the key, never the plaintext."},
        "models": MODELS,
        "is_active": IS_ACTIVE,
        "created_at": {"type": "string", "pattern": TIMESTAMP_PATTERN},
        "updated_at": {"type": "string", "pattern": TIMESTAMP_PATTERN},
        "last_test": {"oneOf": [TEST_RESULT, {"type": "null"}]},
    },
    "required": ["id", "name", "type", "base_url", "api_key", "models", "is_active",
                 "created_at", "updated_at", "last_test"],
    "additionalProperties": False,
}
BACKUP_DOCUMENT = {
    "type": "object",
    "properties": {
        "format": {"const": BACKUP_FORMAT},
        "version": {"const": BACKUP_VERSION},
        "exported_at": {"type": "string", "pattern": TIMESTAMP_PATTERN},
        "providers": {"type": "array", "items": BACKUP_PROVIDER},
    },
    "required": ["format", "version", "providers"],
}

ERROR = {
    "type": "object",
    "properties": {
        "detail": {"type": "string"},
        "errors": {"type": "array", "items": {
            "type": "object",
            "properties": {"path": {"type": "string"}, "message": {"type": "string"}},
            "required": ["path", "message"]}},
    },
    "required": ["detail"],
}

provider_create_validator = Draft202012Validator(PROVIDER_CREATE, format_checker=_format_checker)
provider_update_validator = Draft202012Validator(PROVIDER_UPDATE, format_checker=_format_checker)
backup_document_validator = Draft202012Validator(BACKUP_DOCUMENT, format_checker=_format_checker)

# Messages that never echo the value: jsonschema's own messages quote the instance, and an API key
# (or its ciphertext) must never come back in an error.
_SECRET_FIELDS = {"api_key"}
_FIELD_MESSAGES = {
    "name": "must be a string of 1 to 100 characters (after trimming)",
    "type": "must be one of: " + ", ".join(PROVIDER_TYPES),
    "base_url": "must be an absolute http or https URL with a host, without user-info or fragment, "
                "at most 2048 characters",
    "api_key": "must be null or a string of 1 to 4096 printable ASCII characters",
    "models": "must be an array of at most 1000 unique strings of 1 to 200 characters",
    "is_active": "must be true or false",
}


class InvalidJson(ValueError):
    """Bytes that are not a JSON text: not UTF-8, not JSON, NaN/Infinity, or a lone surrogate escape."""


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def parse_json(data: bytes) -> Any:
    """Strict JSON: UTF-8 only, no NaN/Infinity, and only strings that are real Unicode text (a
    lone surrogate such as "\\udc00" parses in Python but cannot be stored or sent on)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidJson("is not valid UTF-8") from None
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise InvalidJson("is not valid JSON") from None
    if _SURROGATE_ESCAPE.search(text):
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidJson("holds an invalid Unicode escape (a lone surrogate)") from None
    return value


def _reject_constant(name: str):
    raise ValueError(f"{name} is not JSON")


def validation_errors(validator: Draft202012Validator, instance: Any) -> list[dict[str, str]]:
    """All schema violations as `{"path": JSON pointer, "message": ...}`, sorted by path."""
    errors = []
    for error in validator.iter_errors(instance):
        parent = list(error.absolute_path)
        if error.validator == "required":
            fields = [f for f in error.validator_value if isinstance(error.instance, dict) and f not in error.instance]
            errors += [{"path": _pointer(parent + [f]), "message": "is required"} for f in fields]
        elif error.validator == "additionalProperties" and isinstance(error.instance, dict):
            known = error.schema.get("properties", {})
            errors += [{"path": _pointer(parent + [f]), "message": "is not a known field"}
                       for f in error.instance if f not in known]
        else:
            errors.append({"path": _pointer(parent), "message": _message(parent, error)})
    unique = {(e["path"], e["message"]): e for e in errors}
    return sorted(unique.values(), key=lambda e: (e["path"], e["message"]))


def _message(path: list, error) -> str:
    field = next((p for p in reversed(path) if isinstance(p, str)), None)
    if field in _SECRET_FIELDS:
        return _FIELD_MESSAGES[field]
    if error.validator in ("const", "enum") and field in (None, "format", "version"):
        return f"must be {error.validator_value!r}" if error.validator == "const" else error.message
    if field in _FIELD_MESSAGES:
        if error.validator == "uniqueItems":
            return "must not repeat a value"
        return _FIELD_MESSAGES[field]
    message = error.message
    return message if len(message) <= 300 else message[:297] + "..."


def _pointer(parts: list) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts) or "/"
