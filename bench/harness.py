"""What the benchmarks share: free loopback ports, starting and stopping processes, percentiles."""

from __future__ import annotations

import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SECRET = "benchmark-secret"  # the servers' BACKEND_API_KEY_SECRET, and what filled backups are encrypted under


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_http(url: str, process: subprocess.Popen, timeout: float = 30) -> float:
    """Seconds until `url` answers 200; raises if the process dies or time runs out."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args} exited with {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return time.monotonic() - started
        except OSError:
            time.sleep(0.005)
    raise RuntimeError(f"{url} did not answer within {timeout} s")


def start_registry(data_dir: Path, port: int, extra_env: dict[str, str] | None = None,
                   cpu: int | None = None, checkout: Path = ROOT) -> subprocess.Popen:
    """The real server.py (of this checkout, or of another one) on loopback with its data in `data_dir`."""
    data_dir.mkdir(parents=True, exist_ok=True)
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"),
           "BACKEND_DATABASE_URL": f"sqlite:///{data_dir / 'providers.db'}",
           "BACKEND_BACKUP_FILE": str(data_dir / "config_backup.json"),
           "BACKEND_API_KEY_SECRET": SECRET, "BACKEND_PORT": str(port), **(extra_env or {})}
    log = open(data_dir / "server.log", "ab")
    return subprocess.Popen([*cpu_prefix(cpu), sys.executable, str(checkout / "server.py")], env=env, stdout=log,
                            stderr=log, stdin=subprocess.DEVNULL, cwd=data_dir)


def cpu_prefix(cpu: int | None) -> list[str]:
    """`taskset -c CPU` when asked for and possible (pinning keeps server and load generator apart)."""
    if cpu is None or not shutil.which("taskset") or len(os.sched_getaffinity(0)) < 2:
        return []
    return ["taskset", "-c", str(cpu)]


def start_script(script: str, *args: str, cpu: int | None = None) -> subprocess.Popen:
    return subprocess.Popen([*cpu_prefix(cpu), sys.executable, str(ROOT / "bench" / script), *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def backup_document(count: int, base_url: str, with_keys: bool = False) -> dict:
    """A backup document of `count` providers (restoring it is the fast way to fill a server); with
    keys encrypted under SECRET when asked, so previews and backup sizes are realistic."""
    from registry.keyring import Keyring
    keyring = Keyring([SECRET]) if with_keys else None
    stamp = "2026-01-01T00:00:00Z"
    return {"format": "provider-registry-backup", "version": 1, "exported_at": stamp, "providers": [
        {"id": i, "name": f"provider-{i:05d}", "type": "openai", "base_url": base_url,
         "api_key": keyring.encrypt(f"sk-bench-{i:08d}-abcdefghijklmnop") if keyring else None,
         "models": ["model-a", "model-b"], "is_active": True, "created_at": stamp, "updated_at": stamp,
         "last_test": None} for i in range(1, count + 1)]}


def fill_registry(data_dir: Path, count: int, base_url: str, with_keys: bool = False) -> None:
    """Write a backup of `count` providers into the server's backup file (restore it next)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "config_backup.json").write_text(json.dumps(backup_document(count, base_url, with_keys)))


def request(method: str, url: str, body: bytes | None = None, timeout: float = 300) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def percentile(values: list[float], pct: float) -> float:
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(pct) - 1]
