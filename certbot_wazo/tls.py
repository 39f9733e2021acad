"""Real TLS handshakes (stdlib ssl): in memory, on a loopback listener, against live endpoints."""
from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import functools
import hashlib
import ipaddress
import logging
import os
import select
import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

from certbot_wazo.errors import ProbeError

logger = logging.getLogger(__name__)


# How a probe reaches an endpoint: (address, port, timeout) -> a connected stream (the host's
# Access; socket.create_connection on this machine).
Connect = Callable[[str, int, float], socket.socket]


def direct(address: str, port: int, timeout: float) -> socket.socket:
    """A TCP connection from this machine."""
    return socket.create_connection((address, port), timeout=timeout)


class HandshakeError(Exception):
    """A handshake failed; args[0] is OpenSSL's reason (e.g. "unable to get local issuer certificate")."""


@dataclasses.dataclass(frozen=True)
class Endpoint:
    """A TLS endpoint to probe, and the service behind it when known."""

    address: str
    port: int
    unit: str = ""

    def __str__(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        label = f"{host}:{self.port}"
        return f"{label} ({self.unit})" if self.unit else label

    @classmethod
    def parse(cls, text: str) -> Endpoint:
        """Parse ADDR:PORT or [ADDR6]:PORT.

        :raises ValueError: not an address and port
        """
        host, sep, port = text.strip().rpartition(":")
        host = host.strip("[]")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{text!r} is not ADDR:PORT")
        ipaddress.ip_address(host)
        return cls(host, int(port))


@dataclasses.dataclass(frozen=True)
class ProbeResult:
    """What one endpoint served."""

    endpoint: Endpoint
    ok: bool
    detail: str
    fingerprint: str = ""


def client_context() -> ssl.SSLContext:
    """A client context on the system trust store (OpenSSL's default paths; SSL_CERT_FILE honoured)."""
    return ssl.create_default_context()


def server_context(cert_path: Path, key_path: Path) -> ssl.SSLContext:
    """A server context serving a pair from files.

    :raises HandshakeError: OpenSSL cannot load the pair
    """
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        ctx.load_cert_chain(str(cert_path), str(key_path), password=_no_password)
    except (ssl.SSLError, OSError, TypeError) as exc:
        raise HandshakeError(str(getattr(exc, "reason", None) or exc)) from None
    return ctx


def _no_password() -> str:
    raise TypeError("the private key is encrypted")


def verify_pair(cert_path: Path, key_path: Path, hostname: str) -> None:
    """A full TLS handshake in memory: the pair served, verified with the system trust store for hostname.

    :raises HandshakeError: the handshake failed; args[0] says why
    """
    to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    from_server, from_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    server = server_context(cert_path, key_path).wrap_bio(to_server, from_server, server_side=True)
    client = client_context().wrap_bio(to_client, from_client, server_hostname=hostname)
    pending = [client, server]
    for _ in range(16):
        for side in list(pending):
            try:
                side.do_handshake()
                pending.remove(side)
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLCertVerificationError as exc:
                raise HandshakeError(exc.verify_message) from None
            except ssl.SSLError as exc:
                raise HandshakeError(exc.reason or str(exc)) from None
        to_server.write(from_client.read())
        to_client.write(from_server.read())
        if not pending:
            return
    raise HandshakeError("the handshake did not complete")


def unverified_context() -> ssl.SSLContext:
    """A client context that completes any handshake (to see what is served, not to trust it)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _served_leaf(endpoint: Endpoint, hostname: str, timeout: float,
                 connect: Connect = direct,
                 connected: Optional[Callable[[socket.socket], None]] = None) -> bytes:
    """:param connected: given the socket once connected, before the handshake"""
    ctx = unverified_context()
    with connect(endpoint.address, endpoint.port, timeout) as sock:
        if connected is not None:
            connected(sock)
        with ctx.wrap_socket(sock, server_hostname=hostname) as tls:
            return tls.getpeercert(binary_form=True) or b""


# served_leaves with quiet_after: how many times the slowest TLS answer of the same pass a
# silent port is given (a TLS server answers a ClientHello at once; a plain-text one waiting for
# a request line never does).
QUIET_FACTOR = 4.0


def served_leaves(endpoints: Sequence[Endpoint], hostname: str, timeout: float,
                  connect: Connect = direct,
                  quiet_after: Optional[float] = None) -> dict[Endpoint, bytes]:
    """One handshake with each endpoint, concurrently: the leaf each serves (b"" where nothing
    completes a TLS handshake). Nothing is verified: this says what is served.

    :param timeout: the bound of the whole pass
    :param quiet_after: when given, the ports still silent after this many seconds, or after
        QUIET_FACTOR times the slowest handshake that completed in this pass if that is longer
        (a loaded host answers slower, and is then waited for longer), are given up on: they
        neither answered nor closed, as a plain-text service waiting for its request line
    """
    if not endpoints:
        return {}
    started = time.monotonic()
    lock = threading.Lock()
    answered: list[float] = []
    # a duplicate of each socket whose handshake is under way, to cut it short
    handles: dict[Endpoint, socket.socket] = {}
    stop = threading.Event()

    def hold(endpoint: Endpoint, sock: socket.socket) -> None:
        with lock:
            if stop.is_set():
                raise OSError("the pass is over")
            handles[endpoint] = socket.socket(fileno=os.dup(sock.fileno()))

    def one(endpoint: Endpoint) -> bytes:
        try:
            leaf = _served_leaf(endpoint, hostname, timeout, connect,
                                functools.partial(hold, endpoint))
        except (OSError, ssl.SSLError, ValueError):
            return b""
        finally:
            with lock:  # the connection ends now, not with the pass
                handle = handles.pop(endpoint, None)
            if handle is not None:
                handle.close()
        with lock:
            answered.append(time.monotonic() - started)
        return leaf

    pool = concurrent.futures.ThreadPoolExecutor(max_workers=min(32, len(endpoints)))
    try:
        futures = {pool.submit(one, endpoint): endpoint for endpoint in endpoints}
        pending = set(futures)
        while pending:
            with lock:
                slowest = max(answered, default=0.0)
            limit = timeout if quiet_after is None else \
                min(timeout, max(quiet_after, QUIET_FACTOR * slowest))
            left = limit - (time.monotonic() - started)
            if left <= 0:
                break
            _, pending = concurrent.futures.wait(pending, timeout=min(left, 0.02))
        _cut(lock, stop, handles)
        return {futures[f]: f.result() for f in futures}
    finally:  # a signal too: nothing waits out the bound
        _cut(lock, stop, handles)
        pool.shutdown(wait=True)


def _cut(lock: threading.Lock, stop: threading.Event,
         handles: dict[Endpoint, socket.socket]) -> None:
    """End the pass: every handshake still under way fails at once, and none starts."""
    with lock:
        stop.set()
        for handle in handles.values():
            with contextlib.suppress(OSError):
                handle.shutdown(socket.SHUT_RDWR)


def serves_tls(endpoint: Endpoint, hostname: str, timeout: float = 2.0,
               connect: Connect = direct) -> bool:
    """Whether anything completes a TLS handshake there (any certificate)."""
    try:
        _served_leaf(endpoint, hostname, timeout, connect)
    except (OSError, ssl.SSLError):
        return False
    return True


def probe(endpoint: Endpoint, hostname: str, expect_der: bytes, timeout: float = 5.0,
          verify: bool = True, connect: Connect = direct) -> ProbeResult:
    """One handshake: does the endpoint serve expect_der, verified for hostname by the system
    trust store (unless verify is False, e.g. for Wazo's self-signed pair)? connect reaches
    the endpoint as the host itself does."""
    expected = hashlib.sha256(expect_der).hexdigest()
    try:
        if not verify:
            served = _served_leaf(endpoint, hostname, timeout, connect)
            fingerprint = hashlib.sha256(served).hexdigest()
            if fingerprint == expected:
                return ProbeResult(endpoint, True, "serves the expected certificate", fingerprint)
            return ProbeResult(endpoint, False, "serves another certificate "
                               f"(sha256 {fingerprint[:16]}…)", fingerprint)
        with connect(endpoint.address, endpoint.port, timeout) as sock:
            with client_context().wrap_socket(sock, server_hostname=hostname) as tls:
                served = tls.getpeercert(binary_form=True) or b""
    except ssl.SSLCertVerificationError as exc:
        try:
            served = _served_leaf(endpoint, hostname, timeout, connect)
        except (OSError, ssl.SSLError):
            served = b""
        fingerprint = hashlib.sha256(served).hexdigest()
        which = "the new certificate" if fingerprint == expected else \
            f"another certificate (sha256 {fingerprint[:16]}…)"
        return ProbeResult(endpoint, False, f"serves {which} that does not verify for "
                           f"{hostname}: {exc.verify_message}", fingerprint)
    except (OSError, ssl.SSLError) as exc:
        return ProbeResult(endpoint, False, f"no TLS service ({exc})")
    fingerprint = hashlib.sha256(served).hexdigest()
    if fingerprint != expected:
        return ProbeResult(endpoint, False, "still serves the previous certificate "
                           f"(sha256 {fingerprint[:16]}…)", fingerprint)
    return ProbeResult(endpoint, True, "serves the new certificate, verified for "
                       f"{hostname}", fingerprint)


def probe_until(endpoints: Sequence[Endpoint], hostname: str, expect_der: bytes,
                timeout: float, verify: bool = True, interval: float = 0.05,
                connect: Connect = direct) -> list[ProbeResult]:
    """Probe every endpoint concurrently, each retried until it passes or timeout seconds pass.

    The total time is about that of the slowest endpoint, not the sum.
    """
    deadline = time.monotonic() + timeout
    stop = threading.Event()  # the caller was interrupted: every worker ends after its probe

    def until_ok(endpoint: Endpoint) -> ProbeResult:
        while True:
            remaining = deadline - time.monotonic()
            result = probe(endpoint, hostname, expect_der, max(0.5, min(2.0, remaining)), verify,
                           connect)
            if result.ok or stop.is_set() or time.monotonic() + interval >= deadline:
                return result
            stop.wait(interval)

    if not endpoints:
        return []
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(32, len(endpoints))) as pool:
        try:
            results = list(pool.map(until_ok, endpoints))
        except BaseException:
            stop.set()
            raise
    for result in results:
        logger.debug("probe of %s for %s (verify %s): %s%s", result.endpoint, hostname, verify,
                     "ok, " if result.ok else "FAILED, ", result.detail)
    return results


def probe_loopback(cert_path: Path, key_path: Path, hostname: str, expect_der: bytes) -> None:
    """Serve the pair on a fresh 127.0.0.1 listener and probe it with a real handshake.

    :raises ProbeError: the pair as installed cannot be served or does not verify
    """
    try:
        ctx = server_context(cert_path, key_path)
    except HandshakeError as exc:
        raise ProbeError(f"{cert_path}: the installed pair cannot be served ({exc.args[0]})") \
            from None
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(2)
    done = threading.Event()

    def serve() -> None:
        # Until the probe is done: when verification fails, probe() connects a second time to
        # read the leaf that failed.
        while not done.is_set():
            ready, _, _ = select.select([listener], [], [], 0.05)
            if not ready:
                continue
            try:
                conn, _ = listener.accept()
                conn.settimeout(10)
                with ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
            except (OSError, ssl.SSLError):
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        result = probe(Endpoint("127.0.0.1", listener.getsockname()[1]), hostname, expect_der)
    finally:
        done.set()
        thread.join(timeout=10)
        listener.close()
    logger.debug("probe of %s as installed, on a loopback listener, for %s: %s", cert_path,
                 hostname, result.detail)
    if not result.ok:
        raise ProbeError(f"{cert_path}: the installed pair {result.detail}")


def describe_failures(results: Sequence[ProbeResult]) -> Optional[str]:
    """One line naming every endpoint that failed, or None when all passed."""
    failed = [f"{r.endpoint} {r.detail}" for r in results if not r.ok]
    return "; ".join(failed) if failed else None
