"""Bodies built to make validation slow, against the real server: each must be a quick 4xx while
/ping keeps answering.

    python -m bench.hostile_bodies [--rounds 5]

Per body: the median answer time, the same bytes made invalid JSON at the very end (read and parsed,
never validated: the baseline, same run), their ratio, and the slowest /ping meanwhile.
Targets: 12 000 mixed integers and strings in `models` answered in < 0.2 s with /ping < 50 ms
meanwhile. The 1 MiB bodies have no target of their own; their ratio to the parse-only baseline
shows that validation costs about what reading and parsing the body does (linear), not more.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.bulk_probe import ping_until
from bench.harness import free_port, request, start_registry, stop, wait_for_http

BASE = {"name": "hostile", "base_url": "https://api.example.com/v1"}
MIB = 1024 * 1024


def bodies() -> dict[str, bytes]:
    def encoded(extra: dict) -> bytes:
        return json.dumps({**BASE, **extra}).encode()

    def fit(make, size: int = MIB - 1024) -> bytes:
        """The largest body `make(n)` gives under `size` bytes (n found by bisection)."""
        low, high = 1, 1
        while len(make(high)) < size:
            low, high = high, high * 2
        while low < high - 1:
            middle = (low + high) // 2
            low, high = (middle, high) if len(make(middle)) < size else (low, middle)
        return make(low)

    return {
        "12 000 mixed models (82 KB)": encoded({"models": [i if i % 2 else str(i) for i in range(12000)]}),
        "mixed models, 1 MiB": fit(lambda n: encoded({"models": [i if i % 2 else str(i) for i in range(n)]})),
        "distinct strings in models, 1 MiB": fit(lambda n: encoded({"models": [f"m{i}" for i in range(n)]})),
        "unknown fields, 1 MiB": fit(lambda n: encoded({f"f{i}": 0 for i in range(n)})),
        "nested arrays in models, 1 MiB": fit(lambda n: encoded({"models": [[[[[[i]]]]] for i in range(n)]})),
        "a 1 MiB name": fit(lambda n: encoded({"name": "a" * n})),
        "a 1 MiB base_url": fit(lambda n: encoded({"base_url": "https://x.example.com/" + "a" * n})),
    }


def timed_post(url: str, body: bytes) -> tuple[int, float]:
    started = time.perf_counter()
    status, _ = request("POST", url, body)
    return status, time.perf_counter() - started


def measure(base: str, port: int, body: bytes, rounds: int) -> dict:
    hostile, baseline, pings = [], [], []
    done = threading.Event()
    pinger = threading.Thread(target=ping_until, args=(port, done, pings, 0.002))
    pinger.start()
    try:
        for _ in range(rounds):
            status, seconds = timed_post(base + "/api/providers", body)
            assert status == 422, status
            hostile.append(seconds)
            status, seconds = timed_post(base + "/api/providers", body[:-1] + b"!")
            assert status == 400, status
            baseline.append(seconds)
    finally:
        done.set()
        pinger.join(10)
    return {"bytes": len(body), "median_s": statistics.median(hostile), "baseline_s": statistics.median(baseline),
            "ratio": statistics.median(hostile) / statistics.median(baseline), "ping_max_ms": max(pings)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="hostile-bodies-") as tmp:
        server = start_registry(Path(tmp), port)
        try:
            base = f"http://127.0.0.1:{port}"
            wait_for_http(base + "/ping", server)
            results = {name: measure(base, port, body, args.rounds) for name, body in bodies().items()}
        finally:
            stop(server)
    print(f"{'body':38} {'bytes':>9} {'answer':>9} {'parse only':>11} {'ratio':>6} {'/ping max':>10}")
    for name, r in results.items():
        print(f"{name:38} {r['bytes']:>9} {r['median_s'] * 1000:>7.1f}ms {r['baseline_s'] * 1000:>9.1f}ms "
              f"{r['ratio']:>6.2f} {r['ping_max_ms']:>8.1f}ms")
    mixed = results["12 000 mixed models (82 KB)"]
    targets = [("12 000 mixed models answered in < 0.2 s", mixed["median_s"] < 0.2, f"{mixed['median_s']:.3f} s"),
               ("/ping meanwhile < 50 ms", mixed["ping_max_ms"] < 50, f"{mixed['ping_max_ms']:.1f} ms")]
    for label, met, figure in targets:
        print(f"{label}: {figure} -> {'met' if met else 'MISSED'}")
    return 0 if all(met for _, met, _ in targets) else 1


if __name__ == "__main__":
    sys.exit(main())
