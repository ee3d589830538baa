"""Health state: a provider is `unknown` until its first counted result, `down` after `down_after`
consecutive results that are not online, `up` after `up_after` consecutive online ones. The
thresholds (hysteresis) keep one lost probe from paging anybody."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from store.events import HealthRow

HEALTH_STATES = ("up", "unknown", "down")  # also the order resolve ranks candidates in
UNKNOWN = HealthRow("unknown", None, None, 0, 0)


@dataclass(frozen=True)
class HealthPolicy:
    down_after: int = 2
    up_after: int = 1

    def after(self, health: HealthRow, result: dict[str, Any]) -> HealthRow:
        """The health once `result` (a probe result) is counted."""
        if result["status"] == "online":
            health = replace(health, online_streak=health.online_streak + 1, failing_streak=0)
            tipped = health.state != "up" and health.online_streak >= self.up_after
            new_state = "up"
        else:
            health = replace(health, online_streak=0, failing_streak=health.failing_streak + 1)
            tipped = health.state != "down" and health.failing_streak >= self.down_after
            new_state = "down"
        if not tipped:
            return health
        return replace(health, state=new_state, since=result["checked_at"], reason=result_reason(result))


def result_reason(result: dict[str, Any]) -> str:
    """What a result says in a word or a sentence: its detail, or else its status."""
    return result.get("detail") or result["status"]
