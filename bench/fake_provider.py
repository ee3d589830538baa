"""A fake upstream LLM API for benchmarks: every GET answers a small model list after --delay seconds.

    python bench/fake_provider.py --port 9100 --delay 0.05
"""

from __future__ import annotations

import argparse
import asyncio

import tornado.web

MODELS = b'{"object": "list", "data": [{"id": "model-a"}, {"id": "model-b"}]}'


class ModelsHandler(tornado.web.RequestHandler):
    def initialize(self, delay: float) -> None:
        self.delay = delay

    async def get(self, _path: str) -> None:
        if self.delay:
            await asyncio.sleep(self.delay)
        self.set_header("Content-Type", "application/json")
        self.finish(MODELS)


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
