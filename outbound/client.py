"""An outbound HTTP client: a request with a timeout, no redirects followed, the answer's body kept
up to a limit, curl's phase timings attached. The process has two, each with
its own transfer slots: one for probes, one for webhook deliveries (a hanging receiver never holds
up a probe).

The curl client itself (`curl_client.py`) is imported on the first request, not at start-up:
pycurl brings its own libcurl and OpenSSL, resident memory a registry nobody probes need not carry.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from tornado.httpclient import HTTPRequest

from outbound.answers import Answer, RequestNotSent, TransportFailure
from outbound.timings import curl_timings

if TYPE_CHECKING:
    from outbound.curl_client import CurlTransport

# A model list is small; anything past this is not kept in memory (nor parsed).
MAX_BODY_BYTES = 4 * 1024 * 1024
USER_AGENT = "provider-registry/1.0"


class OutboundClient:
    def __init__(self, timeout_seconds: float, max_clients: int, fresh_connections: bool = True,
                 egress: str = "no-metadata", ca_bundle: str | None = None, max_answer_bytes: int | None = None):
        """`fresh_connections`: every request opens its own connection after its own DNS lookup (so
        curl's phase timings measure them, and the certificate is seen: probes); otherwise
        connections are reused (deliveries). `egress`: the policy (`egress.py`) every connection
        is checked against. `ca_bundle`: extra certificate authorities (PEM). `max_answer_bytes`:
        a larger answer is a TransportFailure, its transfer cut short."""
        self.timeout_seconds = timeout_seconds
        self.max_clients = max_clients
        self.fresh_connections = fresh_connections
        self.egress = egress
        self.ca_bundle = ca_bundle
        self.max_answer_bytes = max_answer_bytes
        self._transport: CurlTransport | None = None

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    async def get(self, url: str, headers: dict[str, str]) -> Answer:
        """The answer, whatever its status; raises TransportFailure (no answer) or RequestNotSent
        (nothing sent: the request could not be built, or EgressBlocked)."""
        return await self.send("GET", url, headers)

    async def post(self, url: str, headers: dict[str, str], body: bytes) -> Answer:
        """As `get`, with a body."""
        return await self.send("POST", url, headers, body)

    async def send(self, method: str, url: str, headers: dict[str, str], content: bytes | None = None) -> Answer:
        body = bytearray()
        overflow = False

        def collect(chunk: bytes) -> None:
            nonlocal overflow
            if len(body) + len(chunk) > MAX_BODY_BYTES:
                overflow = True
            elif not overflow:
                body.extend(chunk)

        request = HTTPRequest(url, method=method, headers={"User-Agent": USER_AGENT, **headers}, body=content,
                              follow_redirects=False, connect_timeout=self.timeout_seconds,
                              request_timeout=self.timeout_seconds, streaming_callback=collect)
        tls = url.lower().startswith("https:")
        transport = self._open_transport()
        started = time.monotonic()
        try:
            response, certificate = await transport.fetch(request)
        except (ValueError, TypeError, UnicodeError):
            raise RequestNotSent("the request could not be built from the provider's settings") from None
        except TransportFailure as failure:
            raise TransportFailure(failure.detail, curl_timings(failure.timings, tls), _ms_since(started)) from None
        return Answer(code=response.code, reason=response.reason or "", location=response.headers.get("Location"),
                      body=None if overflow else bytes(body), timings=curl_timings(response.time_info, tls),
                      elapsed_ms=_ms_since(started), certificate=certificate)

    def _open_transport(self) -> CurlTransport:
        if self._transport is None:
            from outbound.curl_client import CurlTransport  # here, not at start-up: see the module docstring
            self._transport = CurlTransport(self.timeout_seconds, self.max_clients, self.fresh_connections,
                                            self.egress, self.ca_bundle, self.max_answer_bytes)
        return self._transport


def _ms_since(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 3)
