"""Every JSON schema of the API and of the backup document, and the validators built from them.

One source of truth: the handlers validate with these objects and `/openapi.json` is generated
from the same dicts.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from datetime import datetime
from typing import Any, Iterator
from urllib.parse import urlsplit

from jsonschema import Draft202012Validator, FormatChecker, ValidationError, _keywords, validators

from registry.access import ROLES
from registry.events import EVENT_TYPES
from registry.health import HEALTH_STATES
from registry.fields import MAX_MODEL_LENGTH, MAX_MODELS, PROVIDER_DEFAULTS, WHITESPACE
from registry.provider_types import PROVIDER_TYPES
from store.provider_rows import MAX_ID

# Real calendar dates only (no February 31st, February 29th in leap years), year 0001 and later;
# [0-9], not \d: Python's \d also matches other scripts' digits.
_YEAR = "(?:[0-9]{3}[1-9]|[0-9]{2}[1-9]0|[0-9][1-9]00|[1-9]000)"
_LEAP_YEAR = "(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:0[48]|[2468][048]|[13579][26])00)"
_MONTH_DAY = ("(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)"
              "|02-(?:0[1-9]|1[0-9]|2[0-8]))")
TIMESTAMP_PATTERN = (f"^(?:{_YEAR}-{_MONTH_DAY}|{_LEAP_YEAR}-02-29)"
                     r"T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,6})?Z$")

_format_checker = FormatChecker(formats=())


@_format_checker.checks("date-time")
def is_timestamp(value: object) -> bool:
    """A real UTC instant in the one format we write (no February 31st)."""
    if not isinstance(value, str) or not _ecma_regex(TIMESTAMP_PATTERN).search(value):
        return True if not isinstance(value, str) else False
    try:
        datetime.strptime(value[:19], "%Y-%m-%dT%H:%M:%S")
    except ValueError:
        return False
    return True


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


_WS_CHARS = "".join(f"\\u{ord(c):04x}" for c in WHITESPACE)
_CONTROL_CHARS = "\\u0000-\\u001f\\u007f-\\u009f"  # Unicode category Cc
_WS = f"[{_WS_CHARS}]"
_NAME_EDGE = f"[^{_WS_CHARS}{_CONTROL_CHARS}]"  # neither whitespace nor a control character
_NAME_INNER = f"[^{_CONTROL_CHARS}]"
NAME = {"type": "string", "maxLength": 1000,
        "pattern": f"^{_WS}*{_NAME_EDGE}(?:{_NAME_INNER}{{0,98}}{_NAME_EDGE})?{_WS}*$",
        "description": "1-100 characters after trimming whitespace, no control characters; unique, "
                       "case-insensitively (after Unicode NFC normalisation); stored trimmed and NFC-normalised."}
TRIMMED_NAME = {"type": "string", "minLength": 1, "maxLength": 100,
                "pattern": f"^{_NAME_EDGE}(?:{_NAME_INNER}*{_NAME_EDGE})?$"}
PROVIDER_TYPE = {"type": "string", "enum": list(PROVIDER_TYPES),
                 "description": "; ".join(f"{t.name}: {t.label}" for t in PROVIDER_TYPES.values())}
BASE_URL = {"type": "string", "format": "uri", "maxLength": 2048, "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://",
            "description": "Absolute http/https URL with a host, no user-info, no fragment; a trailing / is dropped."}
# Keys are opaque, but they travel in an HTTP header: printable ASCII only (a CR/LF would inject
# headers into the probe, and curl sends header lines as ASCII), no space at either end.
API_KEY = {"type": ["string", "null"], "minLength": 1, "maxLength": 4096, "pattern": "^[!-~](?:[ -~]*[!-~])?$",
           "description": "Write-only; printable ASCII without a space at either end. null removes the key."}
MODELS = {"type": "array", "maxItems": MAX_MODELS, "uniqueItems": True,
          "items": {"type": "string", "minLength": 1, "maxLength": MAX_MODEL_LENGTH}}
IS_ACTIVE = {"type": "boolean"}

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
TIMESTAMP = {"type": "string", "format": "date-time", "pattern": TIMESTAMP_PATTERN}
TIMINGS = {
    "type": "object",
    "properties": {k: _MILLISECONDS for k in ("dns_ms", "connect_ms", "tls_ms", "first_byte_ms", "total_ms")},
    "required": ["dns_ms", "connect_ms", "tls_ms", "first_byte_ms", "total_ms"],
    "additionalProperties": False,
}
TLS = {
    "type": "object",
    "description": "The server certificate of an https probe.",
    "properties": {"not_after": TIMESTAMP, "subject": {"type": "string", "maxLength": 2000},
                   "issuer": {"type": "string", "maxLength": 2000}, "days_left": {"type": "integer"}},
    "required": ["not_after", "subject", "issuer", "days_left"],
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
        "checked_at": TIMESTAMP,
        "timings": TIMINGS,
        "tls": {"oneOf": [TLS, {"type": "null"}]},
    },
    "required": ["status", "status_code", "latency_ms", "detail", "missing_models", "checked_at"],
    "additionalProperties": False,
}

HEALTH = {
    "type": "object",
    "properties": {"state": {"type": "string", "enum": list(HEALTH_STATES)}, "since": {"type": ["string", "null"]},
                   "reason": {"type": ["string", "null"]}},
    "required": ["state", "since", "reason"],
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
        "created_at": {"type": "string", "format": "date-time"},
        "updated_at": {"type": "string", "format": "date-time"},
        "last_test": {"oneOf": [TEST_RESULT, {"type": "null"}]},
        "health": HEALTH,
    },
    "required": ["id", "name", "type", "base_url", "models", "is_active", "has_api_key",
                 "api_key_preview", "created_at", "updated_at", "last_test", "health"],
}

BACKUP_FORMAT = "provider-registry-backup"
BACKUP_VERSION = 1
BACKUP_PROVIDER = {
    "type": "object",
    "properties": {
        "id": {"type": "integer", "minimum": 1, "maximum": MAX_ID},
        "name": TRIMMED_NAME,
        "type": PROVIDER_TYPE,
        "base_url": {**BASE_URL, "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://[\\s\\S]*[^/]$"},
        "api_key": {"type": ["string", "null"], "minLength": 1, "maxLength": 20000,
                    "description": "Fernet ciphertext of the key, never the plaintext."},
        "models": MODELS,
        "is_active": IS_ACTIVE,
        "created_at": TIMESTAMP,
        "updated_at": TIMESTAMP,
        "last_test": {"oneOf": [TEST_RESULT, {"type": "null"}]},
    },
    "required": ["id", "name", "type", "base_url", "api_key", "models", "is_active",
                 "created_at", "updated_at", "last_test"],
    "additionalProperties": False,
}
_BASE64 = "^[A-Za-z0-9+/]*={0,2}$"
KEY_WRAP = {
    "type": "object",
    "description": "In a portable export: the keys are encrypted (Fernet) under a key derived from a passphrase "
                   "with scrypt, these parameters and salt; `check` proves the passphrase.",
    "properties": {
        "kdf": {"const": "scrypt"},
        # Bounded: a hostile document must not make a restore spend gigabytes or minutes (scrypt takes
        # 128 × n × r bytes: at most 64 MiB here, twice what this release writes); scrypt itself
        # wants n < 2^(16 r), which r >= 2 always gives.
        "n": {"type": "integer", "enum": [2**14, 2**15, 2**16]},
        "r": {"type": "integer", "minimum": 2, "maximum": 8},
        "p": {"type": "integer", "minimum": 1, "maximum": 4},
        "salt": {"type": "string", "minLength": 16, "maxLength": 128, "pattern": _BASE64},
        "cipher": {"const": "fernet"},
        "check": {"type": "string", "minLength": 1, "maxLength": 1000},
    },
    "required": ["kdf", "n", "r", "p", "salt", "cipher", "check"],
    "additionalProperties": False,
}
BACKUP_DOCUMENT = {
    "type": "object",
    "properties": {
        "format": {"const": BACKUP_FORMAT},
        "version": {"const": BACKUP_VERSION, "description": "The JSON integer 1 (1.0 is refused)."},
        "exported_at": TIMESTAMP,
        "key_wrap": KEY_WRAP,
        "providers": {"type": "array", "items": BACKUP_PROVIDER},
    },
    "required": ["format", "version", "providers"],
    "additionalProperties": False,
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

def _ecma_regex(pattern: str) -> re.Pattern:
    """Compile a schema pattern (an ECMA-262 regex) for Python's re: there `$` also matches before
    a final newline, so it becomes `\\Z` (outside character classes and escapes)."""
    compiled = _ECMA_REGEXES.get(pattern)
    if compiled is None:
        out, in_class, escaped = [], False, False
        for char in pattern:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == "[":
                in_class = True
            elif char == "]":
                in_class = False
            elif char == "$" and not in_class:
                char = r"\Z"
            out.append(char)
        compiled = _ECMA_REGEXES[pattern] = re.compile("".join(out))
    return compiled


_ECMA_REGEXES: dict[str, re.Pattern] = {}


def _pattern(validator, pattern: str, instance: Any, schema: dict) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not _ecma_regex(pattern).search(instance):
        yield ValidationError(f"does not match {pattern!r}")


def _json_key(value: Any) -> Any:
    """A hashable key, equal for values JSON Schema calls equal (1 and 1.0 are, true and 1 are not)."""
    if isinstance(value, bool) or value is None:
        return ("literal", value)
    if isinstance(value, (int, float)):
        return ("number", value)
    if isinstance(value, str):
        return ("string", value)
    if isinstance(value, list):
        return ("array", tuple(_json_key(v) for v in value))
    return ("object", frozenset((k, _json_key(v)) for k, v in value.items()))


def _checked_items(instance: list, schema: dict) -> list:
    """The items worth checking one by one: past `maxItems` the array is refused anyway, so a huge
    one costs no more than the longest allowed."""
    limit = schema.get("maxItems")
    return instance if limit is None or len(instance) <= limit else instance[:limit]


def _unique_items(validator, unique: bool, instance: Any, schema: dict) -> Iterator[ValidationError]:
    """uniqueItems in linear time: jsonschema's own compares every pair of items that do not sort
    (mixed types), a quadratic cost a hostile body can make block the event loop for minutes."""
    if not unique or not validator.is_type(instance, "array"):
        return
    checked = _checked_items(instance, schema)
    try:
        keys = {_json_key(item) for item in checked}
    except RecursionError:
        yield ValidationError("has items nested too deeply to compare")
        return
    if len(keys) != len(checked):
        yield ValidationError("has non-unique elements")


def _items(validator, items: Any, instance: Any, schema: dict) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "array") or "prefixItems" in schema or items is False:
        yield from _keywords.items(validator, items, instance, schema)
        return
    for index, item in enumerate(_checked_items(instance, schema)):
        yield from validator.descend(instance=item, schema=items, path=index)


SchemaValidator = validators.extend(
    Draft202012Validator, validators={"pattern": _pattern, "uniqueItems": _unique_items, "items": _items})

TOKEN_CREATE = {
    "type": "object",
    "properties": {
        "name": NAME,
        "role": {"type": "string", "enum": list(ROLES)},
        "providers": {"type": ["array", "null"], "maxItems": 1000, "uniqueItems": True,
                      "items": {"type": "integer", "minimum": 1, "maximum": MAX_ID},
                      "description": "The provider ids the token may see; null (or absent) for all."},
        "expires_in_days": {"type": "integer", "minimum": 1, "maximum": 3650},
    },
    "required": ["name", "role"],
    "additionalProperties": False,
    # An admin sees every provider: a provider list is for viewer and consumer tokens.
    "if": {"properties": {"role": {"const": "admin"}}, "required": ["role"]},
    "then": {"properties": {"providers": {"type": "null"}}},
}
TOKEN = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"}, "name": {"type": "string"}, "role": {"type": "string", "enum": list(ROLES)},
        "providers": {"type": ["array", "null"], "items": {"type": "integer"}},
        "created_at": {"type": "string", "format": "date-time"},
        "expires_at": {"type": ["string", "null"], "format": "date-time"},
        "last_used_at": {"type": ["string", "null"], "format": "date-time"},
    },
    "required": ["id", "name", "role", "providers", "created_at", "expires_at", "last_used_at"],
}

PORTABLE_EXPORT = {
    "type": "object",
    "properties": {"passphrase": {"type": "string", "minLength": 12, "maxLength": 1024,
                                  # No space at either end: HTTP drops it from the header a restore sends.
                                  "pattern": "^[^\\s](?:[\\s\\S]*[^\\s])?$",
                                  "description": "What the export's keys are encrypted under (never stored); "
                                                 "no whitespace at either end."}},
    "required": ["passphrase"],
    "additionalProperties": False,
}
_EVENT_TYPE = {"type": "string", "enum": list(EVENT_TYPES)}
_DESCRIPTION = {"type": ["string", "null"], "maxLength": 500, "pattern": f"^[^{_CONTROL_CHARS}]*$"}
WEBHOOK_CREATE = {
    "type": "object",
    "properties": {
        "url": {**BASE_URL, "description": "Where events are POSTed; the rules of a provider's base_url."},
        "events": {"type": "array", "minItems": 1, "maxItems": len(EVENT_TYPES), "uniqueItems": True,
                   "items": _EVENT_TYPE, "description": "The event types sent to it; absent: all of them."},
        "description": _DESCRIPTION,
    },
    "required": ["url"],
    "additionalProperties": False,
}
WEBHOOK_UPDATE = {
    "type": "object",
    "properties": {**WEBHOOK_CREATE["properties"], "is_active": IS_ACTIVE},
    "additionalProperties": False,
}
WEBHOOK = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"}, "url": {"type": "string"}, "events": {"type": "array", "items": _EVENT_TYPE},
        "description": {"type": ["string", "null"]}, "is_active": {"type": "boolean"},
        "created_at": TIMESTAMP, "updated_at": TIMESTAMP,
    },
    "required": ["id", "url", "events", "description", "is_active", "created_at", "updated_at"],
}
EVENT = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"}, "provider_id": {"type": "integer"}, "provider_name": {"type": "string"},
        "type": _EVENT_TYPE, "at": TIMESTAMP,
        "from": {"type": ["string", "null"]}, "to": {"type": ["string", "null"]},
        "reason": {"type": ["string", "null"]}, "result": {"oneOf": [TEST_RESULT, {"type": "null"}]},
    },
    "required": ["id", "provider_id", "provider_name", "type", "at", "from", "to", "reason", "result"],
}
DELIVERY = {
    "type": "object",
    "properties": {
        "id": {"type": ["integer", "null"]}, "webhook_id": {"type": "integer"},
        "message_id": {"type": "string", "description": "The webhook-id header: the same on every retry."},
        "event_id": {"type": ["integer", "null"]}, "type": {"type": "string"},
        "attempt": {"type": "integer", "minimum": 1}, "at": TIMESTAMP,
        "status_code": {"type": ["integer", "null"]}, "latency_ms": {"type": ["number", "null"]},
        "error": {"type": ["string", "null"]},
        "outcome": {"type": "string", "enum": ["delivered", "retry", "failed"]},
        "next_attempt_at": {"type": ["string", "null"]},
    },
    "required": ["id", "webhook_id", "message_id", "event_id", "type", "attempt", "at", "status_code",
                 "latency_ms", "error", "outcome", "next_attempt_at"],
}

provider_create_validator = SchemaValidator(PROVIDER_CREATE, format_checker=_format_checker)
token_create_validator = SchemaValidator(TOKEN_CREATE, format_checker=_format_checker)
provider_update_validator = SchemaValidator(PROVIDER_UPDATE, format_checker=_format_checker)
backup_document_validator = SchemaValidator(BACKUP_DOCUMENT, format_checker=_format_checker)
webhook_create_validator = SchemaValidator(WEBHOOK_CREATE, format_checker=_format_checker)
portable_export_validator = SchemaValidator(PORTABLE_EXPORT, format_checker=_format_checker)
webhook_update_validator = SchemaValidator(WEBHOOK_UPDATE, format_checker=_format_checker)

# Messages that never echo the value: jsonschema's own messages quote the instance, and an API key
# (or its ciphertext) must never come back in an error.
_SECRET_FIELDS = {"api_key", "passphrase"}
_FIELD_MESSAGES = {
    "name": "must be a string of 1 to 100 characters (after trimming) without control characters",
    "type": "must be one of: " + ", ".join(PROVIDER_TYPES),
    "base_url": "must be an absolute http or https URL with a host, without user-info or fragment, "
                "at most 2048 characters",
    "api_key": "must be null or a string of 1 to 4096 printable ASCII characters without a space at either end",
    "models": "must be an array of at most 1000 unique strings of 1 to 200 characters",
    "is_active": "must be true or false",
    "url": "must be an absolute http or https URL with a host, without user-info or fragment, at most 2048 characters",
    "events": "must be a non-empty array of unique event types: " + ", ".join(EVENT_TYPES),
    "description": "must be null or a string of at most 500 characters without control characters",
    "passphrase": "must be a string of 12 to 1024 characters without whitespace at either end",
}


class InvalidJson(ValueError):
    """Bytes that are not a JSON text: not UTF-8, not JSON, NaN/Infinity, a number no double holds,
    or a lone surrogate escape."""


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def parse_json(data: bytes) -> Any:
    """Strict JSON: UTF-8 only, no NaN/Infinity, and only strings that are real Unicode text (a
    lone surrogate such as "\\udc00" parses in Python but cannot be stored or sent on)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidJson("is not valid UTF-8") from None
    try:
        value = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float, parse_int=_finite_int)
    except _NumberTooLarge:
        raise InvalidJson("holds a number too large for a double (such as 1e999)") from None
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


class _NumberTooLarge(ValueError):
    pass


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NumberTooLarge()
    return value


def _finite_int(text: str) -> int:
    value = int(text)
    if len(text) > 300:  # shorter ones always fit
        try:
            float(value)
        except OverflowError:
            raise _NumberTooLarge() from None
    return value


MAX_REPORTED_ERRORS = 100


def validation_errors(validator: Draft202012Validator, instance: Any) -> list[dict[str, str]]:
    """The schema violations as `{"path": JSON pointer, "message": ...}`, sorted by path: all of them
    up to MAX_REPORTED_ERRORS. Errors are found lazily, so a body with a million bad items costs
    no more than one with a hundred."""
    errors: list[dict[str, str]] = []
    for error in validator.iter_errors(instance):
        if len(errors) >= MAX_REPORTED_ERRORS:
            break
        parent = list(error.absolute_path)
        if error.validator == "required":
            fields = [f for f in error.validator_value if isinstance(error.instance, dict) and f not in error.instance]
            errors += [{"path": _pointer(parent + [f]), "message": "is required"} for f in fields]
        elif error.validator == "additionalProperties" and isinstance(error.instance, dict):
            known = error.schema.get("properties", {})
            unknown = (f for f in error.instance if f not in known)
            errors += [{"path": _pointer(parent + [f]), "message": "is not a known field"}
                       for f in itertools.islice(unknown, MAX_REPORTED_ERRORS)]
        else:
            errors.append({"path": _pointer(parent), "message": _message(parent, error)})
    unique = {(e["path"], e["message"]): e for e in errors[:MAX_REPORTED_ERRORS]}
    return sorted(unique.values(), key=lambda e: (e["path"], e["message"]))


def _message(path: list, error) -> str:
    field = next((p for p in reversed(path) if isinstance(p, str)), None)
    if field in _SECRET_FIELDS:
        return _FIELD_MESSAGES[field]
    if error.validator in ("const", "enum") and field in (None, "format", "version"):
        return _GENERIC_MESSAGES[error.validator].format(value=error.validator_value)
    if field in _FIELD_MESSAGES:
        if error.validator == "uniqueItems":
            return "must not repeat a value"
        return _FIELD_MESSAGES[field]
    return _GENERIC_MESSAGES.get(error.validator, "is invalid").format(value=error.validator_value)


# Messages by keyword for fields without their own: they name the rule, never the value (which may
# be a key's ciphertext, or a whole document).
_GENERIC_MESSAGES = {
    "type": "must be of type {value}", "minimum": "must be at least {value}", "maximum": "must be at most {value}",
    "minLength": "must be at least {value} characters long", "maxLength": "must be at most {value} characters long",
    "minItems": "must have at least {value} items", "maxItems": "must have at most {value} items",
    "pattern": "must match the pattern {value}", "format": "must be a valid {value}",
    "uniqueItems": "must not repeat a value", "oneOf": "matches none of the allowed shapes",
    "enum": "must be one of {value}", "const": "must be {value!r}",
}


def _pointer(parts: list) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts) or "/"
