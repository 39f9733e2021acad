"""TLS probes against real handshakes: in memory, and on listeners this test starts on 127.0.0.1.

Every server here runs in a thread on an ephemeral loopback port and is stopped by the fixture's
finalizer; every client timeout is short, so a broken probe fails the test instead of hanging it.
"""
from __future__ import annotations

import hashlib
import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Callable, Iterator, Optional

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from certbot_wazo import discovery, tls
from certbot_wazo.errors import ProbeError
from certbot_wazo.listeners import Listener
from certbot_wazo.tls import Endpoint, HandshakeError, ProbeResult
from tests.pki import CA

NAME = "wazo.example.test"


def leaf_der(fullchain: Path) -> bytes:
    """The DER of the first certificate of a PEM chain."""
    return x509.load_pem_x509_certificate(fullchain.read_bytes()).public_bytes(Encoding.DER)


class Server:
    """A loopback listener in a thread: a TLS server for a pair (which can be swapped while it
    runs), or with context None a TCP server that accepts and never speaks (a hung service)."""

    def __init__(self, context: Optional[ssl.SSLContext]) -> None:
        self.context = context
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.listener.settimeout(0.05)
        self.port: int = self.listener.getsockname()[1]
        self.stopped = threading.Event()
        self.held: list[socket.socket] = []
        self.handshakes = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def endpoint(self) -> Endpoint:
        return Endpoint("127.0.0.1", self.port, "test")

    def serve(self, cert: Path, key: Path) -> None:
        """Serve this pair from the next connection on."""
        self.context = tls.server_context(cert, key)

    def _serve(self) -> None:
        while not self.stopped.is_set():
            try:
                conn, _ = self.listener.accept()
            except (socket.timeout, OSError):
                continue
            context = self.context
            if context is None:
                self.held.append(conn)  # closed by stop()
                continue
            conn.settimeout(2)
            try:
                with context.wrap_socket(conn, server_side=True) as stream:
                    self.handshakes += 1
                    stream.recv(1)
            except (OSError, ssl.SSLError):
                pass
            finally:
                conn.close()

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join(timeout=5)
        self.listener.close()
        for conn in self.held:
            conn.close()
        assert not self.thread.is_alive(), "the test server did not stop"


@pytest.fixture
def serve() -> Iterator[Callable[..., Server]]:
    """Start servers: serve(cert, key) for TLS, serve() for a silent TCP listener; all stopped
    at the end of the test."""
    servers: list[Server] = []

    def start(cert: Optional[Path] = None, key: Optional[Path] = None) -> Server:
        server = Server(tls.server_context(cert, key) if cert and key else None)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def pair(ca: CA, tmp_path: Path) -> tuple[Path, Path]:
    """A CA-issued pair for NAME, with its intermediate."""
    return ca.issue(tmp_path / "pair", names=[NAME])


def free_port() -> int:
    """A loopback port nothing listens on (bound then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


# -- Endpoint ------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, expected", [
    ("127.0.0.1:443", Endpoint("127.0.0.1", 443)), (" 10.0.0.5:9497 ", Endpoint("10.0.0.5", 9497)),
    ("[::1]:8443", Endpoint("::1", 8443)), ("[2001:db8::1]:1", Endpoint("2001:db8::1", 1)),
])
def test_endpoint_parses_addr_port(text: str, expected: Endpoint) -> None:
    assert Endpoint.parse(text) == expected


@pytest.mark.parametrize("text", ["nowhere", "127.0.0.1", "127.0.0.1:", ":443", "localhost:443",
                                  "127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:-1", "::1:443x",
                                  "999.0.0.1:443"])
def test_endpoint_refuses_what_is_not_an_ip_and_port(text: str) -> None:
    with pytest.raises(ValueError):
        Endpoint.parse(text)


def test_endpoint_is_shown_as_admins_write_it() -> None:
    assert str(Endpoint("127.0.0.1", 443)) == "127.0.0.1:443"
    assert str(Endpoint("::1", 8443, "nginx")) == "[::1]:8443 (nginx)"


# -- verify_pair: the in-memory handshake --------------------------------------------------------
def test_verify_pair_accepts_a_pair_the_trust_store_verifies(pair: tuple[Path, Path]) -> None:
    tls.verify_pair(*pair, NAME)


def test_verify_pair_names_a_hostname_mismatch(pair: tuple[Path, Path]) -> None:
    with pytest.raises(HandshakeError, match="[Hh]ostname mismatch"):
        tls.verify_pair(*pair, "other.example.test")


def test_verify_pair_names_a_missing_intermediate(ca: CA, tmp_path: Path) -> None:
    crt, key = ca.issue(tmp_path / "leaf-only", names=[NAME], chain="leaf")
    with pytest.raises(HandshakeError, match="unable to get local issuer certificate"):
        tls.verify_pair(crt, key, NAME)


def test_verify_pair_refuses_a_self_signed_pair(ca: CA, tmp_path: Path) -> None:
    crt, key = ca.issue(tmp_path / "self", names=[NAME], chain="self-signed")
    with pytest.raises(HandshakeError, match="self[- ]signed"):
        tls.verify_pair(crt, key, NAME)


def test_verify_pair_refuses_a_key_of_another_certificate(ca: CA, tmp_path: Path) -> None:
    crt, _ = ca.issue(tmp_path / "a", names=[NAME])
    _, other_key = ca.issue(tmp_path / "b", names=[NAME])
    with pytest.raises(HandshakeError):
        tls.verify_pair(crt, other_key, NAME)


def test_an_encrypted_key_is_refused_without_prompting(ca: CA, tmp_path: Path) -> None:
    """OpenSSL would ask for a passphrase on the terminal; the product says why instead."""
    crt, key = ca.issue(tmp_path / "enc", names=[NAME], password=b"secret")
    with pytest.raises(HandshakeError, match="the private key is encrypted"):
        tls.server_context(crt, key)


def test_server_context_names_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(HandshakeError):
        tls.server_context(tmp_path / "none.pem", tmp_path / "none.key")


# -- probe: one handshake against a live endpoint ------------------------------------------------
def test_probe_passes_when_the_new_certificate_is_served_and_verifies(
        serve: Callable[..., Server], pair: tuple[Path, Path]) -> None:
    server = serve(*pair)
    result = tls.probe(server.endpoint, NAME, leaf_der(pair[0]), timeout=2)
    assert result.ok
    assert result.detail == f"serves the new certificate, verified for {NAME}"
    assert result.fingerprint == hashlib.sha256(leaf_der(pair[0])).hexdigest()


def test_probe_fails_when_the_previous_certificate_is_still_served(
        serve: Callable[..., Server], pair: tuple[Path, Path], ca: CA, tmp_path: Path) -> None:
    old = ca.issue(tmp_path / "old", names=[NAME])
    server = serve(*old)
    result = tls.probe(server.endpoint, NAME, leaf_der(pair[0]), timeout=2)
    old_fp = hashlib.sha256(leaf_der(old[0])).hexdigest()
    assert not result.ok
    assert result.detail == f"still serves the previous certificate (sha256 {old_fp[:16]}…)"
    assert result.fingerprint == old_fp


def test_probe_says_the_new_certificate_does_not_verify_for_the_name(
        serve: Callable[..., Server], pair: tuple[Path, Path]) -> None:
    server = serve(*pair)
    result = tls.probe(server.endpoint, "other.example.test", leaf_der(pair[0]), timeout=2)
    assert not result.ok
    assert result.detail.startswith("serves the new certificate that does not verify for "
                                    "other.example.test: ")
    assert "mismatch" in result.detail.lower()


def test_probe_names_another_unverifiable_certificate(
        serve: Callable[..., Server], pair: tuple[Path, Path], ca: CA, tmp_path: Path) -> None:
    """Wazo's self-signed pair still served: the probe says which certificate it saw."""
    self_signed = ca.issue(tmp_path / "self", names=[NAME], chain="self-signed")
    server = serve(*self_signed)
    result = tls.probe(server.endpoint, NAME, leaf_der(pair[0]), timeout=2)
    fingerprint = hashlib.sha256(leaf_der(self_signed[0])).hexdigest()
    assert not result.ok
    assert result.detail.startswith(f"serves another certificate (sha256 {fingerprint[:16]}…) "
                                    f"that does not verify for {NAME}: ")
    assert result.fingerprint == fingerprint


def test_probe_without_verification_compares_the_leaf_only(
        serve: Callable[..., Server], ca: CA, tmp_path: Path) -> None:
    """verify=False (Wazo's own self-signed pair): served leaf against expected leaf."""
    self_signed = ca.issue(tmp_path / "self", names=["localhost"], chain="self-signed")
    other = ca.issue(tmp_path / "other", names=["localhost"], chain="self-signed")
    server = serve(*self_signed)
    good = tls.probe(server.endpoint, NAME, leaf_der(self_signed[0]), timeout=2, verify=False)
    assert good.ok and good.detail == "serves the expected certificate"
    bad = tls.probe(server.endpoint, NAME, leaf_der(other[0]), timeout=2, verify=False)
    assert not bad.ok
    assert bad.detail == f"serves another certificate (sha256 {bad.fingerprint[:16]}…)"
    assert bad.fingerprint == hashlib.sha256(leaf_der(self_signed[0])).hexdigest()


@pytest.mark.parametrize("verify", [True, False])
def test_probe_of_a_closed_port_says_no_tls_service(verify: bool) -> None:
    result = tls.probe(Endpoint("127.0.0.1", free_port()), NAME, b"x", timeout=1, verify=verify)
    assert not result.ok and result.detail.startswith("no TLS service (")
    assert result.fingerprint == ""


@pytest.mark.parametrize("verify", [True, False])
def test_probe_of_a_hung_service_ends_at_its_timeout(serve: Callable[..., Server],
                                                     verify: bool) -> None:
    """A listener that accepts and never answers the handshake: the probe gives up in time."""
    server = serve()
    started = time.monotonic()
    result = tls.probe(server.endpoint, NAME, b"x", timeout=0.3, verify=verify)
    assert time.monotonic() - started < 2
    assert not result.ok and result.detail.startswith("no TLS service (")


# -- probe_until: every endpoint, concurrently, until it passes ----------------------------------
def test_probe_until_waits_for_a_service_that_comes_back_with_the_new_pair(
        serve: Callable[..., Server], pair: tuple[Path, Path], ca: CA, tmp_path: Path) -> None:
    server = serve(*ca.issue(tmp_path / "old", names=[NAME]))
    swap = threading.Timer(0.3, server.serve, pair)
    swap.start()
    try:
        results = tls.probe_until([server.endpoint], NAME, leaf_der(pair[0]), timeout=10,
                                  interval=0.02)
    finally:
        swap.cancel()
        swap.join(timeout=5)
    assert [r.ok for r in results] == [True]


def test_probe_until_probes_concurrently_and_reports_in_order(
        serve: Callable[..., Server], pair: tuple[Path, Path]) -> None:
    """Three endpoints that never pass cost about one timeout, not three; results keep the
    order of the endpoints given."""
    good = serve(*pair)
    closed = [Endpoint("127.0.0.1", free_port(), f"down{i}") for i in range(3)]
    started = time.monotonic()
    results = tls.probe_until([closed[0], good.endpoint, *closed[1:]], NAME, leaf_der(pair[0]),
                              timeout=0.6, interval=0.05)
    elapsed = time.monotonic() - started
    assert [r.endpoint for r in results] == [closed[0], good.endpoint, *closed[1:]]
    assert [r.ok for r in results] == [False, True, False, False]
    assert 0.5 <= elapsed < 1.5, elapsed


def test_probe_until_of_nothing_is_nothing() -> None:
    assert tls.probe_until([], NAME, b"x", timeout=1) == []


def test_an_interrupted_probe_until_stops_every_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    """A signal (here KeyboardInterrupt from one worker's probe) ends the wait at once: the
    other workers stop after their current probe instead of retrying until the timeout."""
    calls: list[str] = []

    def probe(endpoint: Endpoint, hostname: str, expect_der: bytes, timeout: float,
              verify: bool, connect: object = None) -> ProbeResult:
        calls.append(endpoint.unit)
        if endpoint.unit == "interrupted":
            time.sleep(0.05)
            raise KeyboardInterrupt
        return ProbeResult(endpoint, False, "no TLS service (refused)")

    monkeypatch.setattr(tls, "probe", probe)
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        tls.probe_until([Endpoint("127.0.0.1", 1, "interrupted"), Endpoint("127.0.0.1", 2, "other")],
                        NAME, b"x", timeout=20, interval=0.01)
    assert time.monotonic() - started < 5
    assert calls.count("interrupted") == 1


# -- probe_loopback: the installed pair served on a fresh listener -------------------------------
def test_probe_loopback_passes_for_a_good_pair_at_once_and_leaves_no_thread(
        pair: tuple[Path, Path]) -> None:
    """It runs before every restart: a good pair costs a handshake, not a timeout."""
    before = threading.active_count()
    started = time.monotonic()
    tls.probe_loopback(*pair, NAME, leaf_der(pair[0]))
    assert time.monotonic() - started < 2
    assert threading.active_count() == before


def test_probe_loopback_says_it_is_the_new_certificate_that_does_not_verify(
        ca: CA, tmp_path: Path) -> None:
    """probe() connects a second time to read the leaf that failed verification: the loopback
    listener serves it too, at once (not after probe()'s timeout, naming the hash of nothing)."""
    crt, key = ca.issue(tmp_path / "leaf-only", names=[NAME], chain="leaf")
    started = time.monotonic()
    with pytest.raises(ProbeError, match=f"^{crt}: the installed pair serves the new certificate "
                       f"that does not verify for {NAME}: unable to get local issuer "
                       "certificate$"):
        tls.probe_loopback(crt, key, NAME, leaf_der(crt))
    assert time.monotonic() - started < 2


def test_probe_loopback_names_a_pair_that_cannot_be_served(ca: CA, tmp_path: Path) -> None:
    crt, _ = ca.issue(tmp_path / "a", names=[NAME])
    _, key = ca.issue(tmp_path / "b", names=[NAME])
    with pytest.raises(ProbeError, match=f"^{crt}: the installed pair cannot be served \\("):
        tls.probe_loopback(crt, key, NAME, leaf_der(crt))


def test_probe_loopback_sees_another_certificate_than_expected(
        pair: tuple[Path, Path], ca: CA, tmp_path: Path) -> None:
    other, _ = ca.issue(tmp_path / "other", names=[NAME])
    started = time.monotonic()
    with pytest.raises(ProbeError, match=f"^{pair[0]}: the installed pair still serves the "
                       "previous certificate"):
        tls.probe_loopback(*pair, NAME, leaf_der(other))
    assert time.monotonic() - started < 2


# -- describe_failures ---------------------------------------------------------------------------
def test_describe_failures_names_each_failed_endpoint_in_one_line() -> None:
    ok = ProbeResult(Endpoint("127.0.0.1", 443, "nginx"), True, "serves the new certificate")
    down = ProbeResult(Endpoint("127.0.0.1", 9497, "xivo-auth"), False, "no TLS service (x)")
    old = ProbeResult(Endpoint("::1", 5040, "asterisk"), False, "still serves the previous one")
    assert tls.describe_failures([ok]) is None
    assert tls.describe_failures([]) is None
    assert tls.describe_failures([down, ok, old]) == (
        "127.0.0.1:9497 (xivo-auth) no TLS service (x); "
        "[::1]:5040 (asterisk) still serves the previous one")


def test_silent_ports_do_not_hold_an_observation_pass_for_its_whole_bound(
        serve: Callable[..., Server], pair: tuple[Path, Path]) -> None:
    """served_leaves with quiet_after: ports that neither answer a ClientHello nor close (a
    plain-text service waiting for its request line) are given up on after quiet_after, not
    the pass's bound; every TLS port's leaf is still there."""
    server = serve(*pair)
    silent = [serve() for _ in range(3)]
    endpoints = [server.endpoint, *(s.endpoint for s in silent)]
    began = time.monotonic()
    served = tls.served_leaves(endpoints, NAME, timeout=30.0, quiet_after=0.2)
    assert time.monotonic() - began < 10  # not the 30 s bound
    assert served[server.endpoint] == leaf_der(pair[0])
    assert all(served[s.endpoint] == b"" for s in silent)


# -- discovery's early observation: made in the background for the name the host's pair gives,
# then only the sockets that changed since are handshaken again; never used for another name.
def _listener(server: Server, inode: int) -> Listener:
    return Listener("127.0.0.1", server.port, 10, "wazo-auth", "python3", inode)


def _handshakes(expected: tuple[int, ...], *servers: Server) -> tuple[int, ...]:
    """The servers' handshake counts, once they are expected or after 5 s (a client may finish
    its handshake a moment before the server's thread counts it)."""
    counts: tuple[int, ...] = ()
    for _ in range(100):
        counts = tuple(server.handshakes for server in servers)
        if counts == expected:
            break
        time.sleep(0.05)
    return counts


def test_an_early_observation_spares_the_handshakes_of_unchanged_sockets(
        serve: Callable[..., Server], pair: tuple[Path, Path]) -> None:
    first, second = serve(*pair), serve(*pair)
    leaf = leaf_der(pair[0])
    before = [_listener(first, 1), _listener(second, 2)]
    early = discovery.Early(lambda: before, NAME)
    assert early.served(NAME) == {("127.0.0.1", first.port, 1): leaf,
                                  ("127.0.0.1", second.port, 2): leaf}
    assert _handshakes((1, 1), first, second) == (1, 1)
    # second's socket was replaced since (another inode): only it is handshaken again
    now = [_listener(first, 1), _listener(second, 3)]
    seen = discovery.observe(now, [leaf], NAME, early=early)
    assert [o.endpoint.port for o in seen] == sorted([first.port, second.port])
    assert _handshakes((1, 2), first, second) == (1, 2)


def test_an_early_observation_for_another_name_is_not_used(
        serve: Callable[..., Server], pair: tuple[Path, Path]) -> None:
    server = serve(*pair)
    early = discovery.Early(lambda: [_listener(server, 1)], "other.example.test")
    seen = discovery.observe([_listener(server, 1)], [leaf_der(pair[0])], NAME, early=early)
    assert [o.endpoint.port for o in seen] == [server.port] and _handshakes((2,), server) == (2,)


def test_a_failed_early_observation_is_not_fatal(serve: Callable[..., Server],
                                                 pair: tuple[Path, Path]) -> None:
    server = serve(*pair)

    def broken() -> list[Listener]:
        raise OSError("no /proc")

    early = discovery.Early(broken, NAME)
    assert early.served(NAME) == {}
    assert [o.endpoint.port for o in discovery.observe([_listener(server, 1)],
                                                       [leaf_der(pair[0])], NAME, early=early)] \
        == [server.port]


def test_configured_ports_are_not_handshaken_by_observation(
        serve: Callable[..., Server], pair: tuple[Path, Path]) -> None:
    """They are probed as endpoints; observation only adds what the configuration leaves out."""
    configured, other = serve(*pair), serve(*pair)
    found = [_listener(configured, 1), _listener(other, 2)]
    early = discovery.Early(lambda: found, NAME, configured=[configured.port])
    seen = discovery.observe(found, [leaf_der(pair[0])], NAME, early=early,
                             configured={configured.port})
    assert [o.endpoint.port for o in seen] == [other.port]
    assert _handshakes((0, 1), configured, other) == (0, 1)
