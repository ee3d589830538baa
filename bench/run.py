"""Throughput and latency of the real server against a minimal Tornado baseline measured in the same
run, write cost as the inventory grows, start-up time and memory.

    python -m bench.run            # full run (about 8 minutes)
    python -m bench.run --quick    # smoke run (about 40 s; what CI runs)

Load comes from wrk (`apt-get install wrk`) with Lua scripts, on loopback only, each scenario bounded
by --duration. Figures are reported as ratios to the baseline's GET throughput, because shared
machines drift; absolute numbers are printed for reference.
"""

from __future__ import annotations

import argparse
import http.client
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable

from bench.harness import (cpu_prefix, fill_registry, free_port, request, start_registry, start_script,
                     stop, wait_for_http)

# wrk prints this line from every script's done(): requests, duration (µs), errors, p50 and p99 (µs).
REPORT = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %d %d %d %d\\n", summary.requests, summary.duration,
    e.connect + e.read + e.write + e.status + e.timeout, latency:percentile(50), latency:percentile(99)))
end
"""
CREATE = """
local threads = 0
setup = function(thread)
  thread:set("tid", threads)
  threads = threads + 1
end
local counter = 0
request = function()
  counter = counter + 1
  local body = string.format('{"name":"bench-%d-%d-%d","base_url":"https://bench.example.com/v1",' ..
    '"api_key":"sk-bench-0123456789abcdef","models":["model-a","model-b"]}', tid, os.time(), counter)
  return wrk.format("POST", "/api/providers", {["Content-Type"] = "application/json"}, body)
end
"""
PATCH = """
local counter = 0
request = function()
  counter = counter + 1
  local body = string.format('{"models":["model-%d"]}', counter)
  return wrk.format("PATCH", "/api/providers/" .. (counter % 100 + 1), {["Content-Type"] = "application/json"}, body)
end
"""
GET = ""
# Servers on one core, the load generator on the other, so they do not take turns on the same core.
SERVER_CPU, LOAD_CPU = 0, 1


@dataclass
class LoadResult:
    requests: int
    seconds: float
    errors: int
    p50_ms: float
    p99_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


def median_run(runs: list[LoadResult]) -> LoadResult:
    return sorted(runs, key=lambda r: r.rps)[len(runs) // 2]


def wrk(url: str, script: str, connections: int, duration: float, threads: int, workdir: Path,
        pinned: bool = True) -> LoadResult:
    script_path = workdir / f"wrk-{time.monotonic_ns()}.lua"
    script_path.write_text(script + REPORT)
    output = subprocess.run(
        [*cpu_prefix(LOAD_CPU if pinned else None), "wrk", f"-t{threads}", f"-c{connections}",
         f"-d{max(1, round(duration))}s", "--timeout", "10s", "-s", str(script_path), url],
        capture_output=True, text=True, timeout=duration + 60, check=True).stdout
    line = next(line for line in output.splitlines() if line.startswith("RESULT "))
    requests, micros, errors, p50, p99 = (int(v) for v in line.split()[1:])
    return LoadResult(requests, micros / 1e6, errors, p50 / 1000, p99 / 1000)


class Registry:
    """The real server.py on a temp data directory, restarted and refilled as scenarios need."""

    def __init__(self, workdir: Path, name: str = "registry", cpu: int | None = SERVER_CPU):
        self.data_dir = workdir / name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.cpu = cpu
        self.process: subprocess.Popen | None = None

    def start(self) -> float:
        self.process = start_registry(self.data_dir, self.port, cpu=self.cpu)
        return wait_for_http(self.url + "/ping", self.process)

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)

    def fill(self, count: int) -> None:
        """Replace the inventory with `count` providers (with keys) by restoring a backup file."""
        time.sleep(0.5)  # let writes still in flight from the last load land before the file is replaced
        fill_registry(self.data_dir, count, "https://api.example.com/v1", with_keys=True)
        status, body = request("POST", self.url + "/api/admin/providers/restore")
        assert status == 200 and json.loads(body)["restored"] == count, body

    def probe_once(self) -> None:
        """One connectivity test, of a provider on a loopback port where nothing listens: it loads the
        curl client, which the server only imports on its first probe."""
        status, body = request("POST", self.url + "/api/providers", json.dumps(
            {"name": "probed once", "base_url": f"http://127.0.0.1:{free_port()}/v1"}).encode())
        assert status == 201, body
        status, body = request("POST", f"{self.url}/api/providers/{json.loads(body)['id']}/test")
        assert status == 200 and json.loads(body)["status"] == "offline", body

    def rss_mb(self) -> float:
        """The resident set after a listing and a read (what a user does first)."""
        request("GET", self.url + "/api/providers?limit=100")
        request("GET", self.url + "/api/providers/42")
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")


def create_providers(port: int, count: int, connections: int = 8) -> None:
    """`count` providers created through the API, from `connections` clients at once."""
    def create_share(first: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        for i in range(first, count, connections):
            conn.request("POST", "/api/providers", json.dumps({
                "name": f"created-{i:05d}", "base_url": "https://api.example.com/v1",
                "api_key": f"sk-bench-{i:08d}-abcdefghijklmnop", "models": ["model-a", "model-b"]}),
                {"Content-Type": "application/json"})
            response = conn.getresponse()
            response.read()
            assert response.status == 201, response.status
        conn.close()

    with ThreadPoolExecutor(connections) as pool:
        list(pool.map(create_share, range(connections)))


def alternating(first: Callable[[], LoadResult], second: Callable[[], LoadResult],
                rounds: int) -> list[tuple[LoadResult, LoadResult]]:
    """`rounds` pairs of runs, the order swapped every round: slow spells of a shared machine last
    seconds, so they fall on both sides alike, and the median of the per-pair ratios is the figure
    least moved by them."""
    pairs = []
    for i in range(rounds):
        if i % 2 == 0:
            a = first()
            pairs.append((a, second()))
        else:
            b = second()
            pairs.append((first(), b))
    return pairs


def sequential_write_latency(port: int, count: int, stored: int) -> tuple[float, float]:
    """Median latency (ms) of `count` creates, then of `count` patches, one request at a time."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Content-Type": "application/json"}

    def timed(method: str, path: str, body: dict) -> float:
        started = time.perf_counter()
        conn.request(method, path, json.dumps(body), headers)
        response = conn.getresponse()
        response.read()
        assert response.status in (200, 201), response.status
        return (time.perf_counter() - started) * 1000

    creates = [timed("POST", "/api/providers", {"name": f"grow-{stored}-{i}", "base_url": "https://g.example.com",
                                                "api_key": "sk-grow-0123456789abcdef"}) for i in range(count)]
    patches = [timed("PATCH", f"/api/providers/{i % stored + 1}", {"models": [f"grown-{i}"]}) for i in range(count)]
    conn.close()
    return statistics.median(creates), statistics.median(patches)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short scenarios, inventories up to 1000 (smoke test)")
    parser.add_argument("--duration", type=float, help="seconds per load run (default 2, quick 1)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is needed: apt-get install wrk (Debian/Ubuntu) or brew install wrk", file=sys.stderr)
        return 2
    duration = args.duration or (1.0 if args.quick else 2.0)
    rounds = 1 if args.quick else 6
    scaling_rounds = 2 if args.quick else 10
    sizes = (100, 1000) if args.quick else (100, 1000, 10_000)
    samples = 20 if args.quick else 100
    figures: dict[str, object] = {"duration_s": duration, "wrk_threads": args.threads}

    with tempfile.TemporaryDirectory(prefix="registry-bench-") as tmp:
        workdir = Path(tmp)
        baseline_port, uv_baseline_port = free_port(), free_port()
        baseline = start_script("baseline_app.py", "--port", str(baseline_port), cpu=SERVER_CPU)
        # The same app on uvloop, the event loop server.py serves on: how much of the server's figures
        # is the loop's, and how much is the server's own overhead on the same loop.
        uv_baseline = start_script("baseline_app.py", "--port", str(uv_baseline_port), "--uvloop", cpu=SERVER_CPU)
        registry = Registry(workdir)
        try:
            wait_for_http(f"http://127.0.0.1:{baseline_port}/x", baseline)
            wait_for_http(f"http://127.0.0.1:{uv_baseline_port}/x", uv_baseline)
            registry.start()
            registry.fill(100)

            def load(name: str, url: str, script: str = GET, connections: int = 32) -> LoadResult:
                """The scenario and the baseline GET in alternating pairs: the median run of each, and
                the median of the per-pair ratios."""
                wrk(url, script, connections, 1, args.threads, workdir)  # warm-up

                def scenario() -> LoadResult:
                    result = wrk(url, script, connections, duration, args.threads, workdir)
                    if script is not GET:
                        registry.fill(100)  # writes grow the inventory: start each run from 100
                    return result

                pairs = alternating(partial(wrk, baseline_url, GET, connections, duration, args.threads, workdir),
                                    scenario, rounds)
                baseline_runs.setdefault(connections, []).extend(reference for reference, _ in pairs)
                result = median_run([result for _, result in pairs])
                figures[name] = result.__dict__ | {"rps": result.rps, "ratio": statistics.median(
                    result.rps / reference.rps for reference, result in pairs)}
                return result

            baseline_url = f"http://127.0.0.1:{baseline_port}/api/providers/1"
            uv_baseline_url = f"http://127.0.0.1:{uv_baseline_port}/api/providers/1"
            baseline_runs: dict[int, list[LoadResult]] = {}
            scenarios = [  # (label, figure key, URL, wrk script, connections)
                ("bare Tornado on uvloop (reference)", "baseline on uvloop", uv_baseline_url, GET, 32),
                ("GET /ping", "GET /ping", registry.url + "/ping", GET, 32),
                ("GET /api/providers/{id}", "GET one", registry.url + "/api/providers/42", GET, 32),
                ("GET /api/providers (100)", "GET list 100", registry.url + "/api/providers", GET, 32),
                ("POST /api/providers", "POST create", registry.url, CREATE, 32),
                ("PATCH /api/providers/{id}", "PATCH", registry.url, PATCH, 32),
                ("GET /api/providers/{id}, 256 conns", "GET one, 256 connections",
                 registry.url + "/api/providers/42", GET, 256),
            ]
            rows = [(label, key, load(key, url, script, connections))
                    for label, key, url, script, connections in scenarios]
            wide = rows[-1][2]
            # The 256-connection target compares the server with itself (and the bare baseline the
            # same way, for scale), in more pairs than the other scenarios: it is a small difference.
            def wide_over_narrow(url: str, pinned: bool = True) -> list[float]:
                """Throughput with 256 connections over throughput with 32, per alternating pair."""
                pairs = alternating(partial(wrk, url, GET, 256, duration, args.threads, workdir, pinned),
                                    partial(wrk, url, GET, 32, duration, args.threads, workdir, pinned),
                                    scaling_rounds)
                return [wide_run.rps / narrow_run.rps for wide_run, narrow_run in pairs]

            scaling_runs = {who: wide_over_narrow(url) for who, url in (
                ("registry", registry.url + "/api/providers/42"), ("baseline", baseline_url),
                ("baseline on uvloop", uv_baseline_url))}
            # The same unpinned, as wrk is usually run: server and load generator share both cores.
            unpinned = Registry(workdir, "unpinned", cpu=None)
            unpinned_baseline_port = free_port()
            unpinned_baseline = start_script("baseline_app.py", "--port", str(unpinned_baseline_port))
            try:
                unpinned.start()
                unpinned.fill(100)
                wait_for_http(f"http://127.0.0.1:{unpinned_baseline_port}/x", unpinned_baseline)
                scaling_runs["registry, unpinned"] = wide_over_narrow(unpinned.url + "/api/providers/42", False)
                scaling_runs["baseline, unpinned"] = wide_over_narrow(
                    f"http://127.0.0.1:{unpinned_baseline_port}/api/providers/1", False)
            finally:
                unpinned.stop()
                stop(unpinned_baseline)
            connection_scaling_ratio = {who: statistics.median(r) for who, r in scaling_runs.items()}
            figures["256 vs 32 connections"] = connection_scaling_ratio
            figures["256 vs 32 connections, per round"] = scaling_runs
            base, base_wide = median_run(baseline_runs[32]), median_run(baseline_runs[256])
            figures["baseline GET"] = base.__dict__ | {"rps": base.rps}
            figures["baseline GET, 256 connections"] = base_wide.__dict__ | {"rps": base_wide.rps}

            growth = []
            for size in sizes:
                registry.fill(size)
                create_ms, patch_ms = sequential_write_latency(registry.port, samples, size)
                backup_kb = (registry.data_dir / "config_backup.json").stat().st_size / 1024
                growth.append((size, create_ms, patch_ms, backup_kb))
            figures["write growth"] = [dict(zip(("stored", "create_ms", "patch_ms", "backup_kb"), g, strict=True))
                                       for g in growth]

            # Memory with the largest inventory, reached the ways a user would: a restart (and then a first
            # probe, which loads the curl client), and in fresh processes a restore through the API and
            # creating them one by one through the API.
            # (Also, for reference, the server that just took all the load above, after its restore.)
            largest = sizes[-1]
            rss = {}
            registry.fill(largest)
            rss_after_load = registry.rss_mb()
            startups = []
            for _ in range(3):
                registry.stop()
                startups.append(registry.start())
            rss["after a restart"] = registry.rss_mb()
            registry.probe_once()
            rss["after a restart and a probe"] = registry.rss_mb()
            registry.stop()
            for name in ("restored", "created"):
                fresh = Registry(workdir, name)
                try:
                    fresh.start()
                    if name == "restored":
                        fresh.fill(largest)
                        rss["after an API restore"] = fresh.rss_mb()
                    else:
                        create_providers(fresh.port, largest)
                        rss[f"after {largest} creates"] = fresh.rss_mb()
                finally:
                    fresh.stop()
            figures["rss_mb, after the load scenarios and an API restore"] = rss_after_load
            figures.update({"startup_s": statistics.median(startups), "rss_mb": rss, "largest": largest})
        finally:
            registry.stop()
            stop(baseline)
            stop(uv_baseline)

    print(f"{'scenario':36} {'req/s':>8} {'x base':>7} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7}")
    print(f"{'baseline GET (fixed 320-byte JSON)':36} {base.rps:8.0f} {1:7.3f} {base.p50_ms:8.2f} {base.p99_ms:8.2f} "
          f"{base.errors:7d}")
    for label, key, r in rows:
        print(f"{label:36} {r.rps:8.0f} {figures[key]['ratio']:7.3f} {r.p50_ms:8.2f} {r.p99_ms:8.2f} {r.errors:7d}")
    print(f"(median of {rounds} runs of {round(duration)} s; each ratio is the median over {rounds} pairs of a "
          f"scenario run and a baseline run with as many connections, in alternating order; servers on CPU "
          f"{SERVER_CPU}, wrk on CPU {LOAD_CPU})")
    same_loop = figures["GET one"]["ratio"] / figures["baseline on uvloop"]["ratio"]
    figures["GET one vs bare Tornado on uvloop"] = same_loop
    print(f"GET one against bare Tornado on the same event loop (uvloop): {same_loop:.3f}")
    for who, label in (("registry", "registry"), ("baseline", "bare Tornado baseline"),
                       ("baseline on uvloop", "bare Tornado on uvloop"), ("registry, unpinned", "registry, unpinned"),
                       ("baseline, unpinned", "bare Tornado baseline, unpinned")):
        ratios = scaling_runs[who]
        print(f"256 vs 32 connections, {label}: median {connection_scaling_ratio[who]:.3f} of {len(ratios)} "
              f"paired rounds (range {min(ratios):.3f}-{max(ratios):.3f})")
    print(f"\n{'providers stored':>16} {'create p50 ms':>14} {'patch p50 ms':>13} {'backup KiB':>11}")
    for size, create_ms, patch_ms, backup_kb in growth:
        print(f"{size:16d} {create_ms:14.2f} {patch_ms:13.2f} {backup_kb:11.0f}")
    print(f"\nstart-up to first /ping with {largest} providers: {figures['startup_s']:.3f} s (median of 3)")
    print(f"RSS with {largest} providers: " + ", ".join(f"{mb:.1f} MB {how}" for how, mb in rss.items()))
    print(f"  (the server that took the load scenarios, after restoring {largest}: {rss_after_load:.1f} MB)")

    growth_1000 = next((g for g in growth if g[0] == 1000), None)
    checks = [
        ("GET one >= 0.8 x baseline", figures["GET one"]["ratio"] >= 0.8),
        ("list of 100 >= 0.3 x baseline", figures["GET list 100"]["ratio"] >= 0.3),
        ("create >= 0.06 x baseline", figures["POST create"]["ratio"] >= 0.06),
        ("patch >= 0.06 x baseline", figures["PATCH"]["ratio"] >= 0.06),
        ("create and patch median <= 10 ms with 1000 stored",
         growth_1000 is not None and growth_1000[1] <= 10 and growth_1000[2] <= 10),
        ("256 connections: 0 errors, >= 0.9 x 32-connection throughput (pinned)",
         wide.errors == 0 and connection_scaling_ratio["registry"] >= 0.9),
        ("the same, unpinned", wide.errors == 0 and connection_scaling_ratio["registry, unpinned"] >= 0.9),
        (f"start-up with {largest} providers <= 0.5 s", figures["startup_s"] <= 0.5),
        (f"RSS with {largest} providers <= 60 MB (every way measured)", max(rss.values()) <= 60),
    ]
    print()
    for name, ok in checks:
        print(f"{'met   ' if ok else 'MISSED'} {name}")
    figures["targets"] = {name: ok for name, ok in checks}
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
