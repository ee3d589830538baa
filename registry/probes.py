"""Probes of providers: one (stored or not), all of them (also on a schedule), model discovery.

What to request comes from the provider-type table; `outbound/` sends it; the answer is
classified here (online / unauthorized / error / offline) and stored by the inventory.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote, urljoin, urlsplit, urlunsplit

from outbound.answers import Answer, Certificate, RequestNotSent, TransportFailure
from outbound.client import OutboundClient
from outbound.timings import NO_TIMINGS
from registry.access import SYSTEM, Actor
from registry.errors import Conflict, NotFound, UpstreamUnusable
from registry.fields import MAX_MODEL_LENGTH, MAX_MODELS, with_defaults
from registry.health import HEALTH_STATES
from registry.inventory import Inventory
from registry.keyring import UndecryptableKey
from registry.provider_types import PROVIDER_TYPES, wrong_type_hint
from registry.redaction import holds_fragment, upstream_text
from registry.timestamps import utc_timestamp
from store.provider_rows import Provider, ProviderFilter

log = logging.getLogger("provider_registry.probes")

# What curl can send as a header value: printable ASCII and tabs (no CR, LF or other control characters).
_HEADER_VALUE = re.compile(r"[\t -~]*")
# Characters left as they are when a URL is made ASCII: everything a URL path may hold as it is.
_URL_SAFE = "/:@!$&'()*+,;=~%-._"


RESOLVE_WINDOW = 20  # the recent results a candidate's p50 is taken over


class BulkProbeInProgress(Conflict):
    def __init__(self) -> None:
        super().__init__("A test of all providers is already running; wait for it to finish.")


@dataclass(frozen=True)
class ProbeTarget:
    """What a probe needs to know about a provider."""
    type: str
    base_url: str
    api_key: str | None = None
    models: list[str] = field(default_factory=list)
    # Set instead of api_key when the stored key cannot be decrypted: nothing is sent then.
    key_error: str | None = None


@dataclass(frozen=True)
class ProbeOutcome:
    result: dict[str, Any]
    offered_models: list[str] | None  # the upstream list, when the answer had one


def probe_request(target: ProbeTarget) -> tuple[str, dict[str, str]]:
    """The URL and headers of the probe of `target`, from its type's entry in the table."""
    provider_type = PROVIDER_TYPES[target.type]
    headers = {"Accept": "application/json", **provider_type.auth_headers(target.api_key)}
    parts = urlsplit(target.base_url)
    query = "&".join(q for q in (parts.query, provider_type.probe_query) if q)
    url = urlunsplit((parts.scheme, _ascii_netloc(parts),
                      quote(parts.path.rstrip("/") + provider_type.probe_path, safe=_URL_SAFE),
                      quote(query, safe=_URL_SAFE + "?"), ""))
    return url, headers


def _ascii_netloc(parts) -> str:
    """The host in IDNA form (curl sends ASCII), with its port; IPv6 literals keep their brackets."""
    host = parts.hostname or ""
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            raise ValueError("the base URL's host is not a valid internationalized domain name") from None
    if ":" in host:
        host = f"[{host}]"
    return host if parts.port is None else f"{host}:{parts.port}"


def classify(target: ProbeTarget, answer: Answer, url: str, checked_at: str) -> ProbeOutcome:
    """The result of a probe that got an HTTP answer."""
    latency = answer.timings["total_ms"] or answer.elapsed_ms
    code = answer.code
    models = None
    if 200 <= code < 300:
        status, detail = "online", None
        models = None if answer.body is None else PROVIDER_TYPES[target.type].offered_models(answer.body)
        if models is not None:  # an id quoting the key is not a model
            models = [m for m in models if not holds_fragment(m, target.api_key)]
        elif answer.body is not None:
            detail = wrong_type_hint(target.type, answer.body)
    elif code in (401, 403):
        status, detail = "unauthorized", _status_detail(code, answer)
    elif 300 <= code < 400:
        status, detail = "error", _redirect_detail(code, url, answer.location)
    else:
        status, detail = "error", _status_detail(code, answer)
    if detail is not None:
        detail = upstream_text(detail, target.api_key)
    missing = None if models is None else [m for m in target.models if m not in set(models)]
    return ProbeOutcome(_result(status, code, latency, detail, missing, checked_at, answer.timings,
                                tls_summary(answer.certificate)), models)


def tls_summary(certificate: Certificate | None, now: datetime | None = None) -> dict[str, Any] | None:
    """A result's `tls`: the certificate's expiry, subject and issuer, and whole days left (negative
    once expired)."""
    if certificate is None:
        return None
    left = certificate.not_after - (now or datetime.now(timezone.utc))
    return {"not_after": utc_timestamp(certificate.not_after.timestamp()), "subject": certificate.subject,
            "issuer": certificate.issuer, "days_left": math.floor(left.total_seconds() / 86400)}


def _status_detail(code: int, answer: Answer) -> str:
    """"HTTP 400 Bad Request", with the upstream's own message when its JSON body has one."""
    detail = f"HTTP {code} {answer.reason}".strip()
    message = upstream_message(answer.body)
    return f"{detail}: {message}" if message else detail


def upstream_message(body: bytes | None) -> str | None:
    """The error message of a JSON error body: `error.message`, `error` (a string), `message` or
    `detail`, as the OpenAI-compatible servers, Anthropic, Gemini and FastAPI put it."""
    if not body:
        return None
    try:
        document = json.loads(body)
    except (ValueError, UnicodeError, RecursionError):
        return None
    if not isinstance(document, dict):
        return None
    error = document.get("error")
    for candidate in ((error.get("message") if isinstance(error, dict) else error), document.get("message"),
                      document.get("detail")):
        if isinstance(candidate, str) and candidate.strip():
            return candidate.strip()
    return None


def _redirect_detail(code: int, url: str, location: str | None) -> str:
    if not location:
        return f"HTTP {code} redirect without a Location (not followed)"
    target = urlsplit(urljoin(url, location))
    where = target.hostname or "an invalid location"
    if target.port:
        where += f":{target.port}"
    return f"HTTP {code} redirect to {where} (not followed)"


def _not_sent(detail: str, checked_at: str) -> ProbeOutcome:
    """An `error` result for a probe that could not be sent at all: no status, no timings."""
    return ProbeOutcome(_result("error", None, 0.0, detail, None, checked_at, dict(NO_TIMINGS)), None)


def _result(status: str, status_code: int | None, latency_ms: float, detail: str | None,
            missing_models: list[str] | None, checked_at: str, timings: dict,
            tls: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"status": status, "status_code": status_code, "latency_ms": round(latency_ms, 2), "detail": detail,
            "missing_models": missing_models, "checked_at": checked_at, "timings": timings, "tls": tls}


class ProbeService:
    """Probes stored and unsaved providers; results of stored ones go to the inventory."""

    def __init__(self, inventory: Inventory, client: OutboundClient, concurrency: int):
        self.inventory = inventory
        self.client = client
        self.concurrency = concurrency
        self._bulk_running = False
        self._schedule: asyncio.Task | None = None
        # Told (provider type, result) after every probe, stored or not: metrics.
        self.observe_probe: Callable[[str, dict[str, Any]], None] | None = None

    def target_for(self, provider: Provider) -> ProbeTarget:
        try:
            api_key, key_error = self.inventory.decrypted_api_key(provider), None
        except UndecryptableKey as exc:
            api_key, key_error = None, str(exc)
        return ProbeTarget(type=provider.type, base_url=provider.base_url, api_key=api_key,
                           models=provider.models, key_error=key_error)

    async def probe(self, target: ProbeTarget) -> ProbeOutcome:
        """Send the probe and classify the answer; never raises for anything the network does."""
        outcome = await self._probe(target)
        if self.observe_probe is not None:
            self.observe_probe(target.type, outcome.result)
        return outcome

    async def _probe(self, target: ProbeTarget) -> ProbeOutcome:
        checked_at = utc_timestamp()
        if target.key_error:
            return _not_sent(target.key_error, checked_at)
        if target.type not in PROVIDER_TYPES:  # stored by a release that knew a type this one does not
            return _not_sent(f"the provider type {target.type!r} is not known to this release", checked_at)
        try:
            url, headers = probe_request(target)
        except ValueError as exc:
            return _not_sent(str(exc), checked_at)
        if not all(_HEADER_VALUE.fullmatch(value) for value in headers.values()):
            # Only a key stored before keys were limited to printable ASCII can get here.
            return _not_sent("the stored API key holds characters that cannot be sent in an HTTP header "
                             "(such as a line break); set the key again", checked_at)
        try:
            answer = await self.client.get(url, headers)
        except RequestNotSent as exc:
            return _not_sent(str(exc), checked_at)
        except TransportFailure as failure:
            latency = failure.timings["total_ms"] or failure.elapsed_ms
            return ProbeOutcome(_result("offline", None, latency, failure.detail, None, checked_at,
                                        failure.timings), None)
        return classify(target, answer, url, checked_at)

    async def probe_one(self, provider_id: int) -> dict[str, Any]:
        """Probe one stored provider (active or not) and store the result."""
        self.inventory.ensure_writable()
        result = (await self.probe(self.target_for(self.inventory.get(provider_id)))).result
        await self.inventory.record_probe_results({provider_id: result})
        return result

    async def probe_unsaved(self, fields: dict[str, Any]) -> dict[str, Any]:
        """Probe a provider described by a validated create body; nothing is stored."""
        fields = with_defaults(fields)
        target = ProbeTarget(type=fields["type"], base_url=fields["base_url"], api_key=fields["api_key"],
                             models=fields["models"])
        return (await self.probe(target)).result

    async def probe_all(self) -> list[dict[str, Any]]:
        """Probe every active provider, at most `concurrency` at once, and store all results in one
        write. Raises BulkProbeInProgress while another run (manual or scheduled) is going on."""
        if self._bulk_running:
            raise BulkProbeInProgress()
        self.inventory.ensure_writable()
        self._bulk_running = True
        try:
            active = self.inventory.list(ProviderFilter(is_active=True))
            gate = asyncio.Semaphore(self.concurrency)

            async def one(provider: Provider) -> tuple[Provider, dict[str, Any]]:
                async with gate:
                    return provider, (await self.probe(self.target_for(provider))).result

            results = dict((p.id, (p, r)) for p, r in await asyncio.gather(*(one(p) for p in active)))
            if results:
                await self.inventory.record_probe_results({pid: r for pid, (_, r) in results.items()})
            return [{"id": pid, "name": p.name, **r} for pid, (p, r) in results.items()]
        finally:
            self._bulk_running = False

    async def discover(self, provider_id: int) -> dict[str, list[str]]:
        """The upstream model list beside the configured one; raises UpstreamUnusable. The probe
        is recorded (history, `last_test`, health) like a test."""
        self.inventory.ensure_writable()
        upstream, configured, outcome = await self._upstream_models(provider_id)
        await self.inventory.record_probe_results({provider_id: outcome.result})
        return {"models": upstream, "missing": [m for m in configured if m not in set(upstream)],
                "new": [m for m in upstream if m not in set(configured)]}

    async def sync_models(self, provider_id: int, actor: Actor = SYSTEM) -> None:
        """Set the provider's models to the upstream list (ids a provider cannot hold, empty or
        longer than 200 characters, are left out); raises UpstreamUnusable, having changed nothing
        but the record of its probe. The probe is recorded as of the synced list (nothing missing)."""
        self.inventory.ensure_writable()  # before the probe, not after it
        upstream, _, outcome = await self._upstream_models(provider_id)
        storable = [m for m in upstream if 1 <= len(m) <= MAX_MODEL_LENGTH]
        if len(storable) > MAX_MODELS:
            await self.inventory.record_probe_results({provider_id: outcome.result})
            raise UpstreamUnusable(f"The provider lists {len(storable)} models, more than the {MAX_MODELS} a "
                                   "provider can hold; nothing was changed.")
        await self.inventory.record_probe_results({provider_id: {**outcome.result, "missing_models": []}})
        await self.inventory.update(provider_id, {"models": storable}, actor, action="provider.sync_models")

    async def _upstream_models(self, provider_id: int) -> tuple[list[str], list[str], ProbeOutcome]:
        """Probe the provider: its model list, the configured one, and the outcome to record.
        Without a usable list the probe is recorded and UpstreamUnusable raised."""
        provider = self.inventory.get(provider_id)
        outcome = await self.probe(self.target_for(provider))
        if outcome.offered_models is None:
            await self.inventory.record_probe_results({provider_id: outcome.result})
            reason = outcome.result["detail"] or "its answer has no model list"
            raise UpstreamUnusable(f"The provider did not return a model list (probe status "
                                   f"{outcome.result['status']}: {reason}).")
        return outcome.offered_models, provider.models, outcome

    def resolve(self, model: str, provider_type: str | None, scope: frozenset[int] | None) -> dict[str, Any]:
        """The active providers (within `scope`) whose models hold `model`, best first: health up,
        then unknown, then down; then lower p50 of their recent online results (none last); then
        id. NotFound when there is none."""
        candidates = []
        for provider in self.inventory.list(ProviderFilter(is_active=True, type=provider_type, ids=scope)):
            if model not in provider.models:
                continue
            online = sorted(r["latency_ms"] for r in self.inventory.history(provider.id, RESOLVE_WINDOW)
                            if r["status"] == "online")
            candidates.append({"id": provider.id, "name": provider.name, "type": provider.type,
                               "base_url": provider.base_url, "health": provider.health_state,
                               "p50_ms": _percentile(online, 50)})
        if not candidates:
            raise NotFound(f"No active provider offers the model {model[:200]!r}.")
        rank = {state: position for position, state in enumerate(HEALTH_STATES)}
        candidates.sort(key=lambda c: (rank[c["health"]], c["p50_ms"] is None, c["p50_ms"] or 0.0, c["id"]))
        return {"model": model, "candidates": candidates}

    def history(self, provider_id: int, limit: int) -> dict[str, Any]:
        """The provider's latest results (newest first) and their summary."""
        results = self.inventory.history(provider_id, limit)
        return {"results": results, "summary": history_summary(results)}

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
            if self.inventory.restore_pending:
                log.warning("scheduled probe skipped: the database waits for a restore of the backup")
                continue
            try:
                results = await self.probe_all()
                log.info("scheduled probe: %d providers tested, %d online", len(results),
                         sum(r["status"] == "online" for r in results))
            except BulkProbeInProgress:
                log.info("scheduled probe skipped: a test of all providers is already running")
            except Exception:
                log.exception("scheduled probe failed")


def history_summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    """count and online_pct (0-100) over the given results; latency p50/p95 over their online ones
    (a refused connection answered in 0.4 ms is not a latency)."""
    latencies = sorted(r["latency_ms"] for r in results if r["status"] == "online")
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
