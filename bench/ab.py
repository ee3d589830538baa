"""A/B of two checkouts of the server: which one serves `GET /api/providers/{id}` faster, at each
connection count. For effects of a few % that the noise of a full bench run hides: many short runs,
the two servers alternating which goes first.

    python -m bench.ab OLD_CHECKOUT NEW_CHECKOUT [--pairs 30] [--seconds 1] [--connections 32 256]

Both servers run on CPU 0 (only one is loaded at a time), wrk on CPU 1, each with 100 providers.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.harness import fill_registry, free_port, request, start_registry, stop, wait_for_http
from bench.run import GET, SERVER_CPU, alternating, wrk


def start_checkout(checkout: Path, data_dir: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = start_registry(data_dir, port, cpu=SERVER_CPU, checkout=checkout)
    base = f"http://127.0.0.1:{port}"
    wait_for_http(base + "/ping", process)
    fill_registry(data_dir, 100, "https://api.example.com/v1", with_keys=True)
    status, body = request("POST", base + "/api/admin/providers/restore")
    assert status == 200, body
    return process, base + "/api/providers/42"


def summary(ratios: list[float]) -> str:
    low, _, high = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else (ratios[0],) * 3
    return f"median {statistics.median(ratios):.3f} (interquartile {low:.3f}-{high:.3f}, {len(ratios)} pairs)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("old", type=Path)
    parser.add_argument("new", type=Path)
    parser.add_argument("--pairs", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=1)
    parser.add_argument("--connections", type=int, nargs="+", default=[32, 256])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="registry-ab-") as tmp:
        servers = []
        try:
            for name, checkout in (("old", args.old), ("new", args.new)):
                servers.append(start_checkout(checkout.resolve(), Path(tmp) / name))
            (_, old_url), (_, new_url) = servers
            workdir = Path(tmp)
            for connections in args.connections:
                for url in (old_url, new_url):
                    wrk(url, GET, connections, 1, 2, workdir)  # warm-up
                pairs = alternating(lambda c=connections: wrk(old_url, GET, c, args.seconds, 2, workdir),
                                    lambda c=connections: wrk(new_url, GET, c, args.seconds, 2, workdir), args.pairs)
                print(f"{connections} connections, new/old req/s: "
                      f"{summary([n.rps / o.rps for o, n in pairs])}", flush=True)
        finally:
            for process, _ in servers:
                stop(process)
    return 0


if __name__ == "__main__":
    sys.exit(main())
