"""What every handler shares: the Host and Origin checks, auth, the body limit, JSON in and out,
and the one renderer of errors as JSON `{"detail": ..., "errors": [...]}`."""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import logging
import re
import sys
import time
import uuid
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TextIO

from jsonschema import Draft202012Validator
from tornado.web import HTTPError, RequestHandler, StaticFileHandler, stream_request_body

from handlers.request_guard import RequestGuard, is_loopback_name
from registry.access import ANONYMOUS_ACTOR, Actor
from registry.errors import RegistryError
from registry.schemas import InvalidJson, parse_json, validation_errors

if TYPE_CHECKING:
    from registry.inventory import Inventory
    from registry.probes import ProbeService

MAX_BODY_BYTES = 1024 * 1024
LARGE_BODY_BYTES = 64 * 1024  # parsed and validated off the event loop from this size on
app_log = logging.getLogger("provider_registry")

_STATUS_DETAILS = {
    400: "The request is malformed.",
    401: "A valid token is required: send Authorization: Bearer <token> (BACKEND_ADMIN_TOKEN or an API token).",
    403: "Forbidden.",
    404: "Not found.",
    405: "Method not allowed.",
    413: "The request body is larger than 1 MiB.",
    415: "The request body must be JSON: send it with Content-Type: application/json.",
}
_INTERNAL_ERROR = "Internal server error; the server log has the details."
_DIGITS = re.compile(r"[0-9]+")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
# Unique per process (random prefix) and cheap per request (a counter, no syscall).
_REQUEST_ID_PREFIX = uuid.uuid4().hex[:8]
_request_ids = map(f"{_REQUEST_ID_PREFIX}-{{}}".format, itertools.count(1))


class ApiError(RegistryError):
    """An error of the HTTP layer itself (a bad query parameter, a missing token), with its status."""

    def __init__(self, status: int, detail: str, errors: list[dict[str, str]] | None = None):
        super().__init__(detail, errors)
        self.status = status


def _checked_json_object(raw: bytes, validator: Draft202012Validator | None) -> Any:
    try:
        body = parse_json(raw)
    except InvalidJson as exc:
        raise ApiError(400, f"The request body {exc}.") from None
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object.")
    if validator is not None:
        errors = validation_errors(validator, body)
        if errors:
            raise ApiError(422, "The request body is invalid: " + "; ".join(
                f"{e['path']} {e['message']}" for e in errors[:3]) + ("; ..." if len(errors) > 3 else "."), errors)
    return body


class RequestsInFlight:
    """How many requests have a handler that has not finished; shutdown waits for zero."""

    def __init__(self) -> None:
        self.count = 0


class AccessLog:
    """The access log: one line per request with status, method, path, duration and request id
    (never headers, query strings or bodies), in the format of the other log lines.

    Lines are written in batches (every `batch_lines` lines, at once for a 5xx, and whenever
    `flush()` is called: every half second and at shutdown by server.py) rather than through
    `logging` one by one, which costs a simple GET measurable throughput (bench/RESULTS.md).
    """

    def __init__(self, stream: TextIO | None = None, batch_lines: int = 64) -> None:
        self.stream = stream or sys.stderr
        self.batch_lines = batch_lines
        self._lines: list[str] = []
        self._second = -1
        self._stamp = ""

    def __call__(self, handler: RequestHandler) -> None:
        now = time.time()
        if int(now) != self._second:
            self._second = int(now)
            self._stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now))
        status = handler.get_status()
        level = "INFO" if status < 400 else "WARNING" if status < 500 else "ERROR"
        self._lines.append(
            f"{self._stamp},{int(now * 1000) % 1000:03d} {level} provider_registry.access: {status} "
            f"{handler.request.method} {handler.request.path} {1000.0 * handler.request.request_time():.1f}ms "
            f"id={getattr(handler, 'request_id', '-')}\n")
        if len(self._lines) >= self.batch_lines or status >= 500:
            self.flush()

    def flush(self) -> None:
        if self._lines:
            lines, self._lines = self._lines, []
            try:
                self.stream.write("".join(lines))
                self.stream.flush()
            except (OSError, ValueError):
                pass  # a closed or broken log stream must not break requests


class JsonErrors:
    """Every error as a JSON `{"detail": ..., "errors": [...]}` body: mixed into the API handlers and
    the static file handlers, so no path ever answers an HTML error page. A RegistryError's status
    and message are used as they are; anything else is a generic 500 (its traceback logged)."""

    def send_error(self, status_code: int = 500, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        super().send_error(exc.status if isinstance(exc, RegistryError) else status_code, **kwargs)

    def log_exception(self, typ, value, tb) -> None:
        if isinstance(value, RegistryError) and value.status >= 500:
            app_log.error("%s %s failed (id=%s): %s", self.request.method, self.request.path,
                          getattr(self, "request_id", "-"), value.detail)
            return
        if isinstance(value, (RegistryError, HTTPError)):
            return  # an answer, not a failure: the access log has it
        app_log.error("unexpected error in %s %s (id=%s)", self.request.method, self.request.path,
                      getattr(self, "request_id", "-"), exc_info=(typ, value, tb))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        errors = None
        if isinstance(exc, RegistryError):
            detail, errors = exc.detail, exc.errors
        elif status_code < 500:
            detail = _STATUS_DETAILS.get(status_code, self._reason + ".")
        else:
            detail = _INTERNAL_ERROR
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.set_header("Cache-Control", "no-store")
        if status_code == 401:
            self.set_header("WWW-Authenticate", "Bearer")
        if status_code == 405 and hasattr(self, "allowed_methods"):
            self.set_header("Allow", ", ".join(self.allowed_methods()))
        body = {"detail": detail}
        if errors:
            body["errors"] = errors
        self.finish(json.dumps(body, ensure_ascii=False, separators=(",", ":")))


class AnnouncesClose:
    """A response after which the server closes the connection says `Connection: close`: Tornado
    closes after a response sent before the request was read to its end (from prepare()), and
    after an HTTP/1.0 request without keep-alive, without saying so."""

    _body_unread = False

    def flush(self, include_footers: bool = False):  # finish() and static files' chunks come here first
        if not self._headers_written and (self._body_unread or closes_after_response(self.request)):
            self.set_header("Connection", "close")
        return super().flush(include_footers)


def check_content_length(request) -> int | None:
    """The declared body size; a Content-Length that is not ASCII digits is a 400."""
    declared = request.headers.get("Content-Length")
    if declared is None:
        return None
    if not _DIGITS.fullmatch(declared):
        raise ApiError(400, "The Content-Length header must be a whole number of bytes.")
    if len(declared) > 18:  # more than any body could be (and past what int() parses by default)
        raise ApiError(413, _STATUS_DETAILS[413])
    return int(declared)


@functools.cache
def implemented_methods(handler_class: type) -> frozenset[str]:
    """The HTTP methods a handler class answers (the others are Tornado's 405)."""
    return frozenset(m for m in ("GET", "HEAD", "POST", "PATCH", "PUT", "DELETE", "OPTIONS")
                     if getattr(handler_class, m.lower()) is not getattr(RequestHandler, m.lower()))


@functools.lru_cache(maxsize=256)
def is_loopback_client(address: str) -> bool:
    """A peer address (as Tornado gives it: no brackets) on this machine."""
    return is_loopback_name(f"[{address}]" if ":" in address else address)


def closes_after_response(request) -> bool:
    """An HTTP/1.0 request without keep-alive: Tornado closes after the response without saying so."""
    return request.version == "HTTP/1.0" and request.headers.get("Connection", "").lower() != "keep-alive"


def is_api_path(path: str) -> bool:
    return path == "/api" or path.startswith("/api/")


def is_guarded_path(path: str) -> bool:
    """The paths under the Origin rule, CORS and authentication: the API and /metrics."""
    return is_api_path(path) or path == "/metrics"


def report_answered(handler: RequestHandler) -> None:
    """Tell the request metrics (the `observe_request` setting, handlers/metrics.py; absent when
    BACKEND_METRICS=off) of a request that has been answered."""
    observe = handler.settings.get("observe_request")
    if observe is not None:
        observe(handler)


def refuse_foreign_host(handler: RequestHandler, loopback_only: bool) -> None:
    """403 for a `Host` the server does not answer to (DNS rebinding); see request_guard."""
    refusal = handler.settings["request_guard"].host_refusal(handler.request.host, loopback_only)
    if refusal:
        raise ApiError(403, refusal)


def loopback_only(handler: RequestHandler) -> bool:
    """No authentication configured (no BACKEND_ADMIN_TOKEN, no API token): loopback only, Host checked."""
    return not handler.settings["tokens"].auth_enabled


@stream_request_body
class BaseHandler(AnnouncesClose, JsonErrors, RequestHandler):
    """Bodies are streamed so an oversized one is refused (413) without being read."""

    def initialize(self) -> None:
        self._body = bytearray()
        self._body_too_large = False
        self._body_unread = False
        self._in_flight = self.settings.get("requests_in_flight")
        if self._in_flight is not None:
            self._in_flight.count += 1

    def on_finish(self) -> None:
        self._leave_in_flight()
        report_answered(self)

    def on_connection_close(self) -> None:
        super().on_connection_close()  # fails a streaming body's future, so the request ends
        self._leave_in_flight()  # a client gone mid-request is no longer in flight (nor answered yet)

    def _leave_in_flight(self) -> None:
        if self._in_flight is not None:
            self._in_flight.count -= 1
            self._in_flight = None

    @property
    def inventory(self) -> Inventory:
        return self.settings["inventory"]

    @property
    def probes(self) -> ProbeService:
        return self.settings["probes"]

    @property
    def guard(self) -> RequestGuard:
        return self.settings["request_guard"]

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Content-Type-Options", "nosniff")
        if not hasattr(self, "request_id"):  # runs in __init__, before initialize()
            self.request_id = self._incoming_request_id() or next(_request_ids)
        self.set_header("X-Request-Id", self.request_id)
        origin = self.request.headers.get("Origin")
        if origin is not None and is_guarded_path(self.request.path):
            for name, value in self.guard.cors_headers(origin).items():
                self.set_header(name, value)

    def prepare(self) -> None:
        # Tornado reads the request to its end only after prepare(), so it closes the connection
        # after a response sent from here; finish() says so in a Connection header.
        self._body_unread = True
        open_mode = loopback_only(self)
        if self.request.path != "/ping":
            refuse_foreign_host(self, open_mode)
        if is_guarded_path(self.request.path):
            headers = self.request.headers
            origin = headers.get("Origin")
            refusal = self.guard.origin_refusal(origin, headers.get("Sec-Fetch-Site"), self.request.host)
            if refusal:
                raise ApiError(403, refusal)
            if headers.get("User-Agent") == self.settings.get("outbound_user_agent"):
                # A webhook (or a provider) pointed at this registry itself: a delivery could start a
                # bulk test or a sync, and a ping of a webhook pointed at its own ping path recurse.
                raise ApiError(403, "Requests sent by this registry's own outbound client are refused: a webhook "
                                    "or base URL points at the registry itself.")
            if (self.request.method == "OPTIONS" and self.guard.is_listed(origin)
                    and "Access-Control-Request-Method" in headers):
                self._answer_preflight()
                return
            # Auth next, so a client without the token learns nothing else (not even 404 or 413).
            self.actor = self._authenticated(open_mode)
            self._authorize()
        self._check_body_headers(json_only=is_api_path(self.request.path))
        self._body_unread = False

    def _answer_preflight(self) -> None:
        """A CORS preflight of a listed origin (browsers send no credentials on one, so no token)."""
        self.set_status(204)
        for name, value in self.guard.preflight_headers().items():
            self.set_header(name, value)
        self.clear_header("Content-Type")
        self.finish()

    def _check_body_headers(self, json_only: bool) -> None:
        """Content-Length must be digits (400), at most 1 MiB (413); a body must be JSON (415): a
        cross-origin text/plain POST needs no CORS preflight, a JSON one does."""
        headers = self.request.headers
        declared = check_content_length(self.request)
        if declared is not None and declared > MAX_BODY_BYTES:
            raise ApiError(413, _STATUS_DETAILS[413])
        if json_only and (declared or "Transfer-Encoding" in headers):
            media_type = headers.get("Content-Type", "").partition(";")[0].strip().lower()
            if media_type != "application/json":
                raise ApiError(415, _STATUS_DETAILS[415])

    def data_received(self, chunk: bytes) -> None:
        if len(self._body) + len(chunk) > MAX_BODY_BYTES:
            self._body_too_large = True  # chunked upload without a Content-Length
        elif not self._body_too_large:
            self._body.extend(chunk)

    # -- request bodies ---------------------------------------------------------------------------

    def raw_body(self) -> bytes:
        if self._body_too_large:
            raise ApiError(413, _STATUS_DETAILS[413])
        return bytes(self._body)

    async def json_body(self, validator: Draft202012Validator | None = None) -> Any:
        """The body parsed as a JSON object (400 otherwise), checked against `validator` (422). A
        large body is parsed and checked on a worker thread, so the event loop keeps serving."""
        raw = self.raw_body()
        if len(raw) < LARGE_BODY_BYTES:
            return _checked_json_object(raw, validator)
        return await asyncio.to_thread(_checked_json_object, raw, validator)

    # -- query parameters -------------------------------------------------------------------------

    def query_int(self, name: str, minimum: int, maximum: int | None = None) -> int | None:
        raw = self.get_query_argument(name, None)
        if raw is None:
            return None
        if not re.fullmatch(r"[0-9]{1,19}", raw.strip()) or int(raw) < minimum or (maximum and int(raw) > maximum):
            bounds = f"from {minimum} to {maximum}" if maximum else f"at least {minimum}"
            raise ApiError(400, f"Query parameter {name} must be a whole number {bounds}.")
        return int(raw)

    def query_texts(self, name: str) -> list[str]:
        """A query parameter's values exactly as sent: Tornado's own getters turn control characters
        into spaces and strip them, so `?q=%00` would read as no filter at all."""
        try:
            return [value.decode("utf-8") for value in self.request.query_arguments.get(name, [])]
        except UnicodeDecodeError:
            raise ApiError(400, f"Query parameter {name} is not valid UTF-8.") from None

    def query_text(self, name: str) -> str | None:
        """The last value of a query parameter, exactly as sent (see query_texts)."""
        values = self.query_texts(name)
        return values[-1] if values else None

    def query_bool(self, name: str) -> bool | None:
        raw = self.get_query_argument(name, None)
        if raw is None:
            return None
        if raw not in ("true", "false"):
            raise ApiError(400, f"Query parameter {name} must be true or false.")
        return raw == "true"

    # -- responses --------------------------------------------------------------------------------

    def compute_etag(self) -> None:
        """No ETag: API responses are `no-store`, so hashing every body would be wasted work."""
        return None

    def write_json(self, value: Any, status: int = 200) -> None:
        self.write_json_text(json.dumps(value, ensure_ascii=False, separators=(",", ":")), status)

    def write_json_text(self, text: str | bytes, status: int = 200) -> None:
        """Send JSON that is already text (as the store renders providers)."""
        self.set_status(status)
        self.finish(text)

    def allowed_methods(self) -> list[str]:
        return [m for m in ("GET", "POST", "PATCH", "DELETE") if m in implemented_methods(type(self))]

    # -- internals --------------------------------------------------------------------------------

    # The permission each HTTP method of the route needs (registry/access.py); a method not listed
    # is allowed to no role. None: any authenticated caller (the JSON 404 of unknown paths).
    permissions: dict[str, str] | None = {}

    def _authenticated(self, open_mode: bool) -> Actor:
        client = self.request.remote_ip
        if open_mode:
            if not is_loopback_client(client):
                raise ApiError(403, "No authentication is configured, so only this machine may call the API: set "
                                    "BACKEND_ADMIN_TOKEN or create an admin token (python server.py --create-token "
                                    "NAME --role admin).")
            return Actor(ANONYMOUS_ACTOR, "admin", request_id=self.request_id, client=client)
        scheme, _, provided = self.request.headers.get("Authorization", "").partition(" ")
        actor = self.settings["tokens"].authenticate(provided.strip()) if scheme.lower() == "bearer" else None
        if actor is None:
            self.settings["audit"].denied(Actor(ANONYMOUS_ACTOR, "-", request_id=self.request_id, client=client))
            raise ApiError(401, _STATUS_DETAILS[401])
        return replace(actor, request_id=self.request_id, client=client)

    def _authorize(self) -> None:
        if self.permissions is None:
            return
        if self.request.method not in implemented_methods(type(self)):
            return  # a method the route does not have: Tornado answers 405
        permission = self.permissions.get(self.request.method)
        if permission is None or not self.actor.may(permission):
            self.settings["audit"].denied(self.actor)
            raise ApiError(403, f"The {self.actor.role} role may not {self.request.method} {self.request.path[:200]}.")

    def may_see(self, provider_id: int) -> int:
        """`provider_id` if the caller's scope holds it; a 404 (as for a provider that does not exist) if not."""
        if not self.actor.sees(provider_id):
            raise ApiError(404, f"Provider {provider_id} does not exist.")
        return provider_id

    def _incoming_request_id(self) -> str | None:
        incoming = self.request.headers.get("X-Request-Id", "")
        return incoming if _REQUEST_ID.match(incoming) else None


class NotFoundHandler(BaseHandler):
    """Every path no route matches (unknown ids that are not numbers included): a JSON 404, after
    the checks every request gets (Host, Origin, token) and after reading the body, so the
    connection stays usable."""

    permissions = None

    def not_found(self, *args: Any) -> None:
        raise ApiError(404, f"No such path: {self.request.path[:200]}")

    get = head = post = patch = put = delete = options = not_found


@stream_request_body
class GuardedStaticFileHandler(AnnouncesClose, JsonErrors, StaticFileHandler):
    """Static files under the same Host rule as the API, with JSON errors; a path holding a NUL (which
    the file system cannot name) is simply not found. Bodies are streamed (and dropped) so that a bad
    Content-Length gets our JSON 400 rather than Tornado's bare one."""

    def prepare(self) -> None:
        self._body_unread = True
        refuse_foreign_host(self, loopback_only(self))
        check_content_length(self.request)
        self._body_unread = False

    def data_received(self, chunk: bytes) -> None:
        pass  # nothing here reads a body

    def on_finish(self) -> None:
        report_answered(self)

    def validate_absolute_path(self, root: str, absolute_path: str) -> str | None:
        if "\x00" in absolute_path:
            raise HTTPError(404)
        return super().validate_absolute_path(root, absolute_path)
