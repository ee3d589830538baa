"""/api/providers: CRUD, connectivity tests, history and model discovery."""

from __future__ import annotations

import re

from handlers.base import ApiError, BaseHandler
from registry.access import ANONYMOUS_ACTOR, CHANGE_PROVIDERS, READ_CREDENTIALS, READ_PROVIDERS
from registry.provider_types import PROVIDER_TYPES
from registry.schemas import provider_create_validator, provider_update_validator

_ID = r"(?P<provider_id>[0-9]{1,18})"
_CONTROL_CHARACTER = re.compile("[\x00-\x1f\x7f-\x9f]")


class ProviderBaseHandler(BaseHandler):
    def write_provider(self, provider_id: int, status: int = 200) -> None:
        self.write_json_text(self.inventory.get_json(provider_id), status)


class ProviderListHandler(ProviderBaseHandler):
    permissions = {"GET": READ_PROVIDERS, "POST": CHANGE_PROVIDERS}

    def get(self) -> None:
        provider_type = self.get_query_argument("type", None)
        if provider_type is not None and provider_type not in PROVIDER_TYPES:
            raise ApiError(400, "Query parameter type must be one of: " + ", ".join(PROVIDER_TYPES) + ".")
        if any(_CONTROL_CHARACTER.search(q) for q in self.query_texts("q")):
            raise ApiError(400, "Query parameter q must not hold control characters.")
        limit = self.query_int("limit", 1, 1000)
        offset = self.query_int("offset", 0, 2**62) or 0
        page, total = self.inventory.list_json(is_active=self.query_bool("is_active"), provider_type=provider_type,
                                               name_contains=self.query_text("q"), limit=limit, offset=offset,
                                               ids=self.actor.providers)
        self.set_header("X-Total-Count", str(total))
        self.write_json_text(b"[" + b",".join(page) + b"]")

    async def post(self) -> None:
        provider_id = await self.inventory.create(await self.json_body(provider_create_validator), self.actor)
        self.set_header("Location", f"/api/providers/{provider_id}")
        self.write_provider(provider_id, status=201)


class ProviderHandler(ProviderBaseHandler):
    permissions = {"GET": READ_PROVIDERS, "PATCH": CHANGE_PROVIDERS, "DELETE": CHANGE_PROVIDERS}

    def get(self, provider_id: str) -> None:
        self.write_provider(self.may_see(int(provider_id)))

    async def patch(self, provider_id: str) -> None:
        changes = await self.json_body(provider_update_validator)
        await self.inventory.update(int(provider_id), changes, self.actor)
        self.write_provider(int(provider_id))

    async def delete(self, provider_id: str) -> None:
        await self.inventory.delete(int(provider_id), self.actor)
        self.set_status(204)
        self.clear_header("Content-Type")
        self.finish()


class ProviderTestHandler(BaseHandler):
    permissions = {"POST": CHANGE_PROVIDERS}

    async def post(self, provider_id: str) -> None:
        self.write_json(await self.probes.probe_one(self.may_see(int(provider_id))))


class BulkTestHandler(BaseHandler):
    permissions = {"POST": CHANGE_PROVIDERS}

    async def post(self) -> None:
        self.write_json({"results": await self.probes.probe_all()})


class TestConnectionHandler(BaseHandler):
    """Probe an unsaved provider (a create body): nothing is stored, the backup is not touched."""

    permissions = {"POST": CHANGE_PROVIDERS}

    async def post(self) -> None:
        self.write_json(await self.probes.probe_unsaved(await self.json_body(provider_create_validator)))


class ProviderHistoryHandler(BaseHandler):
    permissions = {"GET": READ_PROVIDERS}

    def get(self, provider_id: str) -> None:
        limit = self.query_int("limit", 1, 1000) or 100
        self.write_json(self.probes.history(self.may_see(int(provider_id)), limit))


class ModelDiscoveryHandler(BaseHandler):
    permissions = {"GET": CHANGE_PROVIDERS}  # it sends the key upstream

    async def get(self, provider_id: str) -> None:
        self.write_json(await self.probes.discover(int(provider_id)))


class ModelSyncHandler(ProviderBaseHandler):
    permissions = {"POST": CHANGE_PROVIDERS}

    async def post(self, provider_id: str) -> None:
        await self.probes.sync_models(int(provider_id), self.actor)
        self.write_provider(int(provider_id))


class CredentialsHandler(BaseHandler):
    """A provider's key and the headers and query its type authenticates with, for an application.
    The only response that ever holds a key: audited before it is sent, never cached."""

    permissions = {"GET": READ_CREDENTIALS}

    def get(self, provider_id: str) -> None:
        if self.actor.name == ANONYMOUS_ACTOR:
            self.settings["audit"].denied(self.actor)
            raise ApiError(403, "Keys are not handed out without authentication (any process on this machine "
                                "could read them): create a consumer token (python server.py --create-token "
                                "NAME --role consumer) and send it as Authorization: Bearer <token>.")
        self.write_json(self.inventory.credentials(self.may_see(int(provider_id)), self.actor))


class ResolveHandler(BaseHandler):
    """The active providers offering a model, best first."""

    permissions = {"GET": READ_PROVIDERS}

    def get(self) -> None:
        model = self.query_text("model")
        if not model:
            raise ApiError(400, "Query parameter model is required.")
        provider_type = self.get_query_argument("type", None)
        if provider_type is not None and provider_type not in PROVIDER_TYPES:
            raise ApiError(400, "Query parameter type must be one of: " + ", ".join(PROVIDER_TYPES) + ".")
        self.write_json(self.probes.resolve(model, provider_type, self.actor.providers))


default_handlers = [
    (r"/api/providers", ProviderListHandler),
    (r"/api/providers/test", BulkTestHandler),
    (r"/api/providers/test-connection", TestConnectionHandler),
    (rf"/api/providers/{_ID}", ProviderHandler),
    (rf"/api/providers/{_ID}/test", ProviderTestHandler),
    (rf"/api/providers/{_ID}/tests", ProviderHistoryHandler),
    (rf"/api/providers/{_ID}/models/discover", ModelDiscoveryHandler),
    (rf"/api/providers/{_ID}/models/sync", ModelSyncHandler),
    (rf"/api/providers/{_ID}/credentials", CredentialsHandler),
    (r"/api/resolve", ResolveHandler),
]
