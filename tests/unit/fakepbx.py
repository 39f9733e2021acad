"""A fake Wazo at the `services` and `tls` seams: commands recorded, endpoints that serve what the
last restart loaded. For unit tests of the core; the end-to-end suite keeps real daemons."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Optional, Sequence

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from certbot_wazo import access, failpoints, hosts, tls
from certbot_wazo.errors import CommandError
from certbot_wazo.host import HOSTS_BASE, HOSTS_CUSTOM, Host
from certbot_wazo.listeners import Listener
from certbot_wazo.tls import Endpoint, ProbeResult

COMMANDS = ("usr/bin/wazo-service", "usr/sbin/xivo-update-config", "bin/systemctl",
            "usr/sbin/asterisk")


# The service lists in the form of upstream's script (wazo-platform/wazo-service, tag wazo-18.03,
# bin/wazo-service: shell variables, each group adding to the previous), with the daemons of the
# testdata trees in them.
WAZO_SERVICE = """#!/bin/sh
xivo_services="xivo-dxtora xivo-provd xivo-agid asterisk xivo-amid xivo-agentd xivo-dird xivo-websocketd"
default_services="wazo-plugind xivo-sysconfd xivo-confd xivo-auth wazo-auth wazo-phoned $xivo_services"
all_services="rabbitmq-server consul postgresql nginx $default_services"
exit 0
"""


class Killed(BaseException):
    """The process died at a failpoint (a power cut): no except clause of the product sees it."""


class FakePBX:
    """Wazo's commands and endpoints on a tree under root.

    A restart command makes every endpoint serve what server.crt holds at that moment;
    xivo-update-config renders /etc/hosts from the hosts template, as Wazo's does.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.host = Host(root)
        self.commands: list[list[str]] = []
        self.failing: set[str] = set()     # commands (basename or verb) that exit 1
        self.restarts_fail_from: Optional[int] = None  # the Nth restart command on exits 1
        self.broken: set[int] = set()      # ports that never serve a new pair after a restart
        self.stubborn: set[int] = set()    # ports only `wazo-service restart all` reloads
        self.probes: list[tuple[str, float, bool, bytes]] = []  # (name, timeout, verify, expect)
        self.kill_at: Optional[str] = None  # a failpoint name: Killed is raised there
        self.served: dict[int, bytes] = {}
        # Ports only observation finds (no configuration names them), by systemd unit: only a
        # `systemctl restart UNIT` naming them reloads them (they are in no wazo-service group).
        self.extra: dict[int, str] = {}
        for command in COMMANDS:
            path = root / command
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(WAZO_SERVICE if command.endswith("wazo-service") else
                            "#!/bin/sh\nexit 0\n")
            path.chmod(0o755)
        leaf = self.installed_leaf()
        self.served = {e.port: leaf for e in self.host.endpoints()}
        self.run([str(root / "usr/sbin/xivo-update-config")], 1.0)  # as Wazo's install left it
        self.commands.clear()

    def installed_leaf(self) -> bytes:
        """The leaf server.crt holds now (what a restarted service would load)."""
        crt = self.host.cert_dirs()[0] / "server.crt"
        return x509.load_pem_x509_certificate(crt.read_bytes()).public_bytes(Encoding.DER)

    # -- the seams ----------------------------------------------------------------------------
    def run(self, argv: Sequence[str], timeout: float, secret: object = None) -> str:
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise TypeError(f"run: timeout {timeout!r}")  # the real one would never end
        self.commands.append(list(argv))
        name = Path(argv[0]).name
        late = self.restarts_fail_from is not None and name != "xivo-update-config" and \
            len(self.restarts()) >= self.restarts_fail_from
        if late or name in self.failing or any(a in self.failing for a in argv[1:]):
            raise CommandError(f"{argv[0]}: '{' '.join(argv[1:])}' exited with status 1: failed "
                               "(run it by hand to see why, fix that, then run again)")
        if name == "xivo-update-config":
            template = self.root / HOSTS_CUSTOM.lstrip("/")
            if not template.exists():
                template = self.root / HOSTS_BASE.lstrip("/")
            rendered = hosts.render(template.read_text(), self.host.common_conf())
            (self.root / "etc/hosts").write_text(rendered)
        else:
            leaf = self.installed_leaf()
            everything = list(argv[1:]) == ["restart", "all"]
            for port in self.served:
                if port in self.extra and self.extra[port] not in argv[2:] and not (
                        everything and f" {self.extra[port]} " in
                        Path(argv[0]).read_text().replace('"', " ")):
                    continue  # restarted only by its name, or by `restart all` that lists it
                if port not in self.broken and (everything or port not in self.stubborn):
                    self.served[port] = leaf
        return ""

    def add_extra(self, port: int, unit: str) -> None:
        """A daemon no configuration names, serving what server.crt holds now on port."""
        self.extra[port] = unit
        self.served[port] = self.installed_leaf()

    def listeners(self) -> list[Listener]:
        """What listens: every endpoint's port, the extra ones with their unit."""
        return [Listener("0.0.0.0", port, 1000 + port, self.extra.get(port, ""), "python3")
                for port in sorted(self.served)]

    def served_leaves(self, endpoints: Sequence[Endpoint], hostname: str, timeout: float,
                      connect: object = None,
                      quiet_after: Optional[float] = None) -> dict[Endpoint, bytes]:
        return {e: self.served.get(e.port, b"") for e in endpoints}

    def probe_until(self, endpoints: Sequence[Endpoint], hostname: str, expect_der: bytes,
                    timeout: float, verify: bool = True, interval: float = 0.05,
                    connect: object = None) -> list[ProbeResult]:
        # What the real probe needs of its arguments (tls.probe_until), checked as strictly.
        if not isinstance(hostname, str) or not hostname:
            raise TypeError(f"probe_until: hostname {hostname!r}")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise TypeError(f"probe_until: timeout {timeout!r}")
        if not isinstance(expect_der, bytes):
            raise TypeError(f"probe_until: expect_der {expect_der!r}")
        self.probes.append((hostname, float(timeout), bool(verify), expect_der))
        results = []
        for endpoint in endpoints:
            served = self.served.get(endpoint.port, b"")
            fingerprint = hashlib.sha256(served).hexdigest()
            ok = served == expect_der
            detail = "serves the expected certificate" if ok else \
                f"still serves another certificate (sha256 {fingerprint[:16]}…)"
            if ok and verify and not _verifies(served, hostname):
                ok, detail = False, f"serves the new certificate that does not verify for {hostname}"
            results.append(ProbeResult(endpoint, ok, detail, fingerprint))
        return results

    def hit(self, name: str) -> None:
        if name == self.kill_at:
            raise Killed(name)

    # -- what tests look at -------------------------------------------------------------------
    def restarts(self) -> list[list[str]]:
        """The commands run, xivo-update-config left out."""
        return [c for c in self.commands if not c[0].endswith("xivo-update-config")]

    def serves(self, der: bytes) -> bool:
        """Every endpoint serves this leaf."""
        return all(leaf == der for leaf in self.served.values())


def _verifies(der: bytes, hostname: str) -> bool:
    """Whether the system trust store (the test CA) would accept this leaf for hostname: not
    self-signed, and named for it."""
    leaf = x509.load_der_x509_certificate(der)
    if leaf.issuer == leaf.subject:
        return False
    names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return hostname in names.get_values_for_type(x509.DNSName)


def install(monkeypatch: pytest.MonkeyPatch, root: Path) -> FakePBX:
    """A FakePBX on root, wired into certbot_wazo's services, tls and failpoints seams."""
    pbx = FakePBX(root)
    monkeypatch.setattr(access, "run", pbx.run)  # what LocalAccess.run runs
    monkeypatch.setattr(tls, "probe_until", pbx.probe_until)
    monkeypatch.setattr(tls, "served_leaves", pbx.served_leaves)
    monkeypatch.setattr(access.LocalAccess, "listeners", lambda self: pbx.listeners())
    monkeypatch.setattr(failpoints, "hit", pbx.hit)
    monkeypatch.delenv(failpoints.ENV, raising=False)
    return pbx


def tree_state(root: Path, skip: tuple[str, ...] = ("var",)) -> dict[str, object]:
    """Every path under root: bytes, link target or "dir", with mode and owner."""
    state: dict[str, object] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            relative = str(path.relative_to(root))
            if relative.startswith(skip):
                continue
            st = path.lstat()
            content: object = os.readlink(path) if path.is_symlink() else \
                "dir" if path.is_dir() else path.read_bytes()
            state[relative] = (content, st.st_mode, st.st_uid, st.st_gid)
    return state
