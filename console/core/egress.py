"""The one egress guard: every outbound connection Airlock makes passes here.

Model calls (`base_url`), HTTP eval targets and webhooks all connect through `client()` /
`GuardedTransport`, and their URLs are checked with `check_url()` when they are saved. The rule:

- a destination must match an entry of AIRLOCK_EGRESS_ALLOW (`host`, `host:port`, `*.domain`,
  `*` for any public host, IP literals as `10.0.0.5:8000` or `[fd00::5]:8000`);
- the host is resolved and every address it resolves to is checked: loopback, private,
  link-local, unspecified, multicast, reserved and shared addresses (including IPv4-mapped or
  embedded IPv6 forms and odd numeric spellings such as 0x7f.0.0.1, 127.1, 2130706433) pass only
  when allowed by an exact entry (the exact host name or the address itself, never a wildcard);
  cloud metadata addresses pass only when their address itself is listed;
- the connection goes to the address that was checked (the name stays in the Host header and
  the TLS server name), so a second DNS answer cannot point it somewhere else;
- redirects are never followed: a 3xx answer is an error.

Refusals raise `EgressRefused`; its message is the same generic text for every reason, the
details (address, reason) go to the log only.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import re
import socket
import ssl
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpcore2
import httpx2
from django.conf import settings

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
REFUSED = "destination not allowed"
DEFAULT_PORTS = {"http": 80, "https": 443}
# Cloud instance metadata services: reachable only when the address itself is listed.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, Azure, GCP, OpenStack, DigitalOcean
        "169.254.170.2",  # AWS ECS task metadata
        "169.254.169.123",  # AWS time sync
        "100.100.100.200",  # Alibaba Cloud
        "192.0.0.192",  # Oracle Cloud (legacy)
        "fd00:ec2::254",  # AWS over IPv6
        "fd00:ec2::23",  # AWS DNS over IPv6
    )
)
NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NUMERIC_HOST = re.compile(r"^(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]+)){0,3}$")
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


class EgressRefused(Exception):
    """A destination the guard refuses. str() is the generic text users see; `reason` and
    `address` are for the log."""

    def __init__(self, host: str, port: int | None, reason: str, address: str = ""):
        self.host, self.port, self.reason, self.address = host, port, reason, address
        super().__init__(REFUSED)

    def detail(self) -> str:
        where = f"{self.host}:{self.port}" if self.port else self.host
        return f"{where}{f' ({self.address})' if self.address else ''}: {self.reason}"


class RedirectRefused(Exception):
    """The destination answered with a redirect; Airlock never follows one."""

    def __init__(self, status: int):
        self.status = status
        super().__init__(f"HTTP {status}: redirects are not followed")


# --- hosts and addresses -----------------------------------------------------------------------


def unwrap(address: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 address carries (mapped, 6to4, NAT64), else the address."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.sixtofour is not None:
            return address.sixtofour
        if address in NAT64:
            return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


def is_public(address: IPAddress) -> bool:
    """An address on the public internet: not this machine, a private network, link-local,
    multicast, reserved, shared (CGNAT), documentation or a metadata service."""
    inner = unwrap(address)
    if inner != address and not is_public(inner):
        return False
    return not (
        not address.is_global
        or address.is_multicast
        or address.is_reserved
        or address.is_link_local
        or address.is_loopback
        or address.is_unspecified
        or (isinstance(address, ipaddress.IPv6Address) and address.is_site_local)
        or address in METADATA_ADDRESSES
        or inner in METADATA_ADDRESSES
    )


def canonical_host(raw: str) -> tuple[str, IPAddress | None]:
    """(lower-case ASCII name without a trailing dot, address if the host is an IP literal).

    Numeric spellings the C resolver accepts (0x7f.0.0.1, 127.1, 0177.0.0.1, 2130706433) are
    read the way inet_aton reads them, so they are checked as the address they really are."""
    host = (raw or "").strip().lower()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    host = host[:-1] if host.endswith(".") else host
    if not host:
        raise ValueError("empty host")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is not None:
        if getattr(address, "scope_id", None):
            raise ValueError("an IPv6 zone is not allowed")
        return str(address), address
    if _NUMERIC_HOST.match(host):
        try:
            address = ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            raise ValueError(f"{raw} is not a valid address") from None
        return str(address), address
    try:
        name = host.encode("idna").decode("ascii")
    except UnicodeError:
        raise ValueError(f"{raw} is not a valid host name") from None
    if len(name) > 253 or not all(_LABEL.match(label) for label in name.split(".")):
        raise ValueError(f"{raw} is not a valid host name")
    return name, None


def _is_localhost(name: str) -> bool:
    return name == "localhost" or name.endswith(".localhost")


# --- the allowlist -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Destination:
    """One allowlist entry: `host` is a name, `*.suffix`, `*` or an IP literal."""

    host: str
    port: int | None = None
    address: IPAddress | None = None

    @property
    def wildcard(self) -> bool:
        return self.host == "*" or self.host.startswith("*.")

    def port_ok(self, port: int) -> bool:
        return self.port is None or self.port == port

    def matches_name(self, name: str) -> bool:
        if self.host == "*":
            return True
        if self.host.startswith("*."):
            return name.endswith(self.host[1:])
        return self.address is None and name == self.host

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}" if self.port else host


def parse_destination(text: str) -> Destination:
    """`host`, `host:port`, `*.domain[:port]`, `*[:port]`, `1.2.3.4[:port]`, `[v6][:port]`;
    ValueError explains what is wrong."""
    raw = text.strip()
    host, port = raw, None
    if raw.startswith("["):
        end = raw.find("]")
        if end < 0:
            raise ValueError(f"{raw!r}: unclosed [ in an IPv6 address")
        host, rest = raw[1:end], raw[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"{raw!r}: write [address]:port")
            port = rest[1:]
    elif raw.count(":") == 1:
        host, port = raw.split(":")
    if port is not None:
        if not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{raw!r}: the port must be a number from 1 to 65535")
        port = int(port)
    if host == "*":
        return Destination("*", port)
    if host.startswith("*."):
        try:
            suffix, address = canonical_host(host[2:])
        except ValueError:
            raise ValueError(f"{raw!r}: not a valid host pattern") from None
        if address is not None or "." not in suffix:
            raise ValueError(f"{raw!r}: a wildcard needs a domain with a dot, e.g. *.example.com")
        return Destination("*." + suffix, port)
    if "*" in host:
        raise ValueError(f"{raw!r}: * may only stand alone or start a pattern (*.example.com)")
    try:
        name, address = canonical_host(host)
    except ValueError as exc:
        raise ValueError(f"{raw!r}: {exc}") from None
    return Destination(name, port, unwrap(address) if address is not None else None)


@functools.lru_cache(maxsize=32)
def _parse_all(entries: tuple[str, ...]) -> tuple[Destination, ...]:
    return tuple(parse_destination(e) for e in entries if e.strip())


def parse_allowlist(entries: Iterable[str]) -> tuple[Destination, ...]:
    return _parse_all(tuple(entries))


def allowlist() -> tuple[Destination, ...]:
    return parse_allowlist(getattr(settings, "AIRLOCK_EGRESS_ALLOW", ()))


# --- the check ---------------------------------------------------------------------------------


def _resolve(name: str, port: int) -> list[IPAddress]:
    """Every address `name` resolves to (the DNS boundary; tests replace `getaddrinfo`)."""
    infos = getaddrinfo(name, port, type=socket.SOCK_STREAM)
    seen: list[IPAddress] = []
    for *_ignored, sockaddr in infos:
        address = ipaddress.ip_address(sockaddr[0].split("%", 1)[0])
        if address not in seen:
            seen.append(address)
    return seen


getaddrinfo = socket.getaddrinfo


def _refuse(host: str, port: int | None, reason: str, address: object = "") -> EgressRefused:
    return EgressRefused(host, port, reason, str(address or ""))


def check(host: str, port: int, *, resolve: bool = True) -> list[IPAddress]:
    """The addresses Airlock may connect to for host:port, or EgressRefused (logged).

    Names are matched against the allowlist before they are resolved, so a refused name never
    costs a DNS query. With resolve=False (showing a page) only what needs no DNS is checked,
    and nothing is logged."""
    try:
        return _check(host, port, resolve)
    except EgressRefused as exc:
        if resolve:
            log.warning("egress refused: %s", exc.detail())
        raise


def _check(host: str, port: int, resolve: bool) -> list[IPAddress]:
    try:
        name, literal = canonical_host(host)
    except ValueError as exc:
        raise _refuse(host, port, str(exc)) from None
    rules = [r for r in allowlist() if r.port_ok(port)]
    if literal is not None:
        address = unwrap(literal)
        if any(r.address == address for r in rules):
            return [literal]
        if is_public(literal) and any(r.host == "*" for r in rules):
            return [literal]
        reason = "address not public" if not is_public(literal) else "not in AIRLOCK_EGRESS_ALLOW"
        raise _refuse(host, port, reason, literal)
    exact = any(not r.wildcard and r.matches_name(name) for r in rules)
    wild = any(r.wildcard and r.matches_name(name) for r in rules)
    if not exact and not (wild and not _is_localhost(name)):
        raise _refuse(host, port, "not in AIRLOCK_EGRESS_ALLOW")
    if not resolve:
        return []
    try:
        addresses = _resolve(name, port)
    except (OSError, UnicodeError) as exc:
        raise _refuse(host, port, f"does not resolve: {exc}") from None
    if not addresses:
        raise _refuse(host, port, "resolves to no address")
    for address in addresses:
        inner = unwrap(address)
        if address in METADATA_ADDRESSES or inner in METADATA_ADDRESSES:
            raise _refuse(host, port, "resolves to a metadata service", address)
        if not is_public(address) and not exact:
            raise _refuse(host, port, "resolves to an internal address", address)
    return addresses


@dataclass(frozen=True)
class Target:
    scheme: str
    host: str
    port: int


def split_url(url: str) -> Target:
    """scheme, host and port of an http(s) URL, or EgressRefused."""
    try:
        parts = urlsplit((url or "").strip())
        port = parts.port
    except ValueError:
        raise _refuse(url, None, "malformed URL") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname:
        raise _refuse(url, None, "not an http(s) URL with a host")
    return Target(scheme, parts.hostname, port or DEFAULT_PORTS[scheme])


def check_url(url: str, *, resolve: bool = True, unresolved_ok: bool = False) -> Target:
    """Check a URL when it is saved. With unresolved_ok, a name that matches the allowlist but
    does not resolve (yet) is accepted: it is checked again, resolved, at connect time."""
    target = split_url(url)
    try:
        check(target.host, target.port, resolve=resolve)
    except EgressRefused as exc:
        if not (unresolved_ok and exc.reason.startswith("does not resolve")):
            raise
    return target


# --- the transport -----------------------------------------------------------------------------


class GuardedNetwork(httpcore2.SyncBackend):
    """Connects only to addresses the guard checked for this host and port (once per new
    connection: pooled connections are reused without another lookup)."""

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Sequence | None = None,
    ) -> httpcore2.NetworkStream:
        error: Exception | None = None
        for address in check(host, port):
            try:
                return super().connect_tcp(
                    str(address), port, timeout, local_address, socket_options
                )
            except (httpcore2.ConnectError, httpcore2.ConnectTimeout) as exc:
                error = exc
        assert error is not None
        raise error


_ssl_context: ssl.SSLContext | None = None
_ssl_context_lock = threading.Lock()


def ssl_context() -> ssl.SSLContext:
    """The process's one verifying TLS context (httpx's defaults: certifi's CA bundle, no
    environment), shared by every guarded client. Loading the CA bundle takes tens of
    milliseconds; a client built per model configuration must not pay it each time, nor twice
    (once for httpx's own pool, once for the guarded one). SSLContext is safe to share."""
    global _ssl_context
    if _ssl_context is None:
        with _ssl_context_lock:
            if _ssl_context is None:
                _ssl_context = httpx2.create_ssl_context(trust_env=False)
    return _ssl_context


class GuardedTransport(httpx2.HTTPTransport):
    """httpx transport through the guard: http(s) only, pinned addresses, no proxies from the
    environment, and any 3xx answer turned into RedirectRefused."""

    def __init__(self, limits: httpx2.Limits | None = None):
        limits = limits or httpx2.Limits(max_connections=1000, max_keepalive_connections=100)
        context = ssl_context()
        super().__init__(verify=context, trust_env=False, limits=limits)
        self._pool = httpcore2.ConnectionPool(
            ssl_context=context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=GuardedNetwork(),
        )

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        if request.url.scheme not in DEFAULT_PORTS:
            exc = _refuse(str(request.url.host), request.url.port, "not http(s)")
            log.warning("egress refused: %s", exc.detail())
            raise exc
        response = super().handle_request(request)
        if 300 <= response.status_code < 400:
            response.close()
            log.warning(
                "egress: %s answered %s (redirect not followed)",
                request.url.host,
                response.status_code,
            )
            raise RedirectRefused(response.status_code)
        return response


def http_client(timeout: float = 30.0, *, keep_alive: int = 100) -> httpx2.Client:
    """A new httpx client whose every connection passes the guard (for an SDK that keeps it).
    `keep_alive`: connections kept open between requests; a caller with more requests than this
    in flight at once closes the surplus after each one and connects (and checks) anew."""
    limits = httpx2.Limits(
        max_connections=max(1000, keep_alive), max_keepalive_connections=keep_alive
    )
    return httpx2.Client(
        transport=GuardedTransport(limits), timeout=timeout, follow_redirects=False, trust_env=False
    )


_shared: httpx2.Client | None = None
_shared_lock = threading.Lock()


def client() -> httpx2.Client:
    """The process-wide guarded client for Airlock's own requests (webhooks, HTTP targets)."""
    global _shared
    if _shared is None:
        with _shared_lock:
            if _shared is None:
                _shared = http_client()
    return _shared
