"""What metrics cost the fastest request: two servers of this checkout with 100 providers each, one
with BACKEND_METRICS=on (every request counted and timed) and one with BACKEND_METRICS=off, short
wrk runs of `GET /api/providers/{id}` alternating between them, the order swapped from pair to pair.

    python -m bench.metrics_ab [--pairs 20] [--seconds 2] [--connections 32]

Both servers run on CPU 0 (only one is loaded at a time), wrk on CPU 1, as in bench.run. The on
server is scraped between runs, as Prometheus would. Target: the median of the pairs' on / off
throughput ratios ≥ 0.95. The servers' CPU time per request is printed too: on a shared machine it
moves less than throughput does.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.harness import fill_registry, free_port, request, start_registry, stop, wait_for_http
from bench.run import GET, SERVER_CPU, LoadResult, alternating, wrk

TARGET = 0.95


def cpu_seconds(process: subprocess.Popen) -> float:
    """User and system CPU time of the server so far (Linux /proc)."""
    fields = Path(f"/proc/{process.pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_server(data_dir: Path, metrics: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = start_registry(data_dir, port, {"BACKEND_METRICS": metrics}, cpu=SERVER_CPU)
    base = f"http://127.0.0.1:{port}"
    wait_for_http(base + "/ping", process)
    fill_registry(data_dir, 100, "https://api.example.com/v1", with_keys=True)
    status, body = request("POST", base + "/api/admin/providers/restore")
    assert status == 200 and json.loads(body)["restored"] == 100, body
    return process, base


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=2)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-metrics-") as tmp:
        workdir, servers = Path(tmp), {}
        try:
            for metrics in ("on", "off"):
                servers[metrics] = start_server(workdir / metrics, metrics)
            on_base, off_base = servers["on"][1], servers["off"][1]
            assert request("GET", on_base + "/metrics")[0] == 200 and request("GET", off_base + "/metrics")[0] == 404
            cpu_per_request: dict[str, list[float]] = {"on": [], "off": []}

            def run(metrics: str) -> LoadResult:
                process, base = servers[metrics]
                cpu_before = cpu_seconds(process)
                result = wrk(base + "/api/providers/42", GET, args.connections, args.seconds, args.threads, workdir)
                cpu_per_request[metrics].append((cpu_seconds(process) - cpu_before) / result.requests)
                assert result.errors == 0, f"{result.errors} errors with metrics {metrics}"
                if metrics == "on":
                    status, body = request("GET", on_base + "/metrics")
                    assert status == 200 and b'route="/api/providers/{provider_id}"' in body
                return result

            for base in (on_base, off_base):
                wrk(base + "/api/providers/42", GET, args.connections, 1, args.threads, workdir)  # warm-up
            pairs = alternating(lambda: run("on"), lambda: run("off"), args.pairs)
        finally:
            for process, _ in servers.values():
                stop(process)
    ratios = [on.rps / off.rps for on, off in pairs]
    low, _, high = statistics.quantiles(ratios, n=4, method="inclusive")
    median = statistics.median(ratios)
    print(f"GET /api/providers/{{id}}, {args.connections} connections, {args.pairs} alternating pairs "
          f"of {args.seconds:g} s")
    cpu = {metrics: statistics.median(values) * 1e6 for metrics, values in cpu_per_request.items()}
    print(f"  metrics on   median {statistics.median(on.rps for on, _ in pairs):8.0f} req/s, "
          f"{cpu['on']:6.1f} µs of server CPU per request")
    print(f"  metrics off  median {statistics.median(off.rps for _, off in pairs):8.0f} req/s, "
          f"{cpu['off']:6.1f} µs of server CPU per request")
    print(f"  CPU per request, off / on: {cpu['off'] / cpu['on']:.3f}")
    print(f"  on / off     median {median:.3f} (interquartile {low:.3f}-{high:.3f}); target >= {TARGET} "
          f"{'met' if median >= TARGET else 'NOT met'}")
    return 0 if median >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
