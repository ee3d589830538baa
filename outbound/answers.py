"""What an outbound request gives back: an answer, or the reason there is none."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class Certificate:
    """The server certificate an https answer came with."""
    not_after: datetime
    subject: str
    issuer: str


@dataclass(frozen=True)
class Answer:
    code: int
    reason: str
    location: str | None
    body: bytes | None  # None when it was larger than the client keeps
    timings: dict[str, float | None]
    elapsed_ms: float  # measured here, for when curl reports no total
    certificate: Certificate | None = None


class TransportFailure(Exception):
    """No HTTP answer (refused, DNS, TLS, timeout): `detail` says why in a user's words; `timings`
    has the phases that were reached."""

    def __init__(self, detail: str, timings: dict, elapsed_ms: float = 0.0):
        super().__init__(detail)
        self.detail = detail
        self.timings = timings
        self.elapsed_ms = elapsed_ms


class RequestNotSent(Exception):
    """The request could not be built (a library refused a header or the URL); nothing was sent.
    The message is ours: libraries' own may quote the headers, and so the key."""


class EgressBlocked(RequestNotSent):
    """The egress policy refused every address the request could connect to; nothing was sent.
    The message says which address and why."""
