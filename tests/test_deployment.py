"""Deployment files (README, "Deployment (systemd)"): `systemd-analyze verify` accepts
deploy/provider-registry.service as it is and run under Litestream, the unit keeps its hardening,
the server and Litestream run with memory that is never both writable and executable (the unit's
MemoryDenyWriteExecute), and deploy/litestream.yml takes its paths from the environment."""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from support.api import http_json
from support.litestream import litestream_binary
from support.processes import ROOT, TEST_SECRET, closed_port

UNIT = ROOT / "deploy" / "provider-registry.service"
INSTALL_DIR = "/opt/provider-registry"
STATE_DIR = "/var/lib/provider-registry"


def unit_directives(text: str) -> dict[str, list[str]]:
    """`Section.Key` -> every value it is given (systemd allows a key more than once)."""
    directives: dict[str, list[str]] = {}
    section = ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        directives.setdefault(f"{section}.{key}", []).append(value)
    return directives


def commented_litestream_exec_start(text: str) -> str:
    """The unit's commented-out ExecStart that runs the server under Litestream."""
    lines = [line[1:] for line in text.splitlines() if line.startswith("#ExecStart=")]
    assert len(lines) == 1, lines
    return lines[0]


def installed_here(text: str) -> str:
    """The unit as if this checkout (with its .venv) were installed in /opt/provider-registry:
    `systemd-analyze verify` wants ExecStart's binary to exist."""
    return text.replace(INSTALL_DIR, str(ROOT))


def verify(unit_text: str, directory: Path) -> subprocess.CompletedProcess:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze is missing: apt-get install systemd (.ci/run does it)", pytrace=False)
    directory.mkdir()
    path = directory / UNIT.name
    path.write_text(unit_text)
    return subprocess.run([analyze, "verify", str(path)], capture_output=True, text=True, timeout=60,
                          env={"PATH": os.environ.get("PATH", ""), "SYSTEMD_LOG_LEVEL": "notice"})


@pytest.mark.parametrize("variant", ["server", "under-litestream"])
def test_systemd_analyze_verify_accepts_the_unit(tmp_path, variant):
    text = installed_here(UNIT.read_text())
    if variant == "under-litestream":
        exec_start = commented_litestream_exec_start(text)
        text = "\n".join(exec_start if line.startswith("ExecStart=") else line for line in text.splitlines()) + "\n"
        assert "litestream replicate" in unit_directives(text)["Service.ExecStart"][0]
    result = verify(text, tmp_path / "unit")
    assert result.returncode == 0, result.stdout + result.stderr
    about_the_unit = [line for line in (result.stdout + result.stderr).splitlines() if UNIT.name in line]
    assert about_the_unit == []


def test_systemd_analyze_verify_refuses_a_broken_unit(tmp_path):
    """The check above can fail: a misspelt directive is reported against the unit."""
    text = installed_here(UNIT.read_text()).replace("NoNewPrivileges=", "NoNewPrivilege=")
    result = verify(text, tmp_path / "unit")
    assert "NoNewPrivilege" in result.stdout + result.stderr


def test_the_unit_runs_unprivileged_and_hardened():
    directives = unit_directives(UNIT.read_text())

    def value(key: str) -> str:
        assert key in directives, f"{key} is missing from {UNIT.name}"
        return " ".join(directives[key])

    assert value("Service.User") == "provider-registry"
    assert value("Service.StateDirectory") == "provider-registry"
    assert value("Service.EnvironmentFile") == "/etc/provider-registry/env"
    assert value("Service.Restart") == "on-failure"
    for key, expected in {"NoNewPrivileges": "true", "ProtectSystem": "strict", "ProtectHome": "true",
                          "PrivateTmp": "true", "PrivateDevices": "true", "ProtectKernelTunables": "true",
                          "ProtectKernelModules": "true", "ProtectKernelLogs": "true",
                          "ProtectControlGroups": "true", "LockPersonality": "true",
                          "MemoryDenyWriteExecute": "true", "RestrictNamespaces": "true",
                          "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX", "CapabilityBoundingSet": "",
                          "UMask": "0077"}.items():
        assert value(f"Service.{key}") == expected, key
    assert "@system-service" in directives["Service.SystemCallFilter"]
    environment = dict(v.split("=", 1) for v in directives["Service.Environment"])
    assert environment["BACKEND_DATABASE_URL"] == f"{STATE_DIR}/providers.db"
    assert environment["BACKEND_BACKUP_FILE"] == f"{STATE_DIR}/config_backup.json"
    assert directives["Service.ExecStart"] == [f"{INSTALL_DIR}/.venv/bin/python {INSTALL_DIR}/server.py"]


def test_litestream_config_takes_database_and_replica_from_the_environment():
    config = yaml.safe_load((ROOT / "deploy" / "litestream.yml").read_text())
    [database] = config["dbs"]
    assert database["path"] == "${BACKEND_DATABASE_URL}"
    assert database["replica"]["url"] == "${LITESTREAM_REPLICA_URL}"
    assert database["replica"]["sync-interval"] == "${LITESTREAM_SYNC_INTERVAL}"


def refuse_writable_executable_memory() -> None:
    """prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN): the kernel's form of systemd's
    MemoryDenyWriteExecute, inherited across fork and exec."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(65, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "PR_SET_MDWE")


def kernel_refuses_writable_executable_memory() -> bool:
    probe = subprocess.run([sys.executable, "-c", "import ctypes; libc = ctypes.CDLL(None); "
                            "raise SystemExit(libc.prctl(65, 1, 0, 0, 0) != 0 or libc.prctl(66, 0, 0, 0, 0) != 1)"])
    return probe.returncode == 0


def test_server_and_litestream_run_with_memory_deny_write_execute(tmp_path):
    # The unit asks for MemoryDenyWriteExecute: this check must run, not be skipped.
    assert kernel_refuses_writable_executable_memory(), \
        "this kernel has no PR_SET_MDWE (Linux 6.3+): the MemoryDenyWriteExecute check cannot run here"
    admin = "deployment-test-admin-token"
    port = closed_port()
    replica = tmp_path / "replica"
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/tmp"),
           "BACKEND_DATABASE_URL": str(tmp_path / "data" / "providers.db"),
           "BACKEND_BACKUP_FILE": str(tmp_path / "data" / "config_backup.json"),
           "BACKEND_API_KEY_SECRET": TEST_SECRET, "BACKEND_ADMIN_TOKEN": admin, "BACKEND_PORT": str(port),
           "LITESTREAM_REPLICA_URL": f"file://{replica}", "LITESTREAM_SYNC_INTERVAL": "100ms"}
    log = tmp_path / "litestream.log"
    process = None
    try:
        with open(log, "wb") as log_file:
            process = subprocess.Popen(
                [litestream_binary(), "replicate", "-config", str(ROOT / "deploy" / "litestream.yml"),
                 "-exec", f"{sys.executable} {ROOT / 'server.py'}"], env=env, cwd=tmp_path, stdout=log_file,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                preexec_fn=refuse_writable_executable_memory)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 20
        while True:
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"no /ping in time:\n{log.read_text()}"
            try:
                with urllib.request.urlopen(url + "/ping", timeout=1):
                    break
            except OSError:
                time.sleep(0.05)
        # Encryption (cryptography), a probe (pycurl), a webhook secret, SQLite's JSON rendering.
        status, created = http_json("POST", url + "/api/providers", {"name": "mdwe", "base_url": f"{url}/v1",
                                                                     "api_key": "sk-mdwe-abcdefghijklmnop"},
                                    token=admin)
        assert status == 201, created
        status, result = http_json("POST", url + f"/api/providers/{created['id']}/test", token=admin)
        assert (status, result["status"]) == (200, "error"), result  # our own server answers 404
        status, hook = http_json("POST", url + "/api/webhooks", {"url": f"{url}/hook", "events": ["provider.down"]},
                                 token=admin)
        assert status == 201, hook
        status, credentials = http_json("GET", url + f"/api/providers/{created['id']}/credentials", token=admin)
        assert (status, credentials["api_key"]) == (200, "sk-mdwe-abcdefghijklmnop")
        deadline = time.monotonic() + 10
        while not list(replica.glob("ltx/0/*.ltx")):
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"Litestream wrote no replica:\n{log.read_text()}"
            time.sleep(0.05)
        assert process.poll() is None, log.read_text()
    finally:
        if process is not None:
            os.killpg(process.pid, signal.SIGKILL)  # Litestream and the server it runs
            process.wait(timeout=10)
