"""Eval fixtures: simulators on free loopback ports (stopped after the test) and the demo story."""

from __future__ import annotations

import threading
from http.server import ThreadingHTTPServer

import pytest

from console.evals.simulator import Faults, serve_in_thread
from tests.evals.helpers import build_demo
from tests.evals.workers import dedicated_broker_url, publishing_to, workers


@pytest.fixture
def start_simulator(allow_loopback):
    """start_simulator(faults=None) → (server, base_url, faults); every one is shut down. The
    egress allowlist names each simulator's loopback address explicitly."""
    servers = []

    def start(faults: Faults | None = None, port: int = 0):
        faults = faults or Faults()
        server, base_url = serve_in_thread(port, faults)
        servers.append(server)
        allow_loopback(server.server_address[1])
        return server, base_url, faults

    yield start
    for server in servers:
        stop_in_background(server)


def stop_in_background(server) -> None:
    """shutdown() waits up to the 0.5 s poll interval; do not make every test wait for it."""

    def stop():
        server.shutdown()
        server.server_close()

    threading.Thread(target=stop, daemon=True, name="stop-simulator").start()


@pytest.fixture
def serve_app(allow_loopback):
    """serve_app(Handler) → "http://127.0.0.1:<port>": an application served on a free loopback
    port for the test (an HTTP target, or a model that misbehaves), which the egress allowlist
    names; shut down afterwards."""
    servers = []

    def serve(handler) -> str:
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        servers.append(server)
        threading.Thread(target=server.serve_forever, daemon=True, name="test-app").start()
        allow_loopback(server.server_address[1])
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield serve
    for server in servers:
        stop_in_background(server)


@pytest.fixture
def simulator(start_simulator):
    return start_simulator()


@pytest.fixture
def demo(application, engineer, simulator):
    return build_demo(application, engineer, simulator[1])


@pytest.fixture
def start_worker(postgres_tx, redis_url, tmp_path):
    """start_worker(name) → a ready worker subprocess on the test database and a dedicated
    Redis db (which launch_run in this process publishes to). Stopped before the database is
    flushed, even when the test fails."""
    broker = dedicated_broker_url(redis_url)
    with publishing_to(broker), workers(broker, tmp_path) as start:
        yield start


@pytest.fixture
def quiet_broker(postgres_tx, redis_url):
    """For tests without a worker: launches still publish only to the dedicated Redis db."""
    with publishing_to(dedicated_broker_url(redis_url)):
        yield


@pytest.fixture
def live_demo(postgres_tx, application, engineer, start_simulator):
    """The demo story, committed (worker processes read it), on a simulator with ~20 ms latency
    (so a run takes a moment); `.faults` is the simulator's to change."""
    _, base_url, faults = start_simulator(Faults(latency_ms=20))
    demo = build_demo(application, engineer, base_url)
    demo.faults = faults
    return demo
