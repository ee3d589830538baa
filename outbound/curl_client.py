"""Tornado's curl client, and what curl's failures mean to a user (imported by `client.py` on the
first request)."""

from __future__ import annotations

import logging

import pycurl
from tornado.curl_httpclient import CurlAsyncHTTPClient, CurlError
from tornado.httpclient import HTTPClientError, HTTPRequest, HTTPResponse

from outbound.answers import TransportFailure

_OFFLINE_DETAILS = {
    pycurl.E_COULDNT_CONNECT: "connection refused",
    pycurl.E_COULDNT_RESOLVE_HOST: "DNS lookup failed",
    pycurl.E_COULDNT_RESOLVE_PROXY: "DNS lookup of the proxy failed",
    pycurl.E_GOT_NOTHING: "empty reply from server",
    pycurl.E_RECV_ERROR: "connection reset while receiving",
    pycurl.E_SEND_ERROR: "connection reset while sending",
}
_TLS_ERRORS = {pycurl.E_SSL_CONNECT_ERROR, pycurl.E_PEER_FAILED_VERIFICATION, pycurl.E_SSL_CACERT_BADFILE,
               pycurl.E_SSL_CERTPROBLEM, pycurl.E_SSL_CIPHER, pycurl.E_SSL_ENGINE_NOTFOUND,
               pycurl.E_SSL_CRL_BADFILE, pycurl.E_SSL_ISSUER_ERROR, pycurl.E_SSL_SHUTDOWN_FAILED}


class CurlTransport:
    """One curl client for the whole process, created in the running loop."""

    def __init__(self, timeout_seconds: float, max_clients: int, fresh_connections: bool = True):
        self.timeout_seconds = timeout_seconds
        self.fresh_connections = fresh_connections
        logging.getLogger("tornado.curl_httpclient").setLevel(logging.INFO)  # its DEBUG is per-socket noise
        self._client = _CurlClientKeepingFailures(force_instance=True, max_clients=max_clients)

    async def fetch(self, request: HTTPRequest) -> HTTPResponse:
        """The answer, whatever its status; raises TransportFailure when there is none. With
        fresh_connections, every request goes out on a fresh connection and DNS lookup
        (`_measure_every_phase`)."""
        if self.fresh_connections:
            request.prepare_curl_callback = _measure_every_phase
        try:
            return await self._client.fetch(request, raise_error=False)
        except CurlError as exc:
            time_info = exc.response.time_info if exc.response is not None else {}
            raise TransportFailure(self._detail(exc), time_info) from None

    def close(self) -> None:
        self._client.close()

    def _detail(self, exc: CurlError) -> str:
        if exc.errno == pycurl.E_OPERATION_TIMEDOUT:
            return f"timeout after {self.timeout_seconds:.1f} s"
        if exc.errno in _TLS_ERRORS:
            return f"TLS failure: {exc.message}"
        if exc.errno in _OFFLINE_DETAILS:
            return f"{_OFFLINE_DETAILS[exc.errno]}: {exc.message}"
        return f"request failed: {exc.message}"


class _CurlClientKeepingFailures(CurlAsyncHTTPClient):
    """Tornado raises a CurlError without its response for transport failures; attach the response
    so its curl timings (connect time of a timed-out request, say) are not lost."""

    def fetch_impl(self, request, callback):
        def keep_response(response: HTTPResponse) -> None:
            if isinstance(response.error, HTTPClientError) and response.error.response is None:
                response.error.response = response
            callback(response)
        super().fetch_impl(request, keep_response)


def _measure_every_phase(curl: pycurl.Curl) -> None:
    """A probe checks DNS, TCP and TLS each time: no cached lookup, no reused connection (which
    would also report those phases as 0)."""
    curl.setopt(pycurl.DNS_CACHE_TIMEOUT, 0)
    curl.setopt(pycurl.FRESH_CONNECT, 1)
    curl.setopt(pycurl.FORBID_REUSE, 1)
