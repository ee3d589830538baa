"""What the egress check costs a bulk test: two servers of this checkout with 1 000 providers each
against the same fake upstream (50 ms), one with BACKEND_EGRESS=no-metadata (every connection's
address checked) and one with BACKEND_EGRESS=any (no check at all), bulk tests alternating between
them, the order swapped from pair to pair.

    python -m bench.egress_ab [--providers 1000] [--pairs 6]

Target: the median of checked / unchecked wall times within noise (about 1.0).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench.harness import fill_registry, free_port, request, start_registry, start_script, stop, wait_for_http


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--providers", type=int, default=1000)
    parser.add_argument("--pairs", type=int, default=6)
    parser.add_argument("--delay", type=float, default=0.05)
    args = parser.parse_args()
    fake_port = free_port()
    fake = start_script("fake_provider.py", "--port", str(fake_port), "--delay", str(args.delay))
    servers, walls = {}, {"no-metadata": [], "any": []}
    with tempfile.TemporaryDirectory(prefix="bench-egress-") as tmp:
        try:
            for mode in walls:
                data_dir, port = Path(tmp) / mode, free_port()
                fill_registry(data_dir, args.providers, f"http://127.0.0.1:{fake_port}/v1")
                servers[mode] = (start_registry(data_dir, port, {"BACKEND_EGRESS": mode}), port)
            wait_for_http(f"http://127.0.0.1:{fake_port}/v1/models", fake)
            for process, port in servers.values():
                wait_for_http(f"http://127.0.0.1:{port}/ping", process)
                status, body = request("POST", f"http://127.0.0.1:{port}/api/admin/providers/restore")
                assert status == 200 and json.loads(body)["restored"] == args.providers, body
                request("POST", f"http://127.0.0.1:{port}/api/providers/test")  # warm-up: curl loaded
            for pair in range(args.pairs):
                for mode in (("no-metadata", "any") if pair % 2 == 0 else ("any", "no-metadata")):
                    started = time.perf_counter()
                    status, body = request("POST", f"http://127.0.0.1:{servers[mode][1]}/api/providers/test")
                    walls[mode].append(time.perf_counter() - started)
                    results = json.loads(body)["results"]
                    assert status == 200 and all(r["status"] == "online" for r in results), mode
        finally:
            for process, _ in servers.values():
                stop(process)
            stop(fake)
    ratios = [checked / unchecked for checked, unchecked in zip(walls["no-metadata"], walls["any"], strict=True)]
    quartiles = statistics.quantiles(ratios, n=4, method="inclusive")
    print(f"bulk test of {args.providers} providers, {args.pairs} alternating pairs")
    print(f"  checked (no-metadata)  median {statistics.median(walls['no-metadata']):.3f} s")
    print(f"  unchecked (any)        median {statistics.median(walls['any']):.3f} s")
    print(f"  checked / unchecked    median {statistics.median(ratios):.3f} "
          f"(interquartile {quartiles[0]:.3f}-{quartiles[2]:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
