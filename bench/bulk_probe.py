"""Fan-out benchmark: the bulk connectivity test of N providers against a fake upstream that answers
after 50 ms, compared with the ideal ceil(N / concurrency) x 50 ms, and /ping latency during the run.

    python -m bench.bulk_probe [--providers 1000] [--concurrency 20] [--delay 0.05]

Targets: wall time / ideal <= 1.3, and /ping p99 < 50 ms while the bulk test runs.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.harness import (fill_registry, free_port, percentile, request, start_registry, start_script, stop,
                           wait_for_http)


def ping_until(port: int, done: threading.Event, latencies: list[float], interval: float = 0.01) -> None:
    """GET /ping every `interval` seconds on one keep-alive connection until `done`."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    while not done.is_set():
        started = time.perf_counter()
        conn.request("GET", "/ping")
        conn.getresponse().read()
        latencies.append((time.perf_counter() - started) * 1000)
        time.sleep(interval)
    conn.close()


def run(providers: int, concurrency: int, delay: float) -> dict:
    fake_port, registry_port = free_port(), free_port()
    fake = start_script("fake_provider.py", "--port", str(fake_port), "--delay", str(delay))
    with tempfile.TemporaryDirectory(prefix="bulk-probe-") as tmp:
        data_dir = Path(tmp)
        fill_registry(data_dir, providers, f"http://127.0.0.1:{fake_port}/v1")
        server = start_registry(data_dir, registry_port, {"BACKEND_TEST_CONCURRENCY": str(concurrency)})
        try:
            base = f"http://127.0.0.1:{registry_port}"
            wait_for_http(base + "/ping", server)
            wait_for_http(f"http://127.0.0.1:{fake_port}/v1/models", fake)
            status, body = request("POST", base + "/api/admin/providers/restore")
            assert status == 200 and json.loads(body)["restored"] == providers, body

            latencies: list[float] = []
            done = threading.Event()
            pinger = threading.Thread(target=ping_until, args=(registry_port, done, latencies))
            pinger.start()
            started = time.perf_counter()
            status, body = request("POST", base + "/api/providers/test")
            wall = time.perf_counter() - started
            done.set()
            pinger.join(10)
            results = json.loads(body)["results"]
            assert status == 200 and len(results) == providers, status
            online = sum(r["status"] == "online" for r in results)
        finally:
            stop(server)
            stop(fake)
    ideal = math.ceil(providers / concurrency) * delay
    return {"providers": providers, "concurrency": concurrency, "online": online, "wall_s": wall,
            "ideal_s": ideal, "ratio": wall / ideal, "pings": len(latencies),
            "ping_p50_ms": percentile(latencies, 50), "ping_p99_ms": percentile(latencies, 99),
            "ping_max_ms": max(latencies)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--providers", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--delay", type=float, default=0.05, help="seconds the fake upstream waits before answering")
    args = parser.parse_args()
    r = run(args.providers, args.concurrency, args.delay)
    print(f"bulk test of {r['providers']} providers, concurrency {r['concurrency']}, upstream delay "
          f"{args.delay * 1000:.0f} ms: {r['online']} online")
    print(f"  wall time      {r['wall_s']:.3f} s")
    print(f"  ideal          {r['ideal_s']:.3f} s  (ceil(N/concurrency) x delay)")
    print(f"  ratio          {r['ratio']:.3f}  (target <= 1.3)")
    print(f"  /ping during   p50 {r['ping_p50_ms']:.1f} ms, p99 {r['ping_p99_ms']:.1f} ms, "
          f"max {r['ping_max_ms']:.1f} ms "
          f"over {r['pings']} pings (target p99 < 50 ms)")
    ok = r["ratio"] <= 1.3 and r["ping_p99_ms"] < 50
    print("  targets        " + ("met" if ok else "MISSED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
