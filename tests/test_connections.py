"""Connection handling of `server.py`: idle and slow connections are closed after
BACKEND_IDLE_TIMEOUT_SECONDS, and running out of file descriptors neither spins the process nor
stops it serving the connections it has."""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import sys
import time

import pytest

from support.processes import ServerProcess
from handlers.listener import PAUSE_SECONDS, add_accept_handler

PING = b"GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
PARTIAL_PING = b"GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\n"  # no blank line: the headers never end
OUT_OF_DESCRIPTORS_WARNING = "cannot accept new connections"

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc and sets rlimits")


def connect(server: ServerProcess, timeout: float = 5) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=timeout)


def read_response(sock: socket.socket, within: float = 5) -> tuple[int, bytes]:
    """Status and body of one small HTTP/1.1 response with a Content-Length."""
    deadline = time.monotonic() + within
    data = b""
    for _ in range(64):  # 4 KiB reads: 256 KiB at most
        head, blank_line, body = data.partition(b"\r\n\r\n")
        if blank_line:
            lines = head.decode("latin-1").split("\r\n")
            length = next(int(line.split(":", 1)[1]) for line in lines if line.lower().startswith("content-length:"))
            if len(body) >= length:
                return int(lines[0].split()[1]), body
        sock.settimeout(max(deadline - time.monotonic(), 0.01))
        chunk = sock.recv(4096)
        assert chunk, f"connection closed after {data!r}"
        data += chunk
    raise AssertionError(f"no complete response in {data[:300]!r}...")


def ping(sock: socket.socket) -> int:
    sock.sendall(PING)
    status, _ = read_response(sock)
    return status


def seconds_until_closed(sock: socket.socket, limit: float, trickle: bool = False) -> float | None:
    """How long until the server closes `sock` (None: still open after `limit` seconds). With
    `trickle`, one more header line is sent every tick, as a slowloris client does."""
    tick = 0.2
    sock.settimeout(tick)
    start = time.monotonic()
    for line in range(int(limit / tick) + 1):
        try:
            data = sock.recv(1)
        except TimeoutError:
            data = None
        except ConnectionResetError:
            return time.monotonic() - start
        if data == b"":
            return time.monotonic() - start
        assert data is None, f"the server sent {data!r}"
        if time.monotonic() - start >= limit:
            return None
        if trickle:
            try:
                sock.sendall(f"X-Trickle-{line}: x\r\n".encode())
            except (BrokenPipeError, ConnectionResetError):
                return time.monotonic() - start
    return None


def ping_on_a_new_connection(server: ServerProcess, within: float) -> int:
    """Status of GET /ping on a new connection, retried until it gets an answer or `within` seconds pass."""
    deadline = time.monotonic() + within
    failure: Exception | None = None
    for _ in range(int(within / 0.1) + 1):
        try:
            with connect(server, timeout=1) as sock:
                return ping(sock)
        except (OSError, AssertionError) as exc:
            failure = exc
        if time.monotonic() >= deadline or server.process.poll() is not None:
            break
        time.sleep(0.1)
    raise AssertionError(f"no answer to GET /ping on a new connection within {within} s: {failure!r}")


@pytest.fixture
def server_with_idle_timeout_1s(run_server) -> ServerProcess:
    return run_server({"BACKEND_IDLE_TIMEOUT_SECONDS": "1"})


def test_idle_keep_alive_connection_is_closed_after_the_idle_timeout(server_with_idle_timeout_1s):
    with connect(server_with_idle_timeout_1s) as sock:
        assert ping(sock) == 200
        closed_after = seconds_until_closed(sock, limit=4)
    assert closed_after is not None, "still open 4 s after its last request"
    assert closed_after >= 0.5  # closed for idling, not at once


def test_connection_whose_headers_never_end_is_dropped(server_with_idle_timeout_1s):
    with connect(server_with_idle_timeout_1s) as sock:
        sock.sendall(PARTIAL_PING)
        closed_after = seconds_until_closed(sock, limit=4)
    assert closed_after is not None, "still open 4 s after a partial request"
    assert closed_after >= 0.5


def test_connection_trickling_header_lines_is_dropped_at_the_timeout(server_with_idle_timeout_1s):
    with connect(server_with_idle_timeout_1s) as sock:
        sock.sendall(PARTIAL_PING)
        closed_after = seconds_until_closed(sock, limit=4, trickle=True)
    assert closed_after is not None, "a header line every 0.2 s kept the connection open for 4 s"
    assert 0.5 <= closed_after < 3


def test_connection_sending_requests_within_the_timeout_stays_open(server_with_idle_timeout_1s):
    with connect(server_with_idle_timeout_1s) as sock:
        statuses = []
        for _ in range(5):  # 2.5 s on one connection, more than twice the timeout
            statuses.append(ping(sock))
            time.sleep(0.5)
        statuses.append(ping(sock))
    assert statuses == [200] * 6


# -- file descriptors ------------------------------------------------------------------------------

class ExhaustedSocket:
    """A listening socket whose accept() fails with EMFILE while `exhausted` is true."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.exhausted = True
        self.accepts = 0

    def fileno(self) -> int:
        return self.sock.fileno()

    def accept(self) -> tuple[socket.socket, object]:
        self.accepts += 1
        if self.exhausted:
            raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))
        return self.sock.accept()


@pytest.fixture
def exhausted_listener():
    """An `ExhaustedSocket` on loopback with one connection waiting (so it is always readable)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.setblocking(False)
    client = socket.create_connection(sock.getsockname(), timeout=5)
    yield ExhaustedSocket(sock)
    client.close()
    sock.close()


@pytest.mark.gen_test
async def test_accepting_pauses_while_out_of_descriptors_and_resumes(exhausted_listener):
    accepted, reported = [], []
    remove = add_accept_handler(exhausted_listener, lambda conn, address: accepted.append(conn), reported.append)
    try:
        await asyncio.sleep(3.5 * PAUSE_SECONDS)
        assert 1 <= exhausted_listener.accepts <= 5  # one try per pause, not a busy loop
        assert [error.errno for error in reported] == [errno.EMFILE] * exhausted_listener.accepts
        exhausted_listener.exhausted = False
        await asyncio.sleep(2 * PAUSE_SECONDS)
        assert len(accepted) == 1
    finally:
        remove()
        for conn in accepted:
            conn.close()


@pytest.mark.gen_test
async def test_removing_the_handler_while_paused_cancels_the_resume(exhausted_listener):
    loop = asyncio.get_running_loop()
    loop_errors: list[dict] = []
    loop.set_exception_handler(lambda _, context: loop_errors.append(context))
    try:
        remove = add_accept_handler(exhausted_listener, lambda conn, address: conn.close(), lambda error: None)
        await asyncio.sleep(PAUSE_SECONDS / 2)
        assert exhausted_listener.accepts == 1
        remove()
        exhausted_listener.exhausted = False
        await asyncio.sleep(3 * PAUSE_SECONDS)
        assert exhausted_listener.accepts == 1
        assert loop_errors == []  # a resume would watch the socket for a handler that is gone
    finally:
        loop.set_exception_handler(None)


def open_file_limits(pid: int) -> tuple[int, int]:
    """(soft, hard) RLIMIT_NOFILE of process `pid`, from /proc/PID/limits."""
    for line in open(f"/proc/{pid}/limits").read().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError(f"no 'Max open files' line in /proc/{pid}/limits")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process `pid` so far (/proc/PID/stat, fields 14 and 15)."""
    fields = open(f"/proc/{pid}/stat").read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def open_descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@linux_only
def test_start_up_raises_the_soft_open_file_limit_to_the_hard_one(run_server):
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert hard > 256, f"the hard open-file limit ({hard}) leaves no room below it to show the raise"
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))  # inherited by the server
    try:
        server = run_server({}, wait=False)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert ping_on_a_new_connection(server, within=20) == 200
    assert open_file_limits(server.process.pid) == (hard, hard)


@linux_only
def test_running_out_of_descriptors_neither_spins_nor_stops_open_connections(run_server):
    import resource
    limit, idle_connections = 128, 200
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < idle_connections + 100:  # the test process itself needs the sockets
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, idle_connections + 100), hard))
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] >= idle_connections + 100, "cannot open enough sockets"
    server = run_server({})
    pid = server.process.pid
    log_size_before = len(server.log())
    kept = connect(server)
    idle: list[socket.socket] = []
    try:
        assert ping(kept) == 200
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (limit, limit))
        idle = [connect(server) for _ in range(idle_connections)]
        deadline = time.monotonic() + 5
        for _ in range(100):
            if open_descriptors(pid) >= limit or time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        assert open_descriptors(pid) >= limit, "the server did not run out of descriptors"

        cpu_before = cpu_seconds(pid)
        statuses = []
        for _ in range(4):  # 2 s out of descriptors
            time.sleep(0.5)
            statuses.append(ping(kept))
        cpu_used = cpu_seconds(pid) - cpu_before
        assert statuses == [200] * 4  # the connection opened before goes on being served
        assert cpu_used < 0.5, f"{cpu_used:.2f} s of CPU in 2 s out of descriptors: the accept loop spins"
    finally:
        for sock in idle:
            sock.close()
        kept.close()

    assert ping_on_a_new_connection(server, within=5) == 200  # descriptors are free again
    log = server.log()
    assert "Traceback" not in log
    assert len(log) - log_size_before < 4096, f"the log grew by {len(log) - log_size_before} characters"
    warnings = [line for line in log.splitlines() if OUT_OF_DESCRIPTORS_WARNING in line]
    assert len(warnings) == 1, warnings
    assert " WARNING provider_registry: " in warnings[0]
