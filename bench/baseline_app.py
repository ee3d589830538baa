"""The stack's ceiling: a minimal Tornado app that answers every GET with a fixed ~300-byte JSON
provider object. bench/run.py measures it in the same run as the real server, on asyncio's own
event loop (the plain Tornado app the targets are set against) and, for reference, on uvloop (the
loop server.py serves on).

    python bench/baseline_app.py --port 9200 [--uvloop]
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


async def serve(port: int) -> None:
    app = tornado.web.Application([(r"(.*)", ProviderHandler)])
    app.listen(port, "127.0.0.1", backlog=1024)
    await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--uvloop", action="store_true", help="serve on uvloop instead of asyncio's loop")
    args = parser.parse_args()
    if args.uvloop:
        import uvloop
        uvloop.run(serve(args.port))
    else:
        asyncio.run(serve(args.port))
