"""/ping: liveness, no auth."""

from handlers.base import BaseHandler


class PingHandler(BaseHandler):
    def get(self) -> None:
        self.write_json({"status": "ok"})


default_handlers = [(r"/ping", PingHandler)]
