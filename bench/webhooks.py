"""Webhook benchmark: bulk tests of N providers whose every result changes their health (so every
bulk test raises N events), with webhooks subscribed, against the same bulk tests without any,
in the same run. The upstream answers after 50 ms; one receiver answers after 50 ms, another
hangs (attempts time out after BACKEND_WEBHOOK_TIMEOUT_SECONDS).

    python -m bench.webhooks [--providers 1000] [--rounds 3] [--concurrency 20] [--delay 0.05]

Targets: every bulk test's wall time <= 1.3 x the ideal ceil(N / concurrency) x delay with the
webhooks subscribed and their deliveries going on; /ping p99 < 50 ms throughout (bulk tests and
deliveries); the hanging receiver does not slow the other receiver's deliveries (its drain time
with the hanging receiver subscribed stays within 1.3 x of its drain time alone).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.bulk_probe import ping_until
from bench.harness import fill_registry, free_port, percentile, request, start_registry, start_script, stop, \
    wait_for_http

DRAIN_TIMEOUT_SECONDS = 300


def scenario(hooks: tuple[str, ...], providers: int, rounds: int, concurrency: int, delay: float) -> dict:
    """Run `rounds` bulk tests (alternately all up and all down) with webhooks at the receiver's
    `hooks` paths; wait until /ok received every event."""
    fake_port, receiver_port, registry_port = free_port(), free_port(), free_port()
    fake = start_script("fake_provider.py", "--port", str(fake_port), "--delay", str(delay))
    receiver = start_script("webhook_receiver.py", "--port", str(receiver_port), "--delay", str(delay))
    upstream, hooks_url = f"http://127.0.0.1:{fake_port}", f"http://127.0.0.1:{receiver_port}"
    with tempfile.TemporaryDirectory(prefix="bench-webhooks-") as tmp:
        data_dir = Path(tmp)
        fill_registry(data_dir, providers, upstream + "/v1")
        server = start_registry(data_dir, registry_port, {"BACKEND_TEST_CONCURRENCY": str(concurrency),
                                                          "BACKEND_DOWN_AFTER": "1"})
        latencies: list[float] = []
        done = threading.Event()
        pinger = threading.Thread(target=ping_until, args=(registry_port, done, latencies))
        try:
            base = f"http://127.0.0.1:{registry_port}"
            wait_for_http(base + "/ping", server)
            wait_for_http(upstream + "/v1/models", fake)
            wait_for_http(hooks_url + "/count", receiver)
            status, body = request("POST", base + "/api/admin/providers/restore")
            assert status == 200 and json.loads(body)["restored"] == providers, body
            for path in hooks:
                status, body = request("POST", base + "/api/webhooks",
                                       json.dumps({"url": hooks_url + path}).encode())
                assert status == 201, body
            pinger.start()
            walls = []
            started = time.perf_counter()
            for round_number in range(rounds):
                request("POST", f"{upstream}/__status/{200 if round_number % 2 == 0 else 503}")
                bulk_started = time.perf_counter()
                status, body = request("POST", base + "/api/providers/test")
                walls.append(time.perf_counter() - bulk_started)
                assert status == 200 and len(json.loads(body)["results"]) == providers, status
            drain = None
            if "/ok" in hooks:
                expected = rounds * providers
                deadline = time.monotonic() + DRAIN_TIMEOUT_SECONDS
                while time.monotonic() < deadline:
                    counts = json.loads(request("GET", hooks_url + "/count")[1])
                    if counts["distinct_ok_ids"] >= expected:
                        drain = time.perf_counter() - started
                        break
                    time.sleep(0.05)
                assert drain is not None, f"only {counts} of {expected} deliveries arrived"
            counts = json.loads(request("GET", hooks_url + "/count")[1])
        finally:
            done.set()
            if pinger.is_alive():
                pinger.join(10)
            stop(server)
            stop(fake)
            stop(receiver)
    ideal = math.ceil(providers / concurrency) * delay
    return {"walls": walls, "ratios": [w / ideal for w in walls], "ideal": ideal, "drain_s": drain,
            "received": counts["received"], "pings": len(latencies), "ping_p50_ms": percentile(latencies, 50),
            "ping_p99_ms": percentile(latencies, 99), "ping_max_ms": max(latencies)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--providers", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--delay", type=float, default=0.05, help="seconds the upstream and the receiver wait")
    args = parser.parse_args()
    runs = {}
    for label, hooks in (("no webhooks", ()), ("one receiver", ("/ok",)), ("+ a hanging one", ("/ok", "/hang"))):
        runs[label] = r = scenario(hooks, args.providers, args.rounds, args.concurrency, args.delay)
        bulks = ", ".join(f"{w:.2f} s ({x:.2f}x)" for w, x in zip(r["walls"], r["ratios"], strict=True))
        print(f"{label:16} bulk tests {bulks}"
              f"; /ping p50 {r['ping_p50_ms']:.1f} ms, p99 {r['ping_p99_ms']:.1f} ms, max {r['ping_max_ms']:.1f} ms"
              f" over {r['pings']}" + (f"; all {args.rounds * args.providers} events delivered "
                                       f"{r['drain_s']:.1f} s after the first bulk test began" if r["drain_s"] else "")
              + (f"; received {r['received']}" if hooks else ""))
    ideal = runs["no webhooks"]["ideal"]
    print(f"ideal bulk test: {ideal:.2f} s (ceil({args.providers}/{args.concurrency}) x {args.delay * 1000:.0f} ms); "
          f"{args.providers} state changes per bulk test")
    worst = max(max(r["ratios"]) for r in runs.values())
    p99 = max(r["ping_p99_ms"] for r in runs.values())
    drain_ratio = runs["+ a hanging one"]["drain_s"] / runs["one receiver"]["drain_s"]
    print(f"worst bulk ratio {worst:.2f} (target <= 1.3); worst /ping p99 {p99:.1f} ms (target < 50); "
          f"drain with a hanging receiver / without {drain_ratio:.2f} (target <= 1.3)")
    ok = worst <= 1.3 and p99 < 50 and drain_ratio <= 1.3
    print("targets " + ("met" if ok else "MISSED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
