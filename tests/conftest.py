"""Fixtures (a real server on loopback, a real SQLite file, real outbound HTTP):

- `data_dir`: the temp directory the app keeps its database, secret and backup in.
- `env`: the BACKEND_* variables the app is built from (data in `data_dir`); a test adds or
  overrides some with `@pytest.mark.env(NAME="value")`.
- `runtime`: settings, the migrated SQLite database and the registry (what `server.py` opens).
- `app`: the real tornado Application; pytest-tornado's `http_server` serves it on a loopback port.
- `api`: a small JSON client for that server (`await api.post("/api/providers", json={...})`).
- `fake_provider`: a fake upstream LLM API served by Tornado on another loopback port; it records
  every request and answers as the test tells it (`fake_provider.answer("/models", status=401)`).
- `access_log`: the app's access log written to memory, line by line (`access_log()` -> lines).
- `provider_body`: a valid create body factory.
- `add_foreign_key_provider`: stores a provider whose key was encrypted under a secret the server
  does not have (as after a lost secret), written by a second registry on the same database file.
- `run_server`: starts `server.py` as a subprocess (for start-up, CLI and crash tests).
- `threaded_fake_provider`: the fake upstream on its own thread, for `server.py` subprocesses.

Helpers: `http_json` (blocking JSON calls to a subprocess), `run_cli` (`server.py ARGS` to completion),
`start_server_process` / `start_threaded_fake_provider` (module-scoped variants), `closed_port`.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import tornado.httpserver
import tornado.web
from tornado.httpclient import HTTPRequest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from config import load_settings  # noqa: E402
from crypto import Keyring  # noqa: E402
from handlers import AccessLog  # noqa: E402
from server import build_service, open_runtime, uvloop  # noqa: E402
from store.database import connect  # noqa: E402
from store.registry import ProviderRegistry  # noqa: E402

# The tests' event loops (pytest-tornado makes one per test) are the kind server.py serves on.
if uvloop is not None:
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())

TEST_SECRET = "test-secret-for-the-suite"


def pytest_configure(config):
    config.addinivalue_line("markers", "env(**variables): BACKEND_* variables for the app under test")


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def env(request, data_dir: Path) -> dict[str, str]:
    variables = {
        "BACKEND_DATABASE_URL": f"sqlite:///{data_dir / 'providers.db'}",
        "BACKEND_BACKUP_FILE": str(data_dir / "config_backup.json"),
        "BACKEND_API_KEY_SECRET": TEST_SECRET,
        "BACKEND_REQUEST_TIMEOUT_SECONDS": "2",
    }
    for marker in reversed(list(request.node.iter_markers("env"))):
        variables.update(marker.kwargs)
    return {k: v for k, v in variables.items() if v is not None}


@pytest.fixture
def runtime(env):
    runtime = open_runtime(load_settings(env))
    yield runtime
    runtime.conn.close()


@pytest.fixture
def app(runtime, io_loop):
    application, prober, _ = build_service(runtime)
    yield application
    prober.close()


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


@pytest.fixture
def api(http_server, http_client, base_url, env) -> Api:
    return Api(http_client, base_url, token=env.get("BACKEND_ADMIN_TOKEN"))


@pytest.fixture
def access_log(app):
    stream = io.StringIO()
    app.settings["log_function"] = AccessLog(stream, batch_lines=1)
    return lambda: stream.getvalue().splitlines()


@pytest.fixture
def provider_body():
    counter = iter(range(1, 10_000))

    def make(**fields: Any) -> dict[str, Any]:
        body = {"name": f"Provider {next(counter)}", "base_url": "https://api.example.com/v1",
                "api_key": "sk-test-0123456789abcdef", "models": ["model-a", "model-b"]}
        body.update(fields)
        return {k: v for k, v in body.items() if v is not ...}

    return make


@pytest.fixture
def add_foreign_key_provider(runtime):
    async def add(**fields: Any) -> int:
        conn = connect(runtime.settings.database_path)
        try:
            keyring = Keyring(["a secret this server does not know"])
            other = ProviderRegistry(conn, keyring, runtime.settings.backup_file)
            body = {"name": "Foreign key", "base_url": "https://foreign.example.com/v1",
                    "api_key": "sk-foreign-0123456789"}
            return await other.create({**body, **fields})
        finally:
            conn.close()

    return add


# -- a fake upstream provider ----------------------------------------------------------------------

@dataclass
class Answer:
    status: int = 200
    body: Any = None
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class RecordedRequest:
    method: str
    path: str
    query: str
    headers: dict[str, str]


class FakeProvider:
    """Records requests; answers per path. Default: a model list in the shape each API uses."""

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self.answers: dict[str, Answer] = {}
        self.in_flight = 0
        self.max_in_flight = 0
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def answer(self, path: str, status: int = 200, body: Any = None, delay: float = 0.0,
               headers: dict[str, str] | None = None) -> None:
        self.answers[path] = Answer(status, body, delay, headers or {})

    def default_answer(self, path: str) -> Answer:
        if path.endswith("/api/tags"):
            return Answer(body={"models": [{"name": "llama3:8b"}, {"name": "qwen2:7b"}]})
        if "gemini" in path:
            return Answer(body={"models": [{"name": "models/gemini-1.5-pro"}, {"name": "models/gemini-2.0"}]})
        return Answer(body={"object": "list", "data": [{"id": "model-a"}, {"id": "model-c"}]})


class _FakeHandler(tornado.web.RequestHandler):
    def initialize(self, fake: FakeProvider) -> None:
        self.fake = fake

    async def get(self, path: str) -> None:
        fake = self.fake
        fake.requests.append(RecordedRequest("GET", self.request.path, self.request.query,
                                             {k.lower(): v for k, v in self.request.headers.get_all()}))
        fake.in_flight += 1
        fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
        try:
            answer = fake.answers.get(self.request.path) or fake.default_answer(self.request.path)
            if answer.delay:
                await asyncio.sleep(answer.delay)
            self.set_status(answer.status)
            for name, value in answer.headers.items():
                self.set_header(name, value)
            if isinstance(answer.body, (bytes, str)):
                self.finish(answer.body)
            elif answer.body is not None:
                self.set_header("Content-Type", "application/json")
                self.finish(json.dumps(answer.body))
            else:
                self.finish()
        finally:
            fake.in_flight -= 1


@pytest.fixture
def fake_provider(io_loop):
    fake = FakeProvider()
    app = tornado.web.Application([(r"(.*)", _FakeHandler, {"fake": fake})])
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    sock.setblocking(False)
    fake.port = sock.getsockname()[1]
    server = tornado.httpserver.HTTPServer(app)
    server.add_sockets([sock])
    yield fake
    server.stop()


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- server.py as a subprocess ---------------------------------------------------------------------

@dataclass
class ServerProcess:
    process: subprocess.Popen
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 15) -> int:
        if self.process.poll() is None:
            self.process.terminate()
        return self.process.wait(timeout=timeout)


def clean_environment(env: dict[str, str]) -> dict[str, str]:
    """What a `server.py` subprocess sees: only PATH and HOME from here, plus `env`."""
    return {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"), **env}


def run_cli(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 30) -> subprocess.CompletedProcess:
    """Run `server.py ARGS` to completion in a clean environment (only PATH, HOME and `env`)."""
    return subprocess.run([sys.executable, str(ROOT / "server.py"), *args], cwd=cwd, env=clean_environment(env),
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def start_server_process(env: dict[str, str], cwd: Path, args: list[str] = (), wait: bool = True) -> ServerProcess:
    """Start `server.py ARGS` in `cwd` with a clean environment plus `env`; wait for /ping."""
    import urllib.request
    port = int(env.get("BACKEND_PORT") or closed_port())
    log_path = cwd / f"server-{port}.log"
    full_env = clean_environment({**env, "BACKEND_PORT": str(port)})
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen([sys.executable, str(ROOT / "server.py"), *args], cwd=cwd, env=full_env,
                                   stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    server = ServerProcess(process, port, log_path)
    if not wait:
        return server
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode}:\n{server.log()}")
        try:
            with urllib.request.urlopen(server.url + "/ping", timeout=1) as response:
                if response.status == 200:
                    return server
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise AssertionError(f"server did not answer /ping in time:\n{server.log()}")


def kill_server_process(server: ServerProcess) -> None:
    if server.process.poll() is None:
        server.process.kill()
        server.process.wait(timeout=10)


@pytest.fixture
def run_server(tmp_path: Path):
    """`start(env, args=(), cwd=tmp_path)`: `server.py` as a subprocess; killed at teardown if still running."""
    started: list[ServerProcess] = []

    def start(env: dict[str, str], args: list[str] = (), cwd: Path | None = None, wait: bool = True) -> ServerProcess:
        server = start_server_process(env, cwd or tmp_path, args, wait)
        started.append(server)
        return server

    yield start
    for server in started:
        kill_server_process(server)


def start_threaded_fake_provider() -> tuple[FakeProvider, Any]:
    """The fake upstream served from its own thread and event loop; returns it and a stop function."""
    import threading
    fake = FakeProvider()
    ready = threading.Event()
    state: dict[str, Any] = {}

    def serve() -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        app = tornado.web.Application([(r"(.*)", _FakeHandler, {"fake": fake})])
        server = tornado.httpserver.HTTPServer(app)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        sock.setblocking(False)
        fake.port = sock.getsockname()[1]
        server.add_sockets([sock])
        state["loop"] = loop
        ready.set()
        loop.run_forever()
        server.stop()
        loop.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(10)

    def stop() -> None:
        state["loop"].call_soon_threadsafe(state["loop"].stop)
        thread.join(10)

    return fake, stop


@pytest.fixture
def threaded_fake_provider():
    """The fake upstream for `server.py` subprocesses (whose requests arrive while the test blocks)."""
    fake, stop = start_threaded_fake_provider()
    yield fake
    stop()


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
