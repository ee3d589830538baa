"""Connectivity checks of stored providers: one, all (also on a schedule), and model discovery.

Glue between the registry (what to probe, where results go) and the prober (how to probe), so
handlers and the scheduler share one implementation.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from crypto import UndecryptableKey
from probe import ProbeOutcome, Prober, ProbeTarget
from schemas import with_defaults
from store.providers import Provider, ProviderFilter
from store.registry import ProviderRegistry

log = logging.getLogger("provider_registry.checks")


class BulkTestInProgress(Exception):
    def __init__(self) -> None:
        super().__init__("a test of all providers is already running; wait for it to finish")


class UpstreamUnusable(Exception):
    """The provider gave no usable model list (non-2xx, offline, redirect, no list in the body)."""

    def __init__(self, result: dict[str, Any]):
        reason = result["detail"] or "its answer has no model list"
        super().__init__(f"the provider did not return a model list (probe status {result['status']}: {reason})")
        self.result = result


class ConnectivityChecker:
    def __init__(self, registry: ProviderRegistry, prober: Prober, concurrency: int):
        self.registry = registry
        self.prober = prober
        self.concurrency = concurrency
        self._bulk_running = False
        self._schedule: asyncio.Task | None = None

    def target_for(self, provider: Provider) -> ProbeTarget:
        try:
            api_key, key_error = self.registry.decrypted_api_key(provider), None
        except UndecryptableKey as exc:
            api_key, key_error = None, str(exc)
        return ProbeTarget(type=provider.type, base_url=provider.base_url, api_key=api_key,
                           models=provider.models, key_error=key_error)

    async def test_one(self, provider_id: int) -> dict[str, Any]:
        """Probe one provider (active or not) and store the result."""
        self.registry.ensure_writable()
        result = await self.prober.probe(self.target_for(self.registry.get(provider_id)))
        await self.registry.record_probe_results({provider_id: result})
        return result

    async def test_unsaved(self, fields: dict[str, Any]) -> dict[str, Any]:
        """Probe a provider described by a validated create body; nothing is stored."""
        fields = with_defaults(fields)
        target = ProbeTarget(type=fields["type"], base_url=fields["base_url"].rstrip("/"),
                             api_key=fields["api_key"], models=fields["models"])
        return await self.prober.probe(target)

    async def test_all(self) -> list[dict[str, Any]]:
        """Probe every active provider concurrently and store all results in one write.
        Raises BulkTestInProgress while another run (manual or scheduled) is going on."""
        if self._bulk_running:
            raise BulkTestInProgress()
        self.registry.ensure_writable()
        self._bulk_running = True
        try:
            active = self.registry.list(ProviderFilter(is_active=True))
            names = {p.id: p.name for p in active}
            results = await self.prober.probe_many({p.id: self.target_for(p) for p in active}, self.concurrency)
            if results:
                await self.registry.record_probe_results(results)
            return [{"id": pid, "name": names[pid], **result} for pid, result in results.items()]
        finally:
            self._bulk_running = False

    async def discover(self, provider_id: int) -> tuple[list[str], list[str]]:
        """The upstream model list and the configured one; raises UpstreamUnusable."""
        provider = self.registry.get(provider_id)
        outcome: ProbeOutcome = await self.prober.exchange(self.target_for(provider))
        if outcome.offered_models is None:
            raise UpstreamUnusable(outcome.result)
        return outcome.offered_models, provider.models

    def start_schedule(self, interval_seconds: float) -> None:
        if interval_seconds > 0 and self._schedule is None:
            self._schedule = asyncio.get_running_loop().create_task(self._run_schedule(interval_seconds))

    async def stop_schedule(self) -> None:
        if self._schedule is not None:
            self._schedule.cancel()
            try:
                await self._schedule
            except asyncio.CancelledError:
                pass
            self._schedule = None

    async def _run_schedule(self, interval_seconds: float) -> None:
        while True:
            await asyncio.sleep(interval_seconds)
            if self.registry.restore_pending:
                log.warning("scheduled check skipped: the database waits for a restore of the backup")
                continue
            try:
                results = await self.test_all()
                log.info("scheduled check: %d providers tested, %d online", len(results),
                         sum(r["status"] == "online" for r in results))
            except BulkTestInProgress:
                log.info("scheduled check skipped: a test of all providers is already running")
            except Exception:
                log.exception("scheduled check failed")
