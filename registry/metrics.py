"""Prometheus metrics: what the core counts as it works (probes, backup writes, webhook deliveries),
each provider's state read from the database when scraped, and the process.

They live on a registry of their own, never prometheus_client's global one (each Application, as
each test builds, has its own). When BACKEND_METRICS is on, server.py sets the observers below as
`ProbeService.observe_probe`, `Inventory.observe_backup_write` and `WebhookDelivery.observe_delivery`;
the HTTP layer adds its request families to `registry` (handlers/metrics.py).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from prometheus_client import (CollectorRegistry, Counter, Gauge, Histogram, PlatformCollector, ProcessCollector,
                               generate_latest)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector

from registry.inventory import Inventory
from store.provider_rows import NO_FILTER, ProviderFilter

# The text format every Prometheus reads, which is what generate_latest writes; the library's
# CONTENT_TYPE_LATEST names the 1.0.0 format instead.
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4
PROBE_PHASES = ("dns", "connect", "tls", "first_byte", "total")
PROVIDER_LABELS = ("provider_id", "provider", "type")
# A backup write is an fsynced file of a few KiB to a few MiB: milliseconds, not the default's seconds.
BACKUP_WRITE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def unix_seconds(timestamp: str) -> float:
    """An API timestamp ('2026-11-26T10:00:00.123Z') as Unix seconds (Python 3.10 reads no `Z`)."""
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


class Metrics:
    """The registry's metrics and their observers; `render` is one scrape."""

    def __init__(self, inventory: Inventory):
        self._inventory = inventory
        self.registry = CollectorRegistry()
        # No GCCollector: it hooks every garbage collection (gc.callbacks) for figures nobody here reads.
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self._probe_duration = Histogram(
            "registry_probe_duration_seconds", "Probes by provider type and result status, by how long they took.",
            ("type", "status"), registry=self.registry)
        self._backup_writes = Counter(
            "registry_backup_writes", "Writes of the backup file, by outcome (success or failure).", ("outcome",),
            registry=self.registry)
        self._backup_last_success = Gauge(
            "registry_backup_last_success_timestamp_seconds",
            "When the backup file was last written whole (its modification time until this process writes it).",
            registry=self.registry)
        self._backup_write_duration = Histogram(
            "registry_backup_write_duration_seconds", "Writes of the backup file (fsynced), by how long they took.",
            registry=self.registry, buckets=BACKUP_WRITE_BUCKETS)
        self._deliveries = Counter(
            "registry_webhook_deliveries", "Webhook delivery attempts, by outcome (delivered, retry or failed).",
            ("outcome",), registry=self.registry)
        # Every outcome is a series from the start, so rate() and alerts see a zero, not nothing.
        for outcome in ("success", "failure"):
            self._backup_writes.labels(outcome)
        for outcome in ("delivered", "retry", "failed"):
            self._deliveries.labels(outcome)
        try:
            # The file is only ever replaced whole (backup_file.write_atomically): its mtime is the last success.
            self._backup_last_success.set(os.stat(inventory.backup_path).st_mtime)
        except OSError:
            pass  # no backup written yet: 0

    # -- observers (set on the services by server.py) ---------------------------------------------

    def observe_probe(self, provider_type: str, result: dict[str, Any]) -> None:
        self._probe_duration.labels(provider_type, result["status"]).observe(result["latency_ms"] / 1000)

    def observe_backup_write(self, outcome: str, seconds: float) -> None:
        self._backup_writes.labels(outcome).inc()
        self._backup_write_duration.observe(seconds)
        if outcome == "success":
            self._backup_last_success.set(time.time())

    def observe_delivery(self, outcome: str) -> None:
        self._deliveries.labels(outcome).inc()

    # -- scrapes ----------------------------------------------------------------------------------

    def render(self, providers: frozenset[int] | None = None) -> bytes:
        """The text exposition for a caller who sees `providers` (None: all of them)."""
        return generate_latest(_Scrape(self.registry, ProviderCollector(self._inventory, providers)))


class _Scrape:
    """One scrape: the process-wide registry, and the providers the caller may see (which depends on
    who asks, so that collector is made per scrape rather than registered)."""

    def __init__(self, registry: CollectorRegistry, providers: ProviderCollector):
        self._registry = registry
        self._providers = providers

    def collect(self) -> Iterator[Metric]:
        yield from self._registry.collect()
        yield from self._providers.collect()


class ProviderCollector(Collector):
    """Each provider's health and last probe, read from the database when scraped, so the series say
    exactly what the API says; `providers` limits them to a token's scope (None: all)."""

    def __init__(self, inventory: Inventory, providers: frozenset[int] | None = None):
        self._inventory = inventory
        self._filter = NO_FILTER if providers is None else ProviderFilter(ids=providers)

    def collect(self) -> Iterator[Metric]:
        def family(name: str, documentation: str, *extra_labels: str) -> GaugeMetricFamily:
            return GaugeMetricFamily(name, documentation, labels=(*PROVIDER_LABELS, *extra_labels))

        up = family("registry_provider_up", "1 while the provider's health is up, 0 while down (absent while unknown).")
        success = family("registry_provider_last_probe_success",
                         "1 if the last probe found the provider online, else 0.")
        duration = family("registry_provider_last_probe_duration_seconds",
                          "The last probe's time to each phase (dns, connect, tls, first_byte) and in total.", "phase")
        status_code = family("registry_provider_last_probe_status_code", "The HTTP status of the last probe's answer.")
        checked = family("registry_provider_last_probe_timestamp_seconds", "When the last probe was made.")
        not_after = family("registry_provider_tls_cert_not_after_timestamp_seconds",
                           "When the TLS certificate the last probe received expires.")
        active = {"true": 0, "false": 0}
        for provider in self._inventory.list(self._filter):
            labels = (str(provider.id), provider.name, provider.type)
            active["true" if provider.is_active else "false"] += 1
            if provider.health_state in ("up", "down"):
                up.add_metric(labels, 1 if provider.health_state == "up" else 0)
            test = provider.last_test
            if not test:
                continue
            success.add_metric(labels, 1 if test.get("status") == "online" else 0)
            timings = test.get("timings") or {}
            for phase in PROBE_PHASES:
                if timings.get(f"{phase}_ms") is not None:
                    duration.add_metric((*labels, phase), timings[f"{phase}_ms"] / 1000)
            if test.get("status_code") is not None:
                status_code.add_metric(labels, test["status_code"])
            tls = test.get("tls") or {}
            for gauge, timestamp in ((checked, test.get("checked_at")), (not_after, tls.get("not_after"))):
                if timestamp is None:
                    continue
                try:
                    gauge.add_metric(labels, unix_seconds(timestamp))
                except (TypeError, ValueError, AttributeError):
                    pass  # an unreadable stored value costs one series, not the whole scrape
        counts = GaugeMetricFamily("registry_providers", "Providers, by whether they are active.", labels=("active",))
        for is_active, count in active.items():
            counts.add_metric((is_active,), count)
        yield from (up, success, duration, status_code, checked, not_after, counts)
