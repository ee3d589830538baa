"""Every wait in the tests has a deadline: `wait_until` polls a condition and fails the test
(with `message`) when it does not hold in time."""

from __future__ import annotations

import asyncio
import time
from typing import Callable


async def wait_until(condition: Callable[[], bool], timeout: float = 5.0, message: str = "condition",
                     interval: float = 0.01) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for: {message}")
        await asyncio.sleep(interval)
