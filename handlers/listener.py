"""Accepting connections when file descriptors run out, and the open-file limit that postpones it.

Every connection holds a descriptor. When none is left, accept() fails with EMFILE (or ENFILE,
ENOBUFS, ENOMEM) and leaves the connection in the listen queue, so the listening socket stays
readable: Tornado's own accept handler re-raises the error, the loop logs a traceback and calls it
again at once, and the process spins. `HTTPListener` instead stops watching the listening socket,
keeps serving the connections it has, warns at most every `WARNING_INTERVAL_SECONDS`, and watches
the socket again after `PAUSE_SECONDS` (the queued connections are accepted then, if descriptors
are free by that time; if not, it pauses again).
"""

from __future__ import annotations

import errno
import logging
import socket
import time
from collections.abc import Callable, Iterable
from typing import Any

import tornado.httpserver
from tornado.ioloop import IOLoop

log = logging.getLogger("provider_registry")

OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
PAUSE_SECONDS = 0.1
WARNING_INTERVAL_SECONDS = 10.0
# As many accepts per wake-up as Tornado makes (its default listen backlog), so one busy
# listening socket cannot starve the connections already open.
ACCEPTS_PER_WAKEUP = 128


def raise_open_file_limit() -> None:
    """Raise the soft RLIMIT_NOFILE to the hard limit, as each connection holds a descriptor and the
    usual soft default (1024) is far below what the system allows. A no-op where there is no
    `resource` module (Windows) or the limit cannot be raised (macOS refuses an unlimited one)."""
    try:
        import resource
    except ImportError:
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == hard:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as exc:
        log.debug("the open-file limit stays at %d (raising it to %d failed: %s)", soft, hard, exc)


def add_accept_handler(sock: socket.socket, callback: Callable[[socket.socket, Any], None],
                       out_of_resources: Callable[[OSError], None]) -> Callable[[], None]:
    """`tornado.netutil.add_accept_handler`, except that when accept() fails for lack of descriptors
    or memory it calls `out_of_resources(error)` and pauses accepting on `sock` for `PAUSE_SECONDS`.
    Returns a function that stops accepting for good (cancelling a pending resume)."""
    io_loop = IOLoop.current()
    removed = False
    resume_timer: object | None = None

    def accept_handler(fd: socket.socket, events: int) -> None:
        nonlocal resume_timer
        for _ in range(ACCEPTS_PER_WAKEUP):
            if removed:  # the socket was probably closed
                return
            try:
                connection, address = sock.accept()
            except BlockingIOError:  # every waiting connection is accepted
                return
            except ConnectionAbortedError:  # closed by the client while in the queue
                continue
            except OSError as exc:
                if exc.errno not in OUT_OF_RESOURCES:
                    raise
                io_loop.update_handler(sock, 0)
                resume_timer = io_loop.call_later(PAUSE_SECONDS, resume)
                out_of_resources(exc)
                return
            callback(connection, address)

    def resume() -> None:
        nonlocal resume_timer
        resume_timer = None
        io_loop.update_handler(sock, IOLoop.READ)

    def remove_handler() -> None:
        nonlocal removed
        if resume_timer is not None:  # else it would watch the socket again, after it is closed
            io_loop.remove_timeout(resume_timer)
        io_loop.remove_handler(sock)
        removed = True

    io_loop.add_handler(sock, accept_handler, IOLoop.READ)
    return remove_handler


class HTTPListener(tornado.httpserver.HTTPServer):
    """Tornado's HTTPServer with `add_accept_handler` above: it does not spin when descriptors run
    out, and says so in one warning line at most every `WARNING_INTERVAL_SECONDS`."""

    _last_warning = float("-inf")

    def add_sockets(self, sockets: Iterable[socket.socket]) -> None:
        for sock in sockets:
            self._sockets[sock.fileno()] = sock
            self._handlers[sock.fileno()] = add_accept_handler(sock, self._handle_connection,
                                                               self._warn_out_of_resources)

    def _warn_out_of_resources(self, error: OSError) -> None:
        now = time.monotonic()
        if now - self._last_warning >= WARNING_INTERVAL_SECONDS:
            self._last_warning = now
            log.warning("cannot accept new connections (%s); serving the open ones and retrying every "
                        "%g s", error.strerror, PAUSE_SECONDS)
