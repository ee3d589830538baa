"""A webhook receiver for benchmarks: POST /ok answers 200 after --delay seconds, POST /hang never
answers (until the sender gives up); GET /count gives how many POSTs each path received, and how
many distinct webhook-ids /ok saw.

    python bench/webhook_receiver.py --port 9200 --delay 0.05
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json

import tornado.web

RECEIVED: collections.Counter = collections.Counter()
MESSAGE_IDS: set[str] = set()


class HookHandler(tornado.web.RequestHandler):
    def initialize(self, delay: float) -> None:
        self.delay = delay

    async def post(self, path: str) -> None:
        RECEIVED[path] += 1
        if path == "/hang":
            await asyncio.sleep(3600)
        MESSAGE_IDS.add(self.request.headers.get("webhook-id", ""))
        await asyncio.sleep(self.delay)
        self.finish()

    def get(self, path: str) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"received": dict(RECEIVED), "distinct_ok_ids": len(MESSAGE_IDS)}))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay", type=float, default=0.05)
    args = parser.parse_args()
    app = tornado.web.Application([(r"(.*)", HookHandler, {"delay": args.delay})])
    app.listen(args.port, "127.0.0.1", backlog=1024)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
