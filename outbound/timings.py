"""curl's cumulative phase times as the API reports them."""

from __future__ import annotations

from collections.abc import Mapping

PHASES = ("dns_ms", "connect_ms", "tls_ms", "first_byte_ms", "total_ms")
NO_TIMINGS: dict[str, float | None] = dict.fromkeys(PHASES)


def curl_timings(time_info: Mapping[str, float], tls: bool = False) -> dict[str, float | None]:
    """curl's cumulative phase times in ms; a phase the request never reached is None, not 0.

    curl fills some later phases even when an earlier one failed (a refused connection reports a
    "start transfer" time), so a phase counts only when the one before it was reached.
    """
    def ms(name: str) -> float | None:
        value = time_info.get(name) or 0.0
        return round(value * 1000, 3) if value > 0 else None

    connect = ms("connect")
    tls_done = ms("appconnect") if connect is not None and tls else None
    first_byte = ms("starttransfer") if connect is not None and (tls_done is not None or not tls) else None
    dns = ms("namelookup")
    if dns is None and connect is not None:
        dns = 0.0  # an IP literal needs no lookup, but the phase was passed
    return {"dns_ms": dns, "connect_ms": connect, "tls_ms": tls_done, "first_byte_ms": first_byte,
            "total_ms": ms("total")}
