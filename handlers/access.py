"""/api/tokens (named API tokens) and /api/audit (the audit log)."""

from __future__ import annotations

from handlers.base import ApiError, BaseHandler
from registry.access import MANAGE_TOKENS, READ_AUDIT, READ_OWN_TOKEN
from registry.schemas import MAX_ID, token_create_validator


_ID = r"(?P<token_id>[0-9]{1,18})"


class TokensHandler(BaseHandler):
    permissions = {"GET": MANAGE_TOKENS, "POST": MANAGE_TOKENS}

    def get(self) -> None:
        self.write_json(self.settings["tokens"].list())

    async def post(self) -> None:
        body = await self.json_body(token_create_validator)
        record, secret = self.settings["tokens"].create(body["name"], body["role"], body.get("providers"),
                                                        body.get("expires_in_days"), self.actor)
        self.set_header("Location", f"/api/tokens/{record['id']}")
        self.write_json({**record, "token": secret}, status=201)


class TokenHandler(BaseHandler):
    permissions = {"DELETE": MANAGE_TOKENS}

    def delete(self, token_id: str) -> None:
        self.settings["tokens"].revoke(int(token_id), self.actor)
        self.set_status(204)
        self.clear_header("Content-Type")
        self.finish()


class OwnTokenHandler(BaseHandler):
    """The caller's own token record."""

    permissions = {"GET": READ_OWN_TOKEN}

    def get(self) -> None:
        if self.actor.token_id is None:  # BACKEND_ADMIN_TOKEN, or no authentication at all
            self.write_json({"id": None, "name": self.actor.name, "role": self.actor.role, "providers": None,
                             "created_at": None, "expires_at": None, "last_used_at": None})
            return
        self.write_json(self.settings["tokens"].get(self.actor.token_id))


class AuditHandler(BaseHandler):
    permissions = {"GET": READ_AUDIT}

    def get(self) -> None:
        limit = self.query_int("limit", 1, 1000) or 100
        before = self.query_int("before", 1, MAX_ID)
        target_id = self.query_int("target_id", 0, MAX_ID)
        action, actor = self.query_text("action"), self.query_text("actor")
        if action is not None and not action:
            raise ApiError(400, "Query parameter action must not be empty.")
        self.write_json(self.settings["audit"].events(limit, before, action, actor, target_id))


default_handlers = [
    (r"/api/tokens", TokensHandler),
    (r"/api/tokens/self", OwnTokenHandler),
    (rf"/api/tokens/{_ID}", TokenHandler),
    (r"/api/audit", AuditHandler),
]
