"""The provider types: one table that validation, probes, OpenAPI and the admin page all read.

Adding a type is one entry in `PROVIDER_TYPES` (the database keeps no list of types).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl


@dataclass(frozen=True)
class ProviderType:
    name: str
    label: str
    base_url_hint: str
    # The probe (and model discovery): GET {base_url}{probe_path}?{probe_query}.
    probe_path: str
    probe_query: str = ""
    # How the key travels: header name, and the value with "{key}" where the key goes.
    key_header: str = "Authorization"
    key_format: str = "Bearer {key}"
    # Headers the type always needs, key or not.
    fixed_headers: dict[str, str] = field(default_factory=dict)
    # Where the model list is in an answer: data[].id or models[].name, and a prefix to drop.
    model_list_key: str = "data"
    model_id_key: str = "id"
    model_id_prefix: str = ""
    # Whose list shape that is, in a probe's hint that the type looks wrong ("an OpenAI-style model list").
    list_style: str = "OpenAI"

    def auth_headers(self, api_key: str | None) -> dict[str, str]:
        """The headers a request to this type authenticates with (the fixed ones without a key)."""
        headers = dict(self.fixed_headers)
        if api_key:
            headers[self.key_header] = self.key_format.format(key=api_key)
        return headers

    @property
    def credential_query(self) -> dict[str, str]:
        """The query parameters a request to this type carries (Azure's api-version)."""
        return dict(parse_qsl(self.probe_query))

    def offered_models(self, body: bytes) -> list[str] | None:
        """The model ids an answer to the probe lists, or None when it has no list in this type's shape."""
        ids = self._listed_ids(body)
        return None if ids is None else list(dict.fromkeys(i.removeprefix(self.model_id_prefix) for i in ids))

    def _listed_ids(self, body: bytes) -> list[str] | None:
        entries = _list_in(body, self.model_list_key)
        if entries is None:
            return None
        key = self.model_id_key
        return [e[key] for e in entries if isinstance(e, dict) and isinstance(e.get(key), str)]

    @property
    def list_shape(self) -> tuple[str, str]:
        return self.model_list_key, self.model_id_key

    def looks_like_its_list(self, body: bytes) -> bool:
        """True when `body` holds a non-empty model list in this type's shape, its prefix included."""
        ids = self._listed_ids(body)
        return bool(ids) and all(i.startswith(self.model_id_prefix) for i in ids)


def wrong_type_hint(type_name: str, body: bytes) -> str | None:
    """For an answer without a model list in `type_name`'s shape: which type's shape it has, as a
    hint ("the answer is an OpenAI-style model list; is the type openai?"), or None."""
    own = PROVIDER_TYPES[type_name].list_shape
    for other in PROVIDER_TYPES.values():  # the first type of each shape names it
        if other.list_shape != own and other.looks_like_its_list(body):
            article = "an" if other.list_style[0] in "AEIOU" else "a"
            return f"the answer is {article} {other.list_style}-style model list; is the type {other.name}?"
    return None


def _list_in(body: bytes, key: str) -> list[Any] | None:
    try:
        document = json.loads(body)
    except (ValueError, UnicodeError, RecursionError):
        return None
    entries = document.get(key) if isinstance(document, dict) else None
    return entries if isinstance(entries, list) else None


PROVIDER_TYPES: dict[str, ProviderType] = {t.name: t for t in (
    ProviderType("openai", "OpenAI-compatible", "https://api.openai.com/v1", probe_path="/models"),
    ProviderType("anthropic", "Anthropic", "https://api.anthropic.com/v1", probe_path="/models",
                 key_header="x-api-key", key_format="{key}", fixed_headers={"anthropic-version": "2023-06-01"}),
    ProviderType("gemini", "Google Gemini", "https://generativelanguage.googleapis.com/v1beta", probe_path="/models",
                 key_header="x-goog-api-key", key_format="{key}", model_list_key="models", model_id_key="name",
                 model_id_prefix="models/", list_style="Gemini"),
    ProviderType("azure", "Azure OpenAI", "https://YOUR-RESOURCE.openai.azure.com/openai", probe_path="/models",
                 probe_query="api-version=2024-10-21", key_header="api-key", key_format="{key}"),
    ProviderType("ollama", "Ollama", "http://127.0.0.1:11434", probe_path="/api/tags", model_list_key="models",
                 model_id_key="name", list_style="Ollama"),
)}
DEFAULT_TYPE = "openai"
