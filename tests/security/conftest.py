"""Security test fixtures: production settings, a network that cannot leave 127.0.0.1, and
loopback listeners that record what reaches them.

`network` replaces the process's resolver with the test's DNS table and refuses (and records)
every connection to an address other than loopback, so even code that ignores the egress guard
sends no packet beyond this machine; tests assert the guard refused before any socket opened.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from console.accounts.roles import Role


@pytest.fixture
def production(settings):
    """DEBUG off, https for webhooks, and an allowlist that names nothing on loopback."""
    settings.DEBUG = False
    settings.AIRLOCK_WEBHOOK_ALLOW_HTTP = False
    settings.AIRLOCK_EGRESS_ALLOW = []
    settings.AIRLOCK_PROVIDER_KEYS = {}
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    return settings


@dataclass
class Network:
    refused: list[tuple] = field(default_factory=list)  # connections beyond loopback
    loopback: list[tuple] = field(default_factory=list)


@pytest.fixture
def network(monkeypatch, dns):
    net = Network()
    real_connect = socket.socket.connect
    real_getaddrinfo = socket.getaddrinfo

    def connect(sock, address):
        host = address[0] if isinstance(address, tuple) else address
        try:
            ip = ipaddress.ip_address(str(host).split("%", 1)[0])
        except ValueError:
            ip = None
        mapped = getattr(ip, "ipv4_mapped", None) or ip
        if ip is not None and mapped.is_loopback:
            net.loopback.append(address)
            return real_connect(sock, address)
        net.refused.append(address)
        raise ConnectionRefusedError(111, "blocked by the test: not loopback")

    def getaddrinfo(host, port, *args, **kwargs):
        try:
            ipaddress.ip_address(str(host))
        except ValueError:
            name = str(host).lower().rstrip(".")
            if name not in dns:
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known") from None
            return [
                (socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "",
                 (a, port) if ":" not in a else (a, port, 0, 0))
                for a in dns[name]
            ]  # fmt: skip
        return real_getaddrinfo(host, port, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return net


class Listener:
    """An HTTP server on 127.0.0.1 answering every request with `reply` and recording it."""

    def __init__(self, status: int = 200, body: dict | None = None, headers: dict | None = None):
        self.status, self.body, self.headers = status, body or {}, headers or {}
        self.requests: list[dict] = []
        listener = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                listener.requests.append(
                    {
                        "method": self.command,
                        "path": self.path,
                        "headers": dict(self.headers),
                        "body": self.rfile.read(length) if length else b"",
                    }
                )
                data = json.dumps(listener.body).encode()
                self.send_response(listener.status)
                for name, value in listener.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _answer

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def listener():
    made: list[Listener] = []

    def make(**kwargs) -> Listener:
        made.append(Listener(**kwargs))
        return made[-1]

    yield make
    for item in made:
        item.close()


@pytest.fixture
def admin_client(client, member):
    client.force_login(member(Role.ADMIN, "ada"))
    return client
