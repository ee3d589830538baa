"""A small JSON client for the server under test (pytest-tornado's `http_client`), and blocking
JSON calls for `server.py` subprocesses."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tornado.httpclient import HTTPRequest


@dataclass
class Response:
    code: int
    headers: Any
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Api:
    http_client: Any
    base_url: str
    token: str | None = None

    async def request(self, method: str, path: str, json_body: Any = ..., body: bytes | str | None = None,
                      headers: dict[str, str] | None = None, token: str | None = ...) -> Response:
        headers = dict(headers or {})
        token = self.token if token is ... else token
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if json_body is not ...:
            body = json.dumps(json_body)
            headers.setdefault("Content-Type", "application/json")
        if body is None and method in ("POST", "PATCH", "PUT"):
            body = b""
        if body and not any(name.lower() == "content-type" for name in headers):
            headers["Content-Type"] = "application/json"  # a body of another type is 415
        request = HTTPRequest(self.base_url + path, method=method, headers=headers, body=body,
                              allow_nonstandard_methods=True, request_timeout=30, follow_redirects=False)
        response = await self.http_client.fetch(request, raise_error=False)
        return Response(response.code, response.headers, response.body or b"")

    async def get(self, path, **kw):
        return await self.request("GET", path, **kw)

    async def post(self, path, json=..., **kw):
        return await self.request("POST", path, json_body=json, **kw)

    async def patch(self, path, json=..., **kw):
        return await self.request("PATCH", path, json_body=json, **kw)

    async def delete(self, path, **kw):
        return await self.request("DELETE", path, **kw)


def http_json(method: str, url: str, body: Any = None, token: str | None = None,
              timeout: float = 30) -> tuple[int, Any]:
    """A blocking JSON request (for tests that drive `server.py` subprocesses)."""
    import urllib.error
    import urllib.request
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        return exc.code, json.loads(raw) if raw else None
