"""Tornado's curl client, what curl's failures mean to a user, the egress policy applied to every
connection curl opens, and the server certificate of an https request (imported by `client.py` on
the first request)."""

from __future__ import annotations

import functools
import logging
import socket
import ssl
from datetime import datetime, timezone

import pycurl
from tornado.curl_httpclient import CurlAsyncHTTPClient, CurlError
from tornado.httpclient import HTTPClientError, HTTPRequest, HTTPResponse

from outbound.answers import Certificate, EgressBlocked, TransportFailure
from outbound.egress import refusal

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
    """One curl client, created in the running loop. `fresh_connections`: a new connection, DNS
    lookup and TLS handshake (no session reuse) for every request, so that curl's phase timings
    and the certificate are those of this request. `ca_bundle`: a PEM file of certificate
    authorities trusted besides the system's."""

    def __init__(self, timeout_seconds: float, max_clients: int, fresh_connections: bool = True,
                 egress: str = "no-metadata", ca_bundle: str | None = None, max_answer_bytes: int | None = None):
        self.timeout_seconds = timeout_seconds
        self.max_answer_bytes = max_answer_bytes
        self.fresh_connections = fresh_connections
        self.egress = egress
        self.ca_bundle = ca_bundle
        self._system_ca_dir = ssl.get_default_verify_paths().capath or "/etc/ssl/certs"
        logging.getLogger("tornado.curl_httpclient").setLevel(logging.INFO)  # its DEBUG is per-socket noise
        # max_body_size aborts the transfer of a larger answer (Tornado's default is 100 MB).
        self._client = _CurlClientKeepingFailures(force_instance=True, max_clients=max_clients,
                                                  **({"max_body_size": max_answer_bytes} if max_answer_bytes else {}))

    async def fetch(self, request: HTTPRequest) -> tuple[HTTPResponse, Certificate | None]:
        """The answer, whatever its status, and the server's certificate (https with
        fresh_connections); raises TransportFailure when there is no answer, EgressBlocked when
        the policy refused every address (nothing was sent)."""
        guard = _EgressGuard(self.egress)
        request.prepare_curl_callback = functools.partial(self._prepare, guard=guard)
        try:
            response = await self._client.fetch(request, raise_error=False)
        except CurlError as exc:
            if guard.refused is not None:
                raise EgressBlocked(guard.refused) from None
            time_info = exc.response.time_info if exc.response is not None else {}
            raise TransportFailure(self._detail(exc), time_info) from None
        return response, getattr(request, "certificate", None)

    def close(self) -> None:
        self._client.close()

    def _prepare(self, curl: pycurl.Curl, guard: _EgressGuard) -> None:
        if self.egress != "any":  # (curl handles are reused: a client's mode never changes)
            curl.setopt(pycurl.OPENSOCKETFUNCTION, guard.open_socket)
        if self.ca_bundle:
            # CAINFO replaces curl's default bundle; CAPATH keeps the system's authorities too.
            curl.setopt(pycurl.CAINFO, self.ca_bundle)
            curl.setopt(pycurl.CAPATH, self._system_ca_dir)
        if self.fresh_connections:
            curl.setopt(pycurl.DNS_CACHE_TIMEOUT, 0)
            curl.setopt(pycurl.FRESH_CONNECT, 1)
            curl.setopt(pycurl.FORBID_REUSE, 1)
            curl.setopt(pycurl.SSL_SESSIONID_CACHE, 0)  # a resumed session shows no certificate
            curl.setopt(pycurl.OPT_CERTINFO, 1)
        curl.certificate_wanted = self.fresh_connections

    def _detail(self, exc: CurlError) -> str:
        if self.max_answer_bytes and "max_body_size" in (exc.message or ""):
            return f"the answer was larger than {self.max_answer_bytes // 1024} KiB (not read further)"
        if exc.errno == pycurl.E_OPERATION_TIMEDOUT:
            return f"timeout after {self.timeout_seconds:.1f} s"
        if exc.errno in _TLS_ERRORS:
            return f"TLS failure: {exc.message}"
        if exc.errno in _OFFLINE_DETAILS:
            return f"{_OFFLINE_DETAILS[exc.errno]}: {exc.message}"
        return f"request failed: {exc.message}"


class _EgressGuard:
    """curl's open-socket hook for one request: every address curl is about to connect to (after
    DNS, for each connection it opens) is checked against the policy; a refused one gets no socket."""

    def __init__(self, mode: str):
        self.mode = mode
        self.refused: str | None = None

    def open_socket(self, _purpose: int, address) -> socket.socket | int:
        why = refusal(self.mode, address.addr[0]) if address.family in (socket.AF_INET, socket.AF_INET6) else None
        if why is not None:
            self.refused = why
            return pycurl.SOCKET_BAD
        return socket.socket(address.family, address.socktype, address.protocol)


class _CurlClientKeepingFailures(CurlAsyncHTTPClient):
    """Tornado raises a CurlError without its response for transport failures: attach the response
    so its curl timings (connect time of a timed-out request, say) are not lost. Also keeps the
    server certificate curl saw, on the request."""

    def fetch_impl(self, request, callback):
        def keep_response(response: HTTPResponse) -> None:
            if isinstance(response.error, HTTPClientError) and response.error.response is None:
                response.error.response = response
            callback(response)
        super().fetch_impl(request, keep_response)

    def _handle_timeout(self) -> None:
        if self._multi is not None:  # a timer curl set may fire once the client is closed (at shutdown)
            super()._handle_timeout()

    def _finish(self, curl, curl_error=None, curl_message=None):
        if getattr(curl, "certificate_wanted", False) and curl_error is None and curl.info is not None:
            proxy = curl.info["request"]  # Tornado's wrapper of the HTTPRequest given to fetch()
            getattr(proxy, "request", proxy).certificate = _certificate(curl)
        super()._finish(curl, curl_error, curl_message)


def _certificate(curl: pycurl.Curl) -> Certificate | None:
    """The server's own certificate (the first of the chain curl reports), or None (http, or none)."""
    try:
        chain = curl.getinfo(pycurl.INFO_CERTINFO)
    except pycurl.error:
        return None
    if not chain:
        return None
    fields = {name.lower(): value for name, value in chain[0]}
    try:
        not_after = datetime.strptime(fields["expire date"], "%b %d %H:%M:%S %Y %Z").replace(tzinfo=timezone.utc)
    except (KeyError, ValueError):
        return None
    return Certificate(not_after=not_after, subject=fields.get("subject", ""), issuer=fields.get("issuer", ""))
