"""Every TLS endpoint that serves Wazo's pair: what the configuration names, and what is observed
listening and serving it (a daemon no configuration certbot-wazo reads names, one outside
wazo-service's groups), each named by its systemd unit."""
from __future__ import annotations

import dataclasses
import logging
import threading
from typing import Callable, Collection, Optional, Sequence

from certbot_wazo import listeners, tls
from certbot_wazo.errors import HostError
from certbot_wazo.listeners import Listener
from certbot_wazo.tls import Connect, Endpoint

logger = logging.getLogger(__name__)

# One handshake per listening port, all at once, within HANDSHAKE_TIMEOUT. A TLS service on
# loopback answers in milliseconds; a plain-text one waiting for its request line (Wazo's
# daemons on their HTTP ports: cheroot, through xivo-lib-python's xivo/wsgi.py) never does. A
# deployment waits the whole bound for it (a silent port is not assumed plain-text: what it
# misses keeps the old certificate); during a renewal that wait overlaps certbot's ACME exchange
# (Early). `status` only reports, and gives silent ports REPORT_QUIET_AFTER (or four times the
# slowest TLS answer of its pass on a loaded host).
# The ports the configuration names are not handshaken here: they are probed as endpoints, and
# what observation adds is only what the configuration leaves out (see beyond()).
HANDSHAKE_TIMEOUT = 1.0
REPORT_QUIET_AFTER = 0.05


@dataclasses.dataclass(frozen=True)
class Observed:
    """A listener seen serving one of Wazo's pairs."""

    endpoint: Endpoint
    listener: Listener
    served: bytes


def _key(address: str, port: int) -> tuple[str, int]:
    """One probe per port on loopback (IPv4 and IPv6 wildcards are the same service)."""
    loopback = address in ("127.0.0.1", "::1") or address.startswith("127.")
    return ("loopback" if loopback else address, port)


def candidates(found: Sequence[Listener]) -> list[tuple[Endpoint, Listener]]:
    """Where to handshake each listener from the host itself, one per port on loopback, IPv4
    first; sorted by port, so the same host gives the same list."""
    unique: dict[tuple[str, int], tuple[Endpoint, Listener]] = {}
    for listener in sorted(found, key=lambda x: (x.port, ":" in x.address, x.address)):
        address = listeners.reachable(listener.address)
        if address is None:
            continue
        unique.setdefault(_key(address, listener.port),
                          (Endpoint(address, listener.port, listener.unit), listener))
    return sorted(unique.values(), key=lambda pair: (pair[0].port, pair[0].address))


class Early:
    """An observation started before it is needed, in the background: certbot prepares its
    installer before it talks to the ACME server, and the handshakes overlap that exchange.
    When the observation is needed, only the listeners whose socket changed since are
    handshaken again, and none of it is used if the name it was made with is not the one
    deployed (a server may choose its certificate by that name)."""

    def __init__(self, listen: Callable[[], list[Listener]], hostname: str,
                 connect: Connect = tls.direct, timeout: float = HANDSHAKE_TIMEOUT,
                 quiet_after: Optional[float] = None, configured: Collection[int] = ()) -> None:
        self.hostname = hostname
        self._found: list[Listener] = []
        self._served: dict[Endpoint, bytes] = {}

        def run() -> None:
            try:
                self._found = listen()
                pairs = [p for p in candidates(self._found) if p[0].port not in configured]
                self._served = tls.served_leaves([e for e, _ in pairs], hostname, timeout,
                                                 connect, quiet_after=quiet_after)
            except Exception as exc:  # a guess made early: never fatal, just not used
                logger.debug("the early observation failed: %s", exc)
                self._found, self._served = [], {}

        self._thread = threading.Thread(target=run, name="certbot-wazo observation",
                                        daemon=True)
        self._thread.start()

    def served(self, hostname: str) -> dict[tuple[str, int, int], bytes]:
        """What each listening socket served, by (address, port, inode); empty when the
        observation was made for another name, or failed.

        :param hostname: the name the observation is needed for
        """
        self._thread.join()
        if hostname != self.hostname:
            return {}
        return {(listener.address, listener.port, listener.inode): self._served[endpoint]
                for endpoint, listener in candidates(self._found)
                if listener.inode and endpoint in self._served}


def observe(found: Sequence[Listener], wazo_leaves: Collection[bytes], hostname: str,
            connect: Connect = tls.direct, timeout: float = HANDSHAKE_TIMEOUT,
            quiet_after: Optional[float] = None, early: Optional[Early] = None,
            configured: Collection[int] = ()) -> list[Observed]:
    """The listeners that serve one of wazo_leaves (the pair installed now, the one being
    deployed, Wazo's own self-signed one), each with the leaf it serves.

    Every listening port is handshaken once, concurrently (a plain-text service fails at
    once, or stays silent until timeout; with quiet_after, see REPORT_QUIET_AFTER), but the
    configured ones (probed as endpoints anyway); with early, only those whose socket is not the
    one early saw.
    """
    leaves = {leaf for leaf in wazo_leaves if leaf}
    if not leaves:
        return []
    pairs = [pair for pair in candidates(found) if pair[0].port not in configured]
    known = early.served(hostname) if early is not None else {}
    served = {endpoint: known[(listener.address, listener.port, listener.inode)]
              for endpoint, listener in pairs
              if listener.inode and (listener.address, listener.port, listener.inode) in known}
    served.update(tls.served_leaves([endpoint for endpoint, _ in pairs if endpoint not in served],
                                    hostname, timeout, connect, quiet_after=quiet_after))
    seen = [Observed(endpoint, listener, served.get(endpoint, b""))
            for endpoint, listener in pairs if served.get(endpoint, b"") in leaves]
    logger.debug("observed %d listening port(s) (%d seen early), %d serving Wazo's pair: %s",
                 len(pairs), len(known), len(seen),
                 ", ".join(f"{o.endpoint} ({o.listener.owner})" for o in seen))
    return seen


def beyond(configured: Sequence[Endpoint], observed: Sequence[Observed]) -> list[Observed]:
    """The observed endpoints on a port no configured endpoint names (one probe per port)."""
    known = {e.port for e in configured}
    return [o for o in observed if o.endpoint.port not in known]


def require_units(extra: Sequence[Observed]) -> None:
    """Every endpoint only observation found must belong to a systemd unit: it is restarted by
    that unit's name.

    :raises HostError: one belongs to none (a process started by hand, another namespace)
    """
    for one in extra:
        if not one.listener.unit:
            raise HostError(
                f"{one.endpoint}: {one.listener.owner} serves Wazo's certificate there, and it "
                "belongs to no systemd service, so certbot-wazo cannot restart it onto the new "
                "one (run it as a service, or stop it; nothing was changed)")


def describe(extra: Sequence[Observed]) -> list[str]:
    """One warning per endpoint only observation found (so the corpus can be completed)."""
    return [f"{o.endpoint.address}:{o.endpoint.port}: {o.listener.unit} serves Wazo's "
            "certificate there, but no configuration certbot-wazo reads names that listener: "
            f"it is restarted (systemctl restart {o.listener.unit}) and probed with the others "
            "(please report it to certbot-wazo so that its release corpus names it)"
            for o in extra]
