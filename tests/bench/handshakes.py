"""TLS traffic for the benchmark: client loops that count failed handshakes and outages while a
renewal runs, and TLS listeners that come up after a delay (for the probe benchmark)."""
from __future__ import annotations

import collections
import dataclasses
import socket
import ssl
import threading
import time
from pathlib import Path
from typing import Any, Optional


@dataclasses.dataclass(frozen=True)
class LoopResult:
    """What a client loop saw during one observation window."""

    address: str
    attempts: int
    failed: int
    longest_outage: float  # seconds: longest gap between successful handshakes (window edges included)
    errors: dict[str, int]  # failures by kind (ConnectionRefusedError, SSLError, ...)

    def as_json(self) -> dict[str, Any]:
        """For the JSON report (outage in milliseconds)."""
        return {"address": self.address, "attempts": self.attempts, "failed": self.failed,
                "longest_outage_ms": round(self.longest_outage * 1000, 1), "errors": self.errors}


def _client_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # a completed handshake is all that is measured
    return context


class HandshakeLoop:
    """A thread doing a fresh TLS handshake against address every `interval` seconds."""

    def __init__(self, address: str, server_name: str, interval: float = 0.005,
                 timeout: float = 1.0) -> None:
        host, port = address.rsplit(":", 1)
        self.address = address
        self.target = (host.strip("[]"), int(port))
        self.server_name = server_name
        self.interval = interval
        self.timeout = timeout
        self.context = _client_context()
        # (monotonic time the attempt ended, error kind or "" for a completed handshake)
        self.attempts: list[tuple[float, str]] = []
        # (wall-clock time, DER of the leaf served) of each completed handshake
        self.served: list[tuple[float, bytes]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"handshakes {address}", daemon=True)

    def start(self) -> None:
        """Start handshaking."""
        self._thread.start()

    def stop(self) -> None:
        """Stop and wait for the thread (at most one handshake timeout)."""
        self._stop.set()
        self._thread.join(timeout=self.timeout + 5)

    def _once(self) -> str:
        try:
            with socket.create_connection(self.target, timeout=self.timeout) as sock:
                with self.context.wrap_socket(sock, server_hostname=self.server_name) as tls:
                    self.served.append((time.time(), tls.getpeercert(binary_form=True) or b""))
                    return ""
        except (OSError, ssl.SSLError) as exc:
            return type(exc).__name__

    def _run(self) -> None:
        while not self._stop.is_set():
            error = self._once()
            self.attempts.append((time.monotonic(), error))
            self._stop.wait(self.interval)

    def __enter__(self) -> HandshakeLoop:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def failed(self) -> int:
        """Failed handshakes so far."""
        return sum(1 for _, error in list(self.attempts) if error)

    def succeeded_since(self, since: float) -> bool:
        """Whether a handshake completed after `since` (monotonic)."""
        return any(t >= since and not error for t, error in list(self.attempts))

    def result(self, start: float, end: float) -> LoopResult:
        """Failed handshakes and the longest outage between start and end (monotonic)."""
        window = [(t, error) for t, error in list(self.attempts) if start <= t <= end]
        points = [start, *(t for t, error in window if not error), end]
        errors = collections.Counter(error for _, error in window if error)
        return LoopResult(self.address, len(window), sum(errors.values()),
                          max(b - a for a, b in zip(points, points[1:])), dict(errors))


class DelayedListener:
    """A TLS listener on 127.0.0.1:port that starts listening `delay` seconds after t0."""

    def __init__(self, port: int, context: ssl.SSLContext, delay: float) -> None:
        self.port = port
        self.context = context
        self.delay = delay
        self.up_at: Optional[float] = None  # monotonic time it started listening
        self._t0 = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"listener {port}", daemon=True)

    @property
    def endpoint(self) -> str:
        """ADDR:PORT."""
        return f"127.0.0.1:{self.port}"

    def start(self, t0: float) -> None:
        """Come up at t0 + delay (monotonic)."""
        self._t0 = t0
        self._thread.start()

    def stop(self) -> None:
        """Close the listener and wait for its thread."""
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        if self._stop.wait(max(0.0, self._t0 + self.delay - time.monotonic())):
            return
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(("127.0.0.1", self.port))
            listener.listen(16)
            listener.settimeout(0.05)
            self.up_at = time.monotonic()
            while not self._stop.is_set():
                try:
                    conn, _ = listener.accept()
                except OSError:  # timeout: check the stop flag
                    continue
                conn.settimeout(2)
                try:
                    with self.context.wrap_socket(conn, server_side=True):
                        pass
                except (OSError, ssl.SSLError):
                    conn.close()


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """A server context serving the pair."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(str(cert), str(key))
    return context


def leaf_der(fullchain: Path) -> bytes:
    """DER of the first certificate of a PEM chain."""
    text = fullchain.read_text()
    end = text.index("-----END CERTIFICATE-----") + len("-----END CERTIFICATE-----")
    return ssl.PEM_cert_to_DER_cert(text[:end])
