"""What a web page in the user's browser can make the server do: cross-origin requests (CSRF),
"simple" non-JSON bodies, DNS rebinding through the Host header, CORS for listed origins, and
`Connection: close` on every response after which the server hangs up."""

from __future__ import annotations

import asyncio
import json

import pytest

pytestmark = pytest.mark.gen_test(timeout=30)

EVIL = "http://evil.example"
EMPTY_BACKUP = b'{"format":"provider-registry-backup","version":1,"providers":[]}'
TOKEN = "browser-tests-admin-token-0123"
LISTED = "http://app.example.com:3000"


async def provider_count(api) -> int:
    return len((await api.get("/api/providers")).json())


async def test_cross_origin_text_plain_restore_is_refused_and_changes_nothing(api, provider_body, runtime):
    await api.post("/api/providers", json=provider_body())
    backup_before = runtime.settings.backup_file.read_bytes()
    response = await api.post("/api/admin/providers/restore", body=EMPTY_BACKUP,
                              headers={"Origin": EVIL, "Content-Type": "text/plain"})
    assert response.code == 403
    assert "BACKEND_ALLOWED_ORIGINS" in response.json()["detail"]
    assert await provider_count(api) == 1
    assert runtime.settings.backup_file.read_bytes() == backup_before


async def test_text_plain_body_without_an_origin_is_415_and_changes_nothing(api, provider_body, runtime):
    await api.post("/api/providers", json=provider_body())
    backup_before = runtime.settings.backup_file.read_bytes()
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                         "application/jsonp", "application/json-seq"):
        response = await api.post("/api/admin/providers/restore", body=EMPTY_BACKUP,
                                  headers={"Content-Type": content_type})
        assert response.code == 415, content_type
        assert "application/json" in response.json()["detail"]
    response = await api.request("POST", "/api/admin/providers/restore", body=EMPTY_BACKUP,
                                 headers={"Content-Type": ""})
    assert response.code == 415
    assert await provider_count(api) == 1
    assert runtime.settings.backup_file.read_bytes() == backup_before


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8",
                                          "APPLICATION/JSON;CHARSET=UTF-8", " application/json ; charset=UTF-8"])
async def test_json_content_types_with_parameters_are_accepted(api, provider_body, content_type):
    response = await api.post("/api/providers", body=json.dumps(provider_body()),
                              headers={"Content-Type": content_type})
    assert response.code == 201, response.body


async def test_bodiless_posts_need_no_content_type(api, provider_body, fake_provider):
    created = (await api.post("/api/providers", json=provider_body(base_url=fake_provider.url + "/v1"))).json()
    response = await api.request("POST", f"/api/providers/{created['id']}/test", body=b"",
                                 headers={"Content-Type": "text/plain"})
    assert response.code == 200


@pytest.mark.parametrize("method, path, body", [
    ("POST", "/api/providers", b'{"name": "csrf", "base_url": "http://127.0.0.1:9/v1"}'),
    ("POST", "/api/providers/{id}/test", b""),
    ("POST", "/api/providers/test", b""),
    ("POST", "/api/providers/{id}/models/sync", b""),
    ("POST", "/api/providers/test-connection", b'{"name": "csrf", "base_url": "http://127.0.0.1:9/v1"}'),
    ("PATCH", "/api/providers/{id}", b'{"base_url": "http://127.0.0.1:9/v1"}'),
    ("DELETE", "/api/providers/{id}", None),
    ("GET", "/api/admin/providers/export", None),
    ("GET", "/api/providers", None),
])
async def test_every_api_call_from_a_foreign_origin_is_403_and_sends_nothing(api, provider_body, fake_provider,
                                                                            runtime, method, path, body):
    created = (await api.post("/api/providers", json=provider_body(base_url=fake_provider.url + "/v1"))).json()
    backup_before = runtime.settings.backup_file.read_bytes()
    for headers in ({"Origin": EVIL, "Content-Type": "text/plain"}, {"Origin": EVIL},
                    {"Origin": "null"}, {"Sec-Fetch-Site": "cross-site"},
                    {"Origin": api.base_url, "Sec-Fetch-Site": "cross-site"}):
        response = await api.request(method, path.format(id=created["id"]), body=body, headers=headers)
        assert response.code == 403, (headers, response.body)
        assert "Access-Control-Allow-Origin" not in response.headers
    assert fake_provider.requests == []
    assert runtime.settings.backup_file.read_bytes() == backup_before
    assert (await api.get(f"/api/providers/{created['id']}")).json()["base_url"] == fake_provider.url + "/v1"


async def test_the_servers_own_origin_as_the_host_header_names_it_is_allowed(api, provider_body, http_port):
    own = api.base_url  # http://localhost:PORT, the Host the client sends
    for origin in (own, own.replace("http:", "https:")):
        response = await api.post("/api/providers", json=provider_body(),
                                  headers={"Origin": origin, "Sec-Fetch-Site": "same-origin"})
        assert response.code == 201, response.body
        assert "Access-Control-Allow-Origin" not in response.headers
    other = f"http://127.0.0.1:{http_port}"
    response = await api.post("/api/providers", json=provider_body(),
                              headers={"Origin": other, "Host": f"127.0.0.1:{http_port}"})
    assert response.code == 201
    response = await api.post("/api/providers", json=provider_body(), headers={"Origin": other})
    assert response.code == 403  # not the origin this request names in Host (localhost:PORT)


@pytest.mark.env(BACKEND_ALLOWED_ORIGINS=LISTED, BACKEND_ADMIN_TOKEN=TOKEN)
async def test_listed_origin_gets_cors_headers_and_a_preflight_without_token(api, provider_body):
    response = await api.post("/api/providers", json=provider_body(), headers={"Origin": LISTED})
    assert response.code == 201
    assert response.headers["Access-Control-Allow-Origin"] == LISTED
    assert response.headers["Vary"] == "Origin"
    assert "X-Total-Count" in response.headers["Access-Control-Expose-Headers"]
    denied = await api.get("/api/providers", headers={"Origin": LISTED}, token=None)
    assert denied.code == 401
    assert denied.headers["Access-Control-Allow-Origin"] == LISTED  # the page can read why
    preflight = await api.request("OPTIONS", "/api/providers/1", token=None, headers={
        "Origin": LISTED, "Access-Control-Request-Method": "PATCH",
        "Access-Control-Request-Headers": "authorization, content-type"})
    assert preflight.code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == LISTED
    assert set(preflight.headers["Access-Control-Allow-Methods"].replace(" ", "").split(",")) == {
        "GET", "POST", "PATCH", "DELETE"}
    assert {"authorization", "content-type"} <= set(
        preflight.headers["Access-Control-Allow-Headers"].lower().replace(" ", "").split(","))
    assert int(preflight.headers["Access-Control-Max-Age"]) > 0
    assert preflight.body == b""


@pytest.mark.env(BACKEND_ALLOWED_ORIGINS=LISTED, BACKEND_ADMIN_TOKEN=TOKEN)
async def test_unlisted_origins_get_no_cors_headers_not_even_on_a_preflight(api):
    for origin in (EVIL, LISTED + "0", LISTED.replace("http:", "https:"), "http://app.example.com"):
        preflight = await api.request("OPTIONS", "/api/providers", token=None, headers={
            "Origin": origin, "Access-Control-Request-Method": "POST"})
        assert preflight.code == 403, origin
        assert not any(name.lower().startswith("access-control-") for name in preflight.headers), origin
        response = await api.get("/api/providers", headers={"Origin": origin})
        assert response.code == 403
        assert not any(name.lower().startswith("access-control-") for name in response.headers)
    plain = await api.get("/api/providers")
    assert plain.code == 200 and "Access-Control-Allow-Origin" not in plain.headers


# -- Host (DNS rebinding) ---------------------------------------------------------------------------

REBIND = "rebind.attacker.example"


@pytest.mark.parametrize("path", ["/api/providers", "/api/nope", "/ui/", "/docs", "/openapi.json",
                                  "/ui/static/app.js", "/docs/static/swagger-ui.css", "/", "/nowhere"])
async def test_a_foreign_host_is_refused_on_every_path_in_loopback_only_mode(api, path, http_port):
    for host in (REBIND, f"{REBIND}:{http_port}", "127.0.0.1.nip.io", "localhost.attacker.example", "10.0.0.1"):
        response = await api.get(path, headers={"Host": host})
        assert response.code == 403, (host, path)
        assert "BACKEND_ALLOWED_HOSTS" in response.json()["detail"]


async def test_ping_answers_any_host(api):
    assert (await api.get("/ping", headers={"Host": REBIND})).code == 200


@pytest.mark.parametrize("host", ["localhost", "LOCALHOST:8000", "app.localhost", "127.0.0.1", "127.9.8.7:1234",
                                  "[::1]", "[::1]:8000", "localhost."])
async def test_loopback_hosts_are_accepted(api, host):
    assert (await api.get("/api/providers", headers={"Host": host})).code == 200


async def test_dns_rebinding_cannot_redirect_a_key_to_another_listener(api, provider_body, fake_provider):
    created = (await api.post("/api/providers", json=provider_body(base_url="https://api.example.com/v1"))).json()
    patch = await api.patch(f"/api/providers/{created['id']}", json={"base_url": fake_provider.url + "/v1"},
                            headers={"Host": REBIND})
    assert patch.code == 403
    assert (await api.post(f"/api/providers/{created['id']}/test", headers={"Host": REBIND})).code == 403
    assert fake_provider.requests == []
    assert (await api.get(f"/api/providers/{created['id']}")).json()["base_url"] == "https://api.example.com/v1"


@pytest.mark.env(BACKEND_ALLOWED_HOSTS="registry.example.com")
async def test_listed_hosts_are_accepted_in_loopback_only_mode(api):
    assert (await api.get("/api/providers", headers={"Host": "registry.example.com:8443"})).code == 200
    assert (await api.get("/api/providers", headers={"Host": "localhost"})).code == 200
    assert (await api.get("/api/providers", headers={"Host": REBIND})).code == 403


@pytest.mark.env(BACKEND_ADMIN_TOKEN=TOKEN)
async def test_with_a_token_any_host_is_accepted(api):
    assert (await api.get("/api/providers", headers={"Host": REBIND})).code == 200


@pytest.mark.env(BACKEND_ADMIN_TOKEN=TOKEN, BACKEND_ALLOWED_HOSTS="registry.example.com")
async def test_with_a_token_listed_hosts_still_apply(api):
    assert (await api.get("/api/providers", headers={"Host": "registry.example.com"})).code == 200
    assert (await api.get("/api/providers", headers={"Host": REBIND})).code == 403
    assert (await api.get("/ui/", headers={"Host": REBIND})).code == 403


# -- raw sockets: what HTTP clients would hide ------------------------------------------------------

async def raw_exchange(port: int, request: bytes, linger: float = 1.0) -> tuple[int, dict[str, str], bytes, bool]:
    """Send `request` on a fresh connection; (status, headers, body, whether the server then closed)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in header_lines:
            if ":" in line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        body = await asyncio.wait_for(reader.readexactly(int(headers.get("content-length", "0"))), 10)
        try:
            closed = await asyncio.wait_for(reader.read(1), linger) == b""
        except (asyncio.TimeoutError, ConnectionResetError):
            closed = False
        return int(status_line.split()[1]), headers, body, closed
    finally:
        writer.close()


def request_bytes(method: str, path: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"] + [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + body


@pytest.mark.env(BACKEND_ADMIN_TOKEN=TOKEN)
@pytest.mark.parametrize("request_data, status", [
    (request_bytes("POST", "/api/providers", {"Content-Type": "application/json", "Content-Length": "2"}, b"{}"), 401),
    (request_bytes("POST", "/api/providers", {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json",
                                              "Content-Length": str(2 * 1024 * 1024)}), 413),
    (request_bytes("POST", "/api/providers", {"Authorization": f"Bearer {TOKEN}", "Content-Type": "text/plain",
                                              "Content-Length": "2"}, b"{}"), 415),
    (request_bytes("POST", "/api/providers", {"Authorization": f"Bearer {TOKEN}", "Origin": EVIL,
                                              "Content-Type": "application/json", "Content-Length": "2"}, b"{}"), 403),
    (request_bytes("POST", "/api/providers", {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json",
                                              "Content-Length": "²"}), 400),
    (request_bytes("GET", "/api/providers", {}), 401),
])
async def test_a_response_after_which_the_server_hangs_up_says_connection_close(http_server, http_port,
                                                                                request_data, status):
    code, headers, body, closed = await raw_exchange(http_port, request_data)
    assert code == status
    assert json.loads(body)["detail"]
    assert closed, "expected the server to close after answering before reading the request body"
    assert headers.get("connection", "").lower() == "close"


async def test_a_request_whose_body_was_read_keeps_the_connection_open(http_server, http_port):
    data = request_bytes("POST", "/api/nope", {"Content-Type": "application/json", "Content-Length": "2"}, b"{}")
    code, headers, _, closed = await raw_exchange(http_port, data, linger=0.5)
    assert code == 404
    assert not closed and "connection" not in headers


@pytest.mark.parametrize("content_length", ["²", "١٢", "+2", "-1", "0x2", "2, 3", "2.0"])
async def test_a_content_length_that_is_not_ascii_digits_is_a_json_400(http_server, http_port, content_length):
    data = request_bytes("POST", "/api/providers", {"Content-Type": "application/json",
                                                    "Content-Length": content_length}, b"{}")
    code, headers, body, _ = await raw_exchange(http_port, data)
    assert code == 400
    assert headers["content-type"].startswith("application/json")
    assert "Content-Length" in json.loads(body)["detail"]


@pytest.mark.parametrize("path", ["/ui/static/app.js%00.png", "/ui/static/%00", "/docs/static/%00x.css",
                                  "/api/providers/%00", "/api/providers/1%00", "/ui/static/%ff", "/ui/static/%zz",
                                  "/api/%", "/docs/static/%c0%ae%c0%ae/x", "/ui/%00"])
async def test_nul_and_malformed_escapes_in_a_path_are_a_json_400_or_404(http_server, http_port, path):
    code, headers, body, _ = await raw_exchange(http_port, request_bytes("GET", path, {}))
    assert code in (400, 404), (path, code, body)
    assert headers["content-type"].startswith("application/json"), path
    assert json.loads(body)["detail"]
