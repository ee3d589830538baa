"""Health state: a provider is `unknown` until its first counted result, `down` after `down_after`
consecutive results that are not online, `up` after `up_after` consecutive online ones. The
thresholds (hysteresis) keep one lost probe from paging anybody. A certificate with fewer than
`cert_warn_days` days left is warned about once (not on every probe)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from store.events import HealthRow

HEALTH_STATES = ("up", "unknown", "down")  # also the order resolve ranks candidates in
UNKNOWN = HealthRow("unknown", None, None, 0, 0)


@dataclass(frozen=True)
class HealthPolicy:
    down_after: int = 2
    up_after: int = 1
    cert_warn_days: int = 14

    def after(self, health: HealthRow, result: dict[str, Any]) -> HealthRow:
        """The health once `result` (a probe result) is counted."""
        # HealthRow(...) rather than dataclasses.replace: a bulk test counts a thousand at once.
        if result["status"] == "online":
            online, failing = health.online_streak + 1, 0
            tipped = health.state != "up" and online >= self.up_after
            new_state = "up"
        else:
            online, failing = 0, health.failing_streak + 1
            tipped = health.state != "down" and failing >= self.down_after
            new_state = "down"
        if not tipped:
            return HealthRow(health.state, health.since, health.reason, online, failing, health.warned_certificate)
        return HealthRow(new_state, result["checked_at"], result_reason(result), online, failing,
                         health.warned_certificate)

    def certificate_to_warn_about(self, health: HealthRow, result: dict[str, Any]) -> str | None:
        """The identity of the result's certificate when it is due a warning: fewer than
        cert_warn_days days left, and not the one last warned about. None otherwise."""
        tls = result.get("tls")
        if not tls or tls["days_left"] >= self.cert_warn_days:
            return None
        identity = f"{tls['not_after']} {tls['issuer']} {tls['subject']}"
        return None if identity == health.warned_certificate else identity


def result_reason(result: dict[str, Any]) -> str:
    """What a result says in a word or a sentence: its detail, or else its status."""
    return result.get("detail") or result["status"]
