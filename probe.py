"""Connectivity probes: one GET per provider with its native auth, through Tornado's curl client
(`curl_transport.py`, loaded on the first probe).

No SQL here and no HTTP serving: callers hand in a `ProbeTarget` (with the plaintext key, which
goes into a request header and nowhere else) and get back a result dict in SPEC's shape.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Hashable, Mapping
from urllib.parse import quote, urljoin, urlsplit, urlunsplit

from tornado.httpclient import HTTPRequest, HTTPResponse

from timestamps import utc_timestamp

if TYPE_CHECKING:
    from curl_transport import CurlTransport

# A model list is small; anything past this is not parsed (and not kept in memory).
MAX_BODY_BYTES = 4 * 1024 * 1024
USER_AGENT = "provider-registry/1.0"


class TransportFailure(Exception):
    """A probe got no HTTP answer: `detail` says why in a user's words; `response`, when the
    transport got that far, carries the timings of the phases that were reached."""

    def __init__(self, detail: str, response: HTTPResponse | None):
        super().__init__(detail)
        self.detail = detail
        self.response = response


@dataclass(frozen=True)
class ProbeTarget:
    """What a probe needs to know about a provider."""
    type: str
    base_url: str
    api_key: str | None = None
    models: list[str] = field(default_factory=list)
    # Set instead of api_key when the stored key cannot be decrypted: nothing is sent then.
    key_error: str | None = None


@dataclass(frozen=True)
class ProbeOutcome:
    result: dict[str, Any]
    offered_models: list[str] | None  # the upstream list, when the answer had one


def probe_url_and_headers(target: ProbeTarget) -> tuple[str, dict[str, str]]:
    """The request SPEC's table prescribes for each provider type."""
    key = target.api_key
    headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
    if target.type == "ollama":
        path, query = "/api/tags", ""
        if key:
            headers["Authorization"] = f"Bearer {key}"
    elif target.type == "azure":
        path, query = "/models", "api-version=2024-10-21"
        if key:
            headers["api-key"] = key
    else:
        path, query = "/models", ""
        if key and target.type == "anthropic":
            headers["x-api-key"] = key
        elif key and target.type == "gemini":
            headers["x-goog-api-key"] = key
        elif key:
            headers["Authorization"] = f"Bearer {key}"
        if target.type == "anthropic":
            headers["anthropic-version"] = "2023-06-01"
    parts = urlsplit(target.base_url)
    merged_query = "&".join(q for q in (parts.query, query) if q)
    url = urlunsplit((parts.scheme, _ascii_netloc(parts), quote(parts.path.rstrip("/") + path, safe=_URL_SAFE),
                      quote(merged_query, safe=_URL_SAFE + "?"), ""))
    return url, headers


# What curl can send as a header value: printable ASCII and tabs (no CR, LF or other control characters).
_HEADER_VALUE = re.compile(r"[\t -~]*")
# Characters left as they are when a URL is made ASCII: everything RFC 3986 allows in a path.
_URL_SAFE = "/:@!$&'()*+,;=~%-._"


def _ascii_netloc(parts) -> str:
    """The host in IDNA form (curl sends ASCII), with its port; IPv6 literals keep their brackets."""
    host = parts.hostname or ""
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            raise ValueError("the base URL's host is not a valid internationalized domain name") from None
    if ":" in host:
        host = f"[{host}]"
    return host if parts.port is None else f"{host}:{parts.port}"


def offered_models(provider_type: str, body: bytes) -> list[str] | None:
    """The model ids a /models (or Ollama /api/tags) answer lists, or None when it has no list."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeError, RecursionError):
        return None
    if not isinstance(document, dict):
        return None
    list_key, id_key = ("models", "name") if provider_type in ("gemini", "ollama") else ("data", "id")
    entries = document.get(list_key)
    if not isinstance(entries, list):
        return None
    ids = [e[id_key] for e in entries if isinstance(e, dict) and isinstance(e.get(id_key), str)]
    if provider_type == "gemini":
        ids = [i.removeprefix("models/") for i in ids]
    return list(dict.fromkeys(ids))


def curl_timings(time_info: Mapping[str, float], tls: bool = False) -> dict[str, float | None]:
    """curl's cumulative phase times in ms; a phase the request never reached is None, not 0.

    curl fills some later phases even when an earlier one failed (a refused connection reports a
    "start transfer" time), so a phase counts only when the one before it was reached.
    """
    def ms(name: str) -> float | None:
        value = time_info.get(name) or 0.0
        return round(value * 1000, 3) if value > 0 else None

    connect = ms("connect")
    tls_done = ms("appconnect") if connect is not None and tls else None
    first_byte = ms("starttransfer") if connect is not None and (tls_done is not None or not tls) else None
    dns = ms("namelookup")
    if dns is None and connect is not None:
        dns = 0.0  # an IP literal needs no lookup, but the phase was passed
    return {"dns_ms": dns, "connect_ms": connect, "tls_ms": tls_done, "first_byte_ms": first_byte,
            "total_ms": ms("total")}


class Prober:
    """Sends probes; one curl client for the whole process, created on first use in the running loop."""

    def __init__(self, timeout_seconds: float, max_clients: int):
        self.timeout_seconds = timeout_seconds
        self.max_clients = max_clients
        self._transport: CurlTransport | None = None

    def _open_transport(self) -> CurlTransport:
        if self._transport is None:
            from curl_transport import CurlTransport  # here, not at start-up: see curl_transport.py
            self._transport = CurlTransport(self.timeout_seconds, self.max_clients)
        return self._transport

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    async def probe(self, target: ProbeTarget) -> dict[str, Any]:
        return (await self.exchange(target)).result

    async def probe_many(self, targets: Mapping[Hashable, ProbeTarget], concurrency: int) -> dict[Hashable, dict]:
        """Probe all targets, never more than `concurrency` in flight; results by the targets' keys."""
        gate = asyncio.Semaphore(concurrency)

        async def one(key: Hashable, target: ProbeTarget) -> tuple[Hashable, dict]:
            async with gate:
                return key, await self.probe(target)

        return dict(await asyncio.gather(*(one(k, t) for k, t in targets.items())))

    async def exchange(self, target: ProbeTarget) -> ProbeOutcome:
        """Send the probe and classify the answer; never raises for anything the network does."""
        checked_at = utc_timestamp()
        if target.key_error:
            return _not_sent(target.key_error, checked_at)
        try:
            url, headers = probe_url_and_headers(target)
        except ValueError as exc:
            return _not_sent(str(exc), checked_at)
        if not all(_HEADER_VALUE.fullmatch(value) for value in headers.values()):
            # Only a key stored before keys were limited to printable ASCII can get here.
            return _not_sent("the stored API key holds characters that cannot be sent in an HTTP header "
                             "(such as a line break); set the key again", checked_at)
        body = bytearray()
        overflow = False

        def collect(chunk: bytes) -> None:
            nonlocal overflow
            if len(body) + len(chunk) > MAX_BODY_BYTES:
                overflow = True
            elif not overflow:
                body.extend(chunk)

        request = HTTPRequest(url, method="GET", headers=headers, follow_redirects=False,
                              connect_timeout=self.timeout_seconds, request_timeout=self.timeout_seconds,
                              streaming_callback=collect)
        tls = url.lower().startswith("https:")
        transport = self._open_transport()
        started = time.monotonic()
        try:
            response = await transport.fetch(request)
        except (ValueError, TypeError, UnicodeError):
            # Raised while building the request, and their messages may quote a header (the key):
            # replaced by our own words.
            return _not_sent("the request could not be built from the provider's settings", checked_at)
        except TransportFailure as failure:
            timings = curl_timings(failure.response.time_info if failure.response is not None else {}, tls)
            latency = timings["total_ms"] or round((time.monotonic() - started) * 1000, 3)
            return ProbeOutcome(_result("offline", None, latency, failure.detail, None, checked_at, timings), None)
        timings = curl_timings(response.time_info, tls)
        latency = timings["total_ms"] or round((time.monotonic() - started) * 1000, 3)
        code = response.code
        models = None
        if 200 <= code < 300:
            status, detail = "online", None
            models = None if overflow else offered_models(target.type, bytes(body))
        elif code in (401, 403):
            status, detail = "unauthorized", f"HTTP {code} {response.reason or ''}".strip()
        elif 300 <= code < 400:
            status, detail = "error", _redirect_detail(code, url, response.headers.get("Location"))
        else:
            status, detail = "error", f"HTTP {code} {response.reason or ''}".strip()
        missing = None if models is None else [m for m in target.models if m not in set(models)]
        return ProbeOutcome(_result(status, code, latency, detail, missing, checked_at, timings), models)


def _redirect_detail(code: int, url: str, location: str | None) -> str:
    if not location:
        return f"HTTP {code} redirect without a Location (not followed)"
    target = urlsplit(urljoin(url, location))
    where = target.hostname or "an invalid location"
    if target.port:
        where += f":{target.port}"
    return f"HTTP {code} redirect to {where} (not followed)"


def _not_sent(detail: str, checked_at: str) -> ProbeOutcome:
    """An `error` result for a probe that could not be sent at all: no status, no timings."""
    return ProbeOutcome(_result("error", None, 0.0, detail, None, checked_at, curl_timings({})), None)


def _result(status: str, status_code: int | None, latency_ms: float, detail: str | None,
            missing_models: list[str] | None, checked_at: str, timings: dict) -> dict[str, Any]:
    return {"status": status, "status_code": status_code, "latency_ms": round(latency_ms, 2), "detail": detail,
            "missing_models": missing_models, "checked_at": checked_at, "timings": timings}
