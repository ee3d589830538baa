"""The stack's ceiling: a minimal Tornado app that answers every GET with a fixed ~300-byte JSON
provider object. bench/run.py measures it in the same run as the real server.

    python bench/baseline_app.py --port 9200
"""

from __future__ import annotations

import argparse
import asyncio
import json

import tornado.web

PROVIDER = json.dumps({
    "id": 1, "name": "Example Provider", "type": "openai", "base_url": "https://api.example.com/v1",
    "models": ["example-model-1", "example-model-2"], "is_active": True, "has_api_key": True,
    "api_key_preview": "…-key", "created_at": "2026-11-26T10:00:00.000Z", "updated_at": "2026-11-26T10:00:00.000Z",
    "last_test": None}, ensure_ascii=False).encode("utf-8")


class ProviderHandler(tornado.web.RequestHandler):
    def get(self, _path: str) -> None:
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(PROVIDER)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = tornado.web.Application([(r"(.*)", ProviderHandler)])
    app.listen(args.port, "127.0.0.1", backlog=1024)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
