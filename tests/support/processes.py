"""`server.py` as a subprocess (start-up, CLI and crash tests) and loopback ports."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
TEST_SECRET = "test-secret-for-the-suite"


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class ServerProcess:
    process: subprocess.Popen
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 15) -> int:
        if self.process.poll() is None:
            self.process.terminate()
        return self.process.wait(timeout=timeout)


def clean_environment(env: dict[str, str]) -> dict[str, str]:
    """What a `server.py` subprocess sees: only PATH and HOME from here, plus `env`."""
    return {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"), **env}


def run_cli(args: list[str], env: dict[str, str], cwd: Path, timeout: float = 30) -> subprocess.CompletedProcess:
    """Run `server.py ARGS` to completion in a clean environment (only PATH, HOME and `env`)."""
    return subprocess.run([sys.executable, str(ROOT / "server.py"), *args], cwd=cwd, env=clean_environment(env),
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def start_server_process(env: dict[str, str], cwd: Path, args: list[str] = (), wait: bool = True) -> ServerProcess:
    """Start `server.py ARGS` in `cwd` with a clean environment plus `env`; wait for /ping."""
    import urllib.request
    port = int(env.get("BACKEND_PORT") or closed_port())
    log_path = cwd / f"server-{port}.log"
    full_env = clean_environment({**env, "BACKEND_PORT": str(port)})
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen([sys.executable, str(ROOT / "server.py"), *args], cwd=cwd, env=full_env,
                                   stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    server = ServerProcess(process, port, log_path)
    if not wait:
        return server
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode}:\n{server.log()}")
        try:
            with urllib.request.urlopen(server.url + "/ping", timeout=1) as response:
                if response.status == 200:
                    return server
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise AssertionError(f"server did not answer /ping in time:\n{server.log()}")


def kill_server_process(server: ServerProcess) -> None:
    if server.process.poll() is None:
        server.process.kill()
        server.process.wait(timeout=10)
