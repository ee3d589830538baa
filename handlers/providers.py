"""/api/providers: CRUD, connectivity tests, history and model discovery."""

from __future__ import annotations

import re
import statistics
from typing import Any

from handlers.base import ApiError, BaseHandler
from schemas import PROVIDER_TYPES, provider_create_validator, provider_update_validator
from store.providers import ProviderFilter

_ID = r"(?P<provider_id>[0-9]{1,18})"
_CONTROL_CHARACTER = re.compile("[\x00-\x1f\x7f-\x9f]")


class ProviderBaseHandler(BaseHandler):
    def write_provider(self, provider_id: int, status: int = 200) -> None:
        self.write_json_text(self.registry.get_json(provider_id), status)


class ProviderListHandler(ProviderBaseHandler):
    def get(self) -> None:
        provider_type = self.get_query_argument("type", None)
        if provider_type is not None and provider_type not in PROVIDER_TYPES:
            raise ApiError(400, "Query parameter type must be one of: " + ", ".join(PROVIDER_TYPES) + ".")
        name_contains = self.query_text("q")
        if name_contains is not None and _CONTROL_CHARACTER.search(name_contains):
            raise ApiError(400, "Query parameter q must not hold control characters.")
        filters = ProviderFilter(is_active=self.query_bool("is_active"), type=provider_type,
                                 name_contains=name_contains)
        limit = self.query_int("limit", 1, 1000)
        offset = self.query_int("offset", 0, 2**62) or 0
        page, total = self.registry.list_json(filters, limit, offset)
        self.set_header("X-Total-Count", str(total))
        self.write_json_text(b"[" + b",".join(page) + b"]")

    async def post(self) -> None:
        provider_id = await self.registry.create(self.json_body(provider_create_validator))
        self.set_header("Location", f"/api/providers/{provider_id}")
        self.write_provider(provider_id, status=201)


class ProviderHandler(ProviderBaseHandler):
    def get(self, provider_id: str) -> None:
        self.write_provider(int(provider_id))

    async def patch(self, provider_id: str) -> None:
        changes = self.json_body(provider_update_validator)
        await self.registry.update(int(provider_id), changes)
        self.write_provider(int(provider_id))

    async def delete(self, provider_id: str) -> None:
        await self.registry.delete(int(provider_id))
        self.set_status(204)
        self.clear_header("Content-Type")
        self.finish()


class ProviderTestHandler(BaseHandler):
    async def post(self, provider_id: str) -> None:
        self.write_json(await self.checker.test_one(int(provider_id)))


class BulkTestHandler(BaseHandler):
    async def post(self) -> None:
        self.write_json({"results": await self.checker.test_all()})


class TestConnectionHandler(BaseHandler):
    """Probe an unsaved provider (a create body): nothing is stored, the backup is not touched."""

    async def post(self) -> None:
        self.write_json(await self.checker.test_unsaved(self.json_body(provider_create_validator)))


class ProviderHistoryHandler(BaseHandler):
    def get(self, provider_id: str) -> None:
        limit = self.query_int("limit", 1, 1000) or 100
        results = self.registry.history(int(provider_id), limit)
        self.write_json({"results": results, "summary": history_summary(results)})


class ModelDiscoveryHandler(BaseHandler):
    async def get(self, provider_id: str) -> None:
        upstream, configured = await self.checker.discover(int(provider_id))
        self.write_json({"models": upstream,
                         "missing": [m for m in configured if m not in set(upstream)],
                         "new": [m for m in upstream if m not in set(configured)]})


class ModelSyncHandler(ProviderBaseHandler):
    async def post(self, provider_id: str) -> None:
        self.registry.ensure_writable()  # before the probe, not after it
        upstream, _ = await self.checker.discover(int(provider_id))
        await self.registry.update(int(provider_id), {"models": upstream})
        self.write_provider(int(provider_id))


def history_summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    """count, online_pct (0-100) and latency p50/p95 over the given results."""
    latencies = sorted(r["latency_ms"] for r in results)
    return {
        "count": len(results),
        "online_pct": round(100.0 * sum(r["status"] == "online" for r in results) / len(results), 2)
        if results else None,
        "p50_ms": _percentile(latencies, 50),
        "p95_ms": _percentile(latencies, 95),
    }


def _percentile(ordered: list[float], pct: int) -> float | None:
    if not ordered:
        return None
    if len(ordered) == 1:
        return ordered[0]
    return round(statistics.quantiles(ordered, n=100, method="inclusive")[pct - 1], 2)


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
