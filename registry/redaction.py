"""Text that came from an upstream (a reason phrase, a redirect target, a model id) may quote the
key it was sent: before it is shown or stored, every piece of 8+ characters of the key goes, in
the key's own form and percent-encoded; a key shorter than that goes wherever it stands whole."""

from __future__ import annotations

import re
from urllib.parse import quote

MIN_FRAGMENT = 8
_CONTROL_CHARACTERS = re.compile("[\x00-\x1f\x7f-\x9f]")


def redact(text: str, secret: str | None) -> str:
    """`text` without `secret`: see the module docstring."""
    if not secret:
        return text
    if len(secret) < MIN_FRAGMENT:
        # Whole occurrences only, not inside a longer word: a short key such as "test" must not
        # eat every word that holds it.
        return re.sub(rf"(?<![A-Za-z0-9]){re.escape(secret)}(?![A-Za-z0-9])", "…", text, flags=re.IGNORECASE)
    text = _redact_fragments(text, secret)
    encoded = quote(secret, safe="")
    return text if encoded == secret else _redact_fragments(text, encoded)


def _redact_fragments(text: str, secret: str) -> str:
    """`text` with every run that is part of an 8+ character substring of `secret` replaced by "…"
    (`text.lower()` must keep the length of `text`, as it does for the ASCII a key is made of)."""
    if len(text) < MIN_FRAGMENT:
        return text
    # Case-insensitive: a host name or a header echoed back may have been lower-cased on the way.
    lowered_secret, lowered = secret.lower(), text.lower()
    if len(lowered) != len(text) or len(lowered_secret) != len(secret):  # rare letters that lower-case to two
        lowered_secret, lowered = secret, text
    fragments = {lowered_secret[i:i + MIN_FRAGMENT] for i in range(len(secret) - MIN_FRAGMENT + 1)}
    covered = [False] * len(text)
    for start in range(len(text) - MIN_FRAGMENT + 1):
        if lowered[start:start + MIN_FRAGMENT] in fragments:
            covered[start:start + MIN_FRAGMENT] = [True] * MIN_FRAGMENT
    if not any(covered):
        return text
    out, index = [], 0
    while index < len(text):
        if covered[index]:
            while index < len(text) and covered[index]:
                index += 1
            out.append("…")
        else:
            out.append(text[index])
            index += 1
    return "".join(out)


def holds_fragment(text: str, secret: str | None) -> bool:
    return redact(text, secret) != text


def upstream_text(text: str, secret: str | None, limit: int = 200) -> str:
    """Upstream words fit to show: no control characters, no piece of the key, at most `limit` characters."""
    cleaned = redact(_CONTROL_CHARACTERS.sub("", text), secret)
    return cleaned if len(cleaned) <= limit else cleaned[:limit - 1] + "…"
