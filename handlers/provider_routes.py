"""/api/providers: CRUD, connectivity tests, history and model discovery."""

from __future__ import annotations

import re

from handlers.base import ApiError, BaseHandler
from registry.provider_types import PROVIDER_TYPES
from registry.schemas import provider_create_validator, provider_update_validator

_ID = r"(?P<provider_id>[0-9]{1,18})"
_CONTROL_CHARACTER = re.compile("[\x00-\x1f\x7f-\x9f]")


class ProviderBaseHandler(BaseHandler):
    def write_provider(self, provider_id: int, status: int = 200) -> None:
        self.write_json_text(self.inventory.get_json(provider_id), status)


class ProviderListHandler(ProviderBaseHandler):
    def get(self) -> None:
        provider_type = self.get_query_argument("type", None)
        if provider_type is not None and provider_type not in PROVIDER_TYPES:
            raise ApiError(400, "Query parameter type must be one of: " + ", ".join(PROVIDER_TYPES) + ".")
        if any(_CONTROL_CHARACTER.search(q) for q in self.query_texts("q")):
            raise ApiError(400, "Query parameter q must not hold control characters.")
        limit = self.query_int("limit", 1, 1000)
        offset = self.query_int("offset", 0, 2**62) or 0
        page, total = self.inventory.list_json(is_active=self.query_bool("is_active"), provider_type=provider_type,
                                               name_contains=self.query_text("q"), limit=limit, offset=offset)
        self.set_header("X-Total-Count", str(total))
        self.write_json_text(b"[" + b",".join(page) + b"]")

    async def post(self) -> None:
        provider_id = await self.inventory.create(await self.json_body(provider_create_validator))
        self.set_header("Location", f"/api/providers/{provider_id}")
        self.write_provider(provider_id, status=201)


class ProviderHandler(ProviderBaseHandler):
    def get(self, provider_id: str) -> None:
        self.write_provider(int(provider_id))

    async def patch(self, provider_id: str) -> None:
        changes = await self.json_body(provider_update_validator)
        await self.inventory.update(int(provider_id), changes)
        self.write_provider(int(provider_id))

    async def delete(self, provider_id: str) -> None:
        await self.inventory.delete(int(provider_id))
        self.set_status(204)
        self.clear_header("Content-Type")
        self.finish()


class ProviderTestHandler(BaseHandler):
    async def post(self, provider_id: str) -> None:
        self.write_json(await self.probes.probe_one(int(provider_id)))


class BulkTestHandler(BaseHandler):
    async def post(self) -> None:
        self.write_json({"results": await self.probes.probe_all()})


class TestConnectionHandler(BaseHandler):
    """Probe an unsaved provider (a create body): nothing is stored, the backup is not touched."""

    async def post(self) -> None:
        self.write_json(await self.probes.probe_unsaved(await self.json_body(provider_create_validator)))


class ProviderHistoryHandler(BaseHandler):
    def get(self, provider_id: str) -> None:
        limit = self.query_int("limit", 1, 1000) or 100
        self.write_json(self.probes.history(int(provider_id), limit))


class ModelDiscoveryHandler(BaseHandler):
    async def get(self, provider_id: str) -> None:
        self.write_json(await self.probes.discover(int(provider_id)))


class ModelSyncHandler(ProviderBaseHandler):
    async def post(self, provider_id: str) -> None:
        await self.probes.sync_models(int(provider_id))
        self.write_provider(int(provider_id))


default_handlers = [
    (r"/api/providers", ProviderListHandler),
    (r"/api/providers/test", BulkTestHandler),
    (r"/api/providers/test-connection", TestConnectionHandler),
    (rf"/api/providers/{_ID}", ProviderHandler),
    (rf"/api/providers/{_ID}/test", ProviderTestHandler),
    (rf"/api/providers/{_ID}/tests", ProviderHistoryHandler),
    (rf"/api/providers/{_ID}/models/discover", ModelDiscoveryHandler),
    (rf"/api/providers/{_ID}/models/sync", ModelSyncHandler),
]
