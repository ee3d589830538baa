"""/api/webhooks: where events are sent, their pings and their delivery logs (admin only)."""

from __future__ import annotations

from handlers.base import BaseHandler
from registry.access import MANAGE_WEBHOOKS
from registry.schemas import webhook_create_validator, webhook_update_validator

_ID = r"(?P<webhook_id>[0-9]{1,18})"


class WebhookListHandler(BaseHandler):
    permissions = {"GET": MANAGE_WEBHOOKS, "POST": MANAGE_WEBHOOKS}

    def get(self) -> None:
        self.write_json(self.settings["webhooks"].list())

    async def post(self) -> None:
        record, secret = self.settings["webhooks"].create(await self.json_body(webhook_create_validator), self.actor)
        self.set_header("Location", f"/api/webhooks/{record['id']}")
        self.set_header("Cache-Control", "no-store")  # it holds the secret
        self.write_json({**record, "secret": secret}, status=201)


class WebhookHandler(BaseHandler):
    permissions = {"GET": MANAGE_WEBHOOKS, "PATCH": MANAGE_WEBHOOKS, "DELETE": MANAGE_WEBHOOKS}

    def get(self, webhook_id: str) -> None:
        self.write_json(self.settings["webhooks"].get(int(webhook_id)))

    async def patch(self, webhook_id: str) -> None:
        changes = await self.json_body(webhook_update_validator)
        self.write_json(self.settings["webhooks"].update(int(webhook_id), changes, self.actor))

    def delete(self, webhook_id: str) -> None:
        self.settings["webhooks"].delete(int(webhook_id), self.actor)
        self.set_status(204)
        self.clear_header("Content-Type")
        self.finish()


class WebhookPingHandler(BaseHandler):
    permissions = {"POST": MANAGE_WEBHOOKS}

    async def post(self, webhook_id: str) -> None:
        self.write_json(await self.settings["webhooks"].ping(int(webhook_id)))


class WebhookDeliveriesHandler(BaseHandler):
    permissions = {"GET": MANAGE_WEBHOOKS}

    def get(self, webhook_id: str) -> None:
        limit = self.query_int("limit", 1, 1000) or 100
        self.write_json(self.settings["webhooks"].deliveries(int(webhook_id), limit))


default_handlers = [
    (r"/api/webhooks", WebhookListHandler),
    (rf"/api/webhooks/{_ID}", WebhookHandler),
    (rf"/api/webhooks/{_ID}/ping", WebhookPingHandler),
    (rf"/api/webhooks/{_ID}/deliveries", WebhookDeliveriesHandler),
]
