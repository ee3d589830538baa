"""What every handler shares: auth, the body limit, JSON in and out, and the one place that turns
errors into SPEC's JSON error responses."""

from __future__ import annotations

import hmac
import itertools
import json
import logging
import re
import sys
import time
import uuid
from typing import Any, TextIO

from jsonschema import Draft202012Validator
from tornado.web import HTTPError, RequestHandler, stream_request_body

from checks import BulkTestInProgress, ConnectivityChecker, UpstreamUnusable
from crypto import UndecryptableKey
from schemas import InvalidJson, parse_json, validation_errors
from store.backup import BackupDuplicates, BackupInvalid, BackupKeysUndecryptable, BackupUnreadable, BackupWriteFailed
from store.providers import DuplicateName, ProviderNotFound
from store.registry import ProviderRegistry

MAX_BODY_BYTES = 1024 * 1024
app_log = logging.getLogger("provider_registry")

# The one map from what the store and the services raise to HTTP statuses; their messages are
# written for clients and never hold a key.
ERROR_STATUS: dict[type[Exception], int] = {
    ProviderNotFound: 404,
    DuplicateName: 409,
    BackupUnreadable: 400,
    BackupInvalid: 422,
    BackupDuplicates: 409,
    BackupKeysUndecryptable: 409,
    BackupWriteFailed: 500,
    BulkTestInProgress: 409,
    UpstreamUnusable: 502,
    UndecryptableKey: 409,
}
_STATUS_DETAILS = {
    400: "The request is malformed.",
    401: "A valid admin token is required: send Authorization: Bearer <token>.",
    404: "Not found.",
    405: "Method not allowed.",
    413: "The request body is larger than 1 MiB.",
}
_INTERNAL_ERROR = "Internal server error; the server log has the details."
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
# Unique per process (random prefix) and cheap per request (a counter, no syscall).
_REQUEST_ID_PREFIX = uuid.uuid4().hex[:8]
_request_ids = map(f"{_REQUEST_ID_PREFIX}-{{}}".format, itertools.count(1))


class ApiError(HTTPError):
    """An error whose `detail` (and per-field `errors`) are meant for the client."""

    def __init__(self, status_code: int, detail: str, errors: list[dict[str, str]] | None = None):
        super().__init__(status_code)
        self.detail = detail
        self.errors = errors


class RequestsInFlight:
    """How many requests have a handler that has not finished; shutdown waits for zero."""

    def __init__(self) -> None:
        self.count = 0


class AccessLog:
    """The access log: one line per request with status, method, path, duration and request id
    (never headers, query strings or bodies), in the format of the other log lines.

    Lines are written in batches (every `batch_lines` lines, at once for a 5xx, and whenever
    `flush()` is called: every half second and at shutdown by server.py) rather than through
    `logging` one by one, which cost ~10% of the throughput of a simple GET.
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


@stream_request_body
class BaseHandler(RequestHandler):
    """Bodies are streamed so an oversized one is refused (413) without being read."""

    def initialize(self) -> None:
        self._body = bytearray()
        self._body_too_large = False
        self._in_flight = self.settings.get("requests_in_flight")
        if self._in_flight is not None:
            self._in_flight.count += 1

    def on_finish(self) -> None:
        if self._in_flight is not None:
            self._in_flight.count -= 1
            self._in_flight = None

    @property
    def registry(self) -> ProviderRegistry:
        return self.settings["registry"]

    @property
    def checker(self) -> ConnectivityChecker:
        return self.settings["checker"]

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.set_header("Cache-Control", "no-store")
        self.set_header("X-Content-Type-Options", "nosniff")
        if not hasattr(self, "request_id"):  # runs in __init__, before initialize()
            self.request_id = self._incoming_request_id() or next(_request_ids)
        self.set_header("X-Request-Id", self.request_id)

    def prepare(self) -> None:
        # Auth first, so a client without the token learns nothing else (not even 404 or 413).
        if self.request.path == "/api" or self.request.path.startswith("/api/"):
            self._check_admin_token()
        declared = self.request.headers.get("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
            raise ApiError(413, _STATUS_DETAILS[413])

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

    def json_body(self, validator: Draft202012Validator | None = None) -> Any:
        """The body parsed as a JSON object (400 otherwise), checked against `validator` (422)."""
        try:
            body = parse_json(self.raw_body())
        except InvalidJson as exc:
            raise ApiError(400, f"The request body {exc}.") from None
        if not isinstance(body, dict):
            raise ApiError(400, "The request body must be a JSON object.")
        if validator is not None:
            errors = validation_errors(validator, body)
            if errors:
                raise ApiError(422, "The request body is invalid: " + "; ".join(
                    f"{e['path']} {e['message']}" for e in errors[:3]) + ("; ..." if len(errors) > 3 else "."),
                    errors)
        return body

    # -- query parameters -------------------------------------------------------------------------

    def query_int(self, name: str, minimum: int, maximum: int | None = None) -> int | None:
        raw = self.get_query_argument(name, None)
        if raw is None:
            return None
        if not re.fullmatch(r"\d{1,19}", raw.strip()) or int(raw) < minimum or (maximum and int(raw) > maximum):
            bounds = f"from {minimum} to {maximum}" if maximum else f"at least {minimum}"
            raise ApiError(400, f"Query parameter {name} must be a whole number {bounds}.")
        return int(raw)

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

    def send_error(self, status_code: int = 500, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        super().send_error(_expected_status(exc) or status_code, **kwargs)

    def log_exception(self, typ, value, tb) -> None:
        if _expected_status(value) or isinstance(value, HTTPError):
            return  # an answer, not a failure: the access log has it
        app_log.error("unexpected error in %s %s (id=%s)", self.request.method, self.request.path,
                      self.request_id, exc_info=(typ, value, tb))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None, None))[1]
        errors = None
        if isinstance(exc, ApiError):
            detail, errors = exc.detail, exc.errors
        elif _expected_status(exc):
            detail = str(exc)[:1].upper() + str(exc)[1:] + ("" if str(exc).endswith(".") else ".")
            errors = getattr(exc, "errors", None)
            if isinstance(exc, BackupWriteFailed):
                detail += " Nothing was changed."
        elif status_code < 500:
            detail = _STATUS_DETAILS.get(status_code, self._reason + ".")
        else:
            detail = _INTERNAL_ERROR
        if status_code == 401:
            self.set_header("WWW-Authenticate", "Bearer")
        if status_code == 405:
            self.set_header("Allow", ", ".join(self.allowed_methods()))
        body = {"detail": detail}
        if errors:
            body["errors"] = errors
        self.finish(json.dumps(body, ensure_ascii=False, separators=(",", ":")))

    def allowed_methods(self) -> list[str]:
        return [m for m in ("GET", "POST", "PATCH", "DELETE")
                if getattr(type(self), m.lower()) is not getattr(RequestHandler, m.lower())]

    # -- internals --------------------------------------------------------------------------------

    def _check_admin_token(self) -> None:
        token = self.settings.get("admin_token")
        if not token:
            return
        scheme, _, provided = self.request.headers.get("Authorization", "").partition(" ")
        if not (scheme.lower() == "bearer" and
                hmac.compare_digest(provided.strip().encode("utf-8"), token.encode("utf-8"))):
            raise ApiError(401, _STATUS_DETAILS[401])

    def _incoming_request_id(self) -> str | None:
        incoming = self.request.headers.get("X-Request-Id", "")
        return incoming if _REQUEST_ID.match(incoming) else None


class NotFoundHandler(BaseHandler):
    """Every path no route matches (unknown ids that are not numbers included): a JSON 404."""

    def prepare(self) -> None:
        super().prepare()
        raise ApiError(404, f"No such path: {self.request.path[:200]}")


def _expected_status(exc: BaseException | None) -> int | None:
    for cls in type(exc).__mro__ if exc is not None else ():
        if cls in ERROR_STATUS:
            return ERROR_STATUS[cls]
    return None
