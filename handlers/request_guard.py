"""What a web page in the user's browser may make this server do.

The registry often runs on a laptop next to a browser, where any page can send it requests:
- DNS rebinding: a page whose host name resolves to 127.0.0.1 talks to the server as if it were its
  own origin, so in loopback-only mode (no admin token) a request must name a loopback host (or a
  listed one) in `Host`;
- CSRF: a page can send "simple" cross-origin requests (no preflight), so a request carrying an
  `Origin` other than the server's own, or marked `Sec-Fetch-Site: cross-site`, is refused unless
  that origin is listed; listed origins get CORS headers.
"""

from __future__ import annotations

import ipaddress

CORS_ALLOWED_METHODS = "GET, POST, PATCH, DELETE"
CORS_ALLOWED_HEADERS = "Authorization, Content-Type, X-Backup-Passphrase"
CORS_EXPOSED_HEADERS = "Location, X-Total-Count, X-Request-Id"
CORS_MAX_AGE_SECONDS = "600"
_HOST_CACHE_LIMIT = 256


def host_name(host_header: str) -> str:
    """The name part of a `Host` header, lower-case, without port or trailing dot
    (`[::1]:8000` -> `[::1]`, `LocalHost.:80` -> `localhost`)."""
    host = host_header.strip().lower()
    if host.startswith("["):
        name, _, rest = host.partition("]")
        if rest and not (rest.startswith(":") and rest[1:].isdigit()):
            return host  # not `[address]` or `[address]:port`: no loopback name
        return name + "]"
    name, _, port = host.rpartition(":")
    if name and port.isdigit():
        host = name
    return host.rstrip(".")


def is_loopback_name(name: str) -> bool:
    """`localhost`, `*.localhost`, 127.0.0.0/8, [::1] (and ::ffff:127.x.y.z)."""
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(name[1:-1] if name.startswith("[") and name.endswith("]") else name)
    except ValueError:
        return False
    if address.version == 6 and not name.startswith("["):
        return False  # an IPv6 Host is always bracketed
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


class RequestGuard:
    """The Host and Origin rules of one server, built from its settings."""

    def __init__(self, allowed_origins: frozenset[str], allowed_hosts: frozenset[str] | None):
        self.allowed_origins = allowed_origins
        self.allowed_hosts = allowed_hosts or frozenset()
        self._hosts_listed = allowed_hosts is not None
        self._host_allowed: dict[str, bool] = {}

    def host_refusal(self, host_header: str, loopback_only: bool) -> str | None:
        """Why a request naming this `Host` is refused, or None. Loopback-only mode (no
        authentication configured) checks Host always; otherwise only when hosts are listed."""
        if not (loopback_only or self._hosts_listed):
            return None
        allowed = self._host_allowed.get(host_header)
        if allowed is None:
            name = host_name(host_header)
            allowed = is_loopback_name(name) or name in self.allowed_hosts
            if len(self._host_allowed) >= _HOST_CACHE_LIMIT:
                self._host_allowed.clear()
            self._host_allowed[host_header] = allowed
        if allowed:
            return None
        return (f"Requests for the host {host_header[:100]!r} are refused: this server answers to loopback names "
                "(localhost, 127.0.0.1, [::1]) and to the names in BACKEND_ALLOWED_HOSTS.")

    def is_listed(self, origin: str | None) -> bool:
        return origin is not None and origin.lower() in self.allowed_origins

    def origin_refusal(self, origin: str | None, sec_fetch_site: str | None, host_header: str) -> str | None:
        """Why a request from this origin is refused, or None: the server's own origin (as the request
        names it in `Host`) and listed ones are allowed."""
        if origin is None and sec_fetch_site != "cross-site":
            return None
        if self.is_listed(origin):
            return None
        if origin is not None and sec_fetch_site != "cross-site":
            lowered, host = origin.lower(), host_header.lower()
            if lowered in (f"http://{host}", f"https://{host}"):
                return None
        source = repr(origin[:100]) if origin is not None else "another site"
        return (f"Cross-origin requests from {source} are refused; to allow a web application's origin, "
                "list it in BACKEND_ALLOWED_ORIGINS.")

    def cors_headers(self, origin: str | None) -> dict[str, str]:
        """The CORS headers of an API response to a request from `origin` (none for unlisted origins)."""
        if not self.is_listed(origin):
            return {}
        return {"Access-Control-Allow-Origin": origin, "Vary": "Origin",
                "Access-Control-Expose-Headers": CORS_EXPOSED_HEADERS}

    def preflight_headers(self) -> dict[str, str]:
        return {"Access-Control-Allow-Methods": CORS_ALLOWED_METHODS,
                "Access-Control-Allow-Headers": CORS_ALLOWED_HEADERS,
                "Access-Control-Max-Age": CORS_MAX_AGE_SECONDS}
