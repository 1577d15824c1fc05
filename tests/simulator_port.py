"""The demo's model configs call the bundled simulator at 127.0.0.1:8100 (console.config), and
`seed_demo` serves it there while it seeds unless something already does. Parallel test workers
(xdist) therefore take turns with that port: whoever seeds the demo or serves the simulator on it
holds this lock, so no worker's seeding calls a simulator another worker is about to stop.

Re-entrant within a process (a test that serves the simulator may also seed the demo)."""

from __future__ import annotations

import contextlib
import fcntl
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

LOCK_FILE = Path(tempfile.gettempdir()) / "airlock-tests-simulator-8100.lock"
_lock = threading.RLock()
_state = {"depth": 0, "file": None}


@contextlib.contextmanager
def simulator_port() -> Iterator[None]:
    with _lock:
        if _state["depth"] == 0:
            handle = open(LOCK_FILE, "a")  # noqa: SIM115 - closed when the last holder leaves
            fcntl.flock(handle, fcntl.LOCK_EX)
            _state["file"] = handle
        _state["depth"] += 1
    try:
        yield
    finally:
        with _lock:
            _state["depth"] -= 1
            if _state["depth"] == 0:
                handle = _state["file"]
                fcntl.flock(handle, fcntl.LOCK_UN)
                handle.close()
                _state["file"] = None
