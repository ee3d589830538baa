"""A fake upstream LLM API for benchmarks: every GET answers a small model list after --delay seconds,
or, after a POST /__status/503 (say), that status instead (POST /__status/200 to come back).

    python bench/fake_provider.py --port 9100 --delay 0.05
"""

from __future__ import annotations

import argparse
import asyncio

import tornado.web

MODELS = b'{"object": "list", "data": [{"id": "model-a"}, {"id": "model-b"}]}'


class ModelsHandler(tornado.web.RequestHandler):
    status = 200  # what every GET answers, set by POST /__status/NNN

    def initialize(self, delay: float) -> None:
        self.delay = delay

    async def get(self, _path: str) -> None:
        if self.delay:
            await asyncio.sleep(self.delay)
        self.set_status(ModelsHandler.status)
        self.set_header("Content-Type", "application/json")
        self.finish(MODELS)

    def post(self, path: str) -> None:
        if not path.startswith("/__status/"):
            raise tornado.web.HTTPError(404)
        ModelsHandler.status = int(path.rsplit("/", 1)[1])
        self.finish()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay", type=float, default=0.05)
    args = parser.parse_args()
    app = tornado.web.Application([(r"(.*)", ModelsHandler, {"delay": args.delay})])
    app.listen(args.port, "127.0.0.1", backlog=1024)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
