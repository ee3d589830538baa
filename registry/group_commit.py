"""Group commit: the changes requested while the event loop is busy are applied together, each in
its own savepoint (one failing does not undo the others), with one backup write and one commit
for the group (bench/RESULTS.md has what that buys with many writers).

A change is a function of a `Change` (the connection, inside the group's transaction, and the set
of provider ids it touched); `submit` returns a future resolved with what it returned, or the
exception it raised, once the whole group is committed and mirrored.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from store.database import savepoint


@dataclass
class Change:
    conn: sqlite3.Connection
    touched: set[int] = field(default_factory=set)


ApplyChange = Callable[[Change], Any]


class GroupCommit:
    def __init__(self, begin: Callable[[], AbstractContextManager[Change]], window_seconds: float = 0.0):
        """`begin()` opens the group's transaction and yields its Change; leaving it commits (or
        raises, when the group cannot be committed: then none of it happened). With a window, a
        group gathers the changes submitted that long after its first (fewer commits, each later)."""
        self._begin = begin
        self._window = window_seconds
        self._pending: list[tuple[ApplyChange, asyncio.Future]] = []

    def submit(self, apply: ApplyChange) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._pending.append((apply, future))
        if len(self._pending) == 1:
            if self._window:
                loop.call_later(self._window, self._commit_group)
            else:
                loop.call_soon(self._commit_group)
        return future

    def _commit_group(self) -> None:
        group, self._pending = self._pending, []
        outcomes: list[tuple[asyncio.Future, BaseException | None, Any]] = []
        try:
            with self._begin() as change:
                for apply, future in group:
                    before = set(change.touched)
                    try:
                        with savepoint(change.conn):
                            result = apply(change)
                    except Exception as exc:  # this change fails alone; the others go on
                        if not change.conn.in_transaction:
                            raise  # SQLite gave up the whole transaction (a full disk, say): so does the group
                        change.touched = before
                        outcomes.append((future, exc, None))
                    else:
                        outcomes.append((future, None, result))
        except Exception as exc:  # the backup or the commit failed: none of the group happened
            for _, future in group:
                if not future.done():
                    future.set_exception(exc)
            return
        for future, exc, result in outcomes:
            if future.done():
                continue
            if exc is not None:
                future.set_exception(exc)
            else:
                future.set_result(result)
