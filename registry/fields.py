"""What a provider's fields mean once validated: the defaults of a create body, and the normal
form names and base URLs are stored (and compared) in."""

from __future__ import annotations

import unicodedata
from typing import Any

from registry.errors import Invalid
from registry.provider_types import DEFAULT_TYPE

MAX_NAME_LENGTH = 100
MAX_MODELS = 1000
MAX_MODEL_LENGTH = 200
NAME_TOO_LONG = f"is longer than {MAX_NAME_LENGTH} characters once Unicode-normalised (NFC)"

# What trimming removes: exactly the characters of JavaScript's \s (the regex dialect of JSON
# Schema), listed explicitly so Python's re, ECMA-262 regexes and str.strip(WHITESPACE) all agree.
WHITESPACE = "\t\n\x0b\x0c\r \xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a" \
             "\u2028\u2029\u202f\u205f\u3000\ufeff"

# What a create body means for the fields it leaves out (also the schemas' documented defaults).
PROVIDER_DEFAULTS: dict[str, Any] = {"type": DEFAULT_TYPE, "api_key": None, "models": [], "is_active": True}


def normalize_name(name: str) -> str:
    """A provider name as stored and compared: trimmed, Unicode NFC (so a composed and a decomposed
    "Café" are one name)."""
    return unicodedata.normalize("NFC", name.strip(WHITESPACE))


def checked_name(name: str) -> str:
    """`normalize_name`, refusing a name that normalisation made longer than the limit (a few
    characters, such as U+0958, become two in NFC)."""
    normal = normalize_name(name)
    if len(normal) > MAX_NAME_LENGTH:
        raise Invalid(f"The name {NAME_TOO_LONG}.", [{"path": "/name", "message": NAME_TOO_LONG}])
    return normal


def normalize_base_url(base_url: str) -> str:
    return base_url.rstrip("/")


def normalized(name: str, value: Any) -> Any:
    """`value` of the writable field `name` in its stored form."""
    if name == "name":
        return checked_name(value)
    if name == "base_url":
        return normalize_base_url(value)
    return value


def with_defaults(body: dict[str, Any]) -> dict[str, Any]:
    """A validated create body with every optional field filled in, every field in its stored form."""
    return {name: normalized(name, value) for name, value in {**PROVIDER_DEFAULTS, **body}.items()}
