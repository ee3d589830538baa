"""A fake upstream LLM API served by Tornado on a loopback port: it records every request and
answers as the test tells it (`fake.answer("/models", status=401)`)."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import tornado.httpserver
import tornado.web


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
    body: bytes = b""
    at: float = 0.0  # time.time() when it arrived


class FakeProvider:
    """Records requests; answers per path. Default: a model list in the shape each API uses."""

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self.answers: dict[str, Answer] = {}
        self.in_flight = 0
        self.max_in_flight = 0
        self.port = 0
        self.scheme = "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

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
        await self.answer()

    async def post(self, path: str) -> None:
        await self.answer()

    async def answer(self) -> None:
        fake = self.fake
        fake.requests.append(RecordedRequest(self.request.method, self.request.path, self.request.query,
                                             {k.lower(): v for k, v in self.request.headers.get_all()},
                                             self.request.body, time.time()))
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


def serve_fake_provider(ssl_context=None) -> tuple[FakeProvider, Callable[[], None]]:
    """The fake on a new loopback port of the current event loop (HTTPS with `ssl_context`);
    returns it and a stop function."""
    fake = FakeProvider()
    fake.scheme = "https" if ssl_context is not None else "http"
    app = tornado.web.Application([(r"(.*)", _FakeHandler, {"fake": fake})])
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    sock.setblocking(False)
    fake.port = sock.getsockname()[1]
    server = tornado.httpserver.HTTPServer(app, ssl_options=ssl_context)
    server.add_sockets([sock])
    return fake, server.stop


def start_threaded_fake_provider() -> tuple[FakeProvider, Callable[[], None]]:
    """The fake served from its own thread and event loop (for `server.py` subprocesses, whose
    requests arrive while the test blocks); returns it and a stop function."""
    ready = threading.Event()
    state: dict[str, Any] = {}

    def serve() -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        state["fake"], stop_server = serve_fake_provider()
        state["loop"] = loop
        ready.set()
        loop.run_forever()
        stop_server()
        loop.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(10)

    def stop() -> None:
        state["loop"].call_soon_threadsafe(state["loop"].stop)
        thread.join(10)

    return state["fake"], stop
