"""Through real certbot (Debian's 2.1 and the newest) and pebble: install, renew, idempotency, rollback."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from cryptography.hazmat.primitives.serialization import Encoding

from certbot_wazo.pair import load_chain
from tests.sandbox.certbot import Certbot
from tests.sandbox.host import SandboxHost
from tests.sandbox.tree import differences, snapshot

CertbotFactory = Callable[[str], Certbot]


def leaf_of(path: Path) -> bytes:
    return load_chain(path.read_bytes(), path)[0].public_bytes(Encoding.DER)


def serves(host: SandboxHost, path: Path) -> bool:
    leaf = leaf_of(path)
    return all(host.served_cert(unit) == leaf for unit in host.endpoints)


def wazo_args(host: SandboxHost) -> list[str]:
    return ["-i", "wazo", "--wazo-root", str(host.root), "--wazo-probe-timeout", "10"]


def obtain(cb: Certbot, host: SandboxHost) -> None:
    result = cb.run("run", *cb.standalone_args(), *wazo_args(host), "-d", host.name)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Deployed certificate" in result.stdout + result.stderr


def restart_alls(host: SandboxHost) -> int:
    """Documented restarts (every service, asterisk included)."""
    return sum(1 for argv in host.commands() if argv[-2:] == ["restart", "all"])


def gentle_reloads(host: SandboxHost) -> int:
    """Certificate-only deployments (asterisk's HTTPS reloaded, not restarted)."""
    return sum(1 for argv in host.commands() if argv[1:] == ["-rx", "module reload http"])


def test_legacy_install_renew_reinstall(legacy_host: SandboxHost, certbot: CertbotFactory,
                                        certbot_variant: str) -> None:
    cb, host = certbot(certbot_variant), legacy_host
    obtain(cb, host)
    live = cb.live(host.name)
    assert serves(host, live / "fullchain.pem")
    assert restart_alls(host) == 1
    renewal = (cb.config_dir / "renewal" / f"{host.name}.conf").read_text()
    assert "installer = wazo" in renewal and f"wazo_root = {host.root}" in renewal

    # renew never calls deploy_cert: the new pair arrives through renew_deploy, and only the
    # pair changed: what reads it is reloaded, nothing else restarted.
    starts = host.asterisk_starts()
    result = cb.run("renew", "--force-renewal")
    assert result.returncode == 0, result.stderr[-2000:]
    assert serves(host, live / "fullchain.pem")
    assert (restart_alls(host), gentle_reloads(host)) == (1, 1)
    assert host.asterisk_starts() == starts

    # Installing the pair that is already there changes nothing and restarts nothing.
    before, commands = snapshot(host.root), host.commands()
    result = cb.run("install", "--cert-name", host.name, *wazo_args(host))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "already deployed" in result.stdout + result.stderr
    assert differences(before, snapshot(host.root)) == []
    assert [c for c in host.commands() if c not in commands] == []


def test_modern_install(modern_host: SandboxHost, certbot: CertbotFactory,
                        certbot_variant: str) -> None:
    cb, host = certbot(certbot_variant), modern_host
    starts = host.asterisk_starts()
    obtain(cb, host)
    assert serves(host, cb.live(host.name) / "fullchain.pem")
    assert host.asterisk_starts() == starts
    assert not (host.root / "etc/xivo/custom/custom-certificate.yml").exists()


def test_renewal_that_fails_is_rolled_back(legacy_host: SandboxHost, certbot: CertbotFactory,
                                           certbot_variant: str) -> None:
    cb, host = certbot(certbot_variant), legacy_host
    obtain(cb, host)
    previous = {unit: host.served_cert(unit) for unit in host.endpoints}
    before = snapshot(host.root)
    host.fault("xivo-confd.stale")
    result = cb.run("renew", "--force-renewal")
    assert result.returncode != 0
    assert "not deployed, the previous certificate was restored" in result.stderr
    assert {unit: host.served_cert(unit) for unit in host.endpoints} == previous
    assert differences(before, snapshot(host.root)) == []


def test_bad_pair_through_certbot_install(legacy_host: SandboxHost, certbot: CertbotFactory,
                                          certbot_variant: str, tmp_path: Path) -> None:
    cb, host = certbot(certbot_variant), legacy_host
    before, events = snapshot(host.root, excluded=("run", "var/log")), host.events()
    self_signed = host.certs_dir / "server.crt"
    result = cb.run("install", "--cert-path", str(self_signed), "--fullchain-path",
                    str(self_signed), "--key-path", str(host.certs_dir / "server.key"),
                    "-d", "localhost", *wazo_args(host), "--wazo-hostname", "localhost")
    assert result.returncode != 0
    assert "self-signed" in result.stderr
    assert differences(before, snapshot(host.root, excluded=("run", "var/log"))) == []
    assert host.events() == events


def test_plugin_is_listed(certbot: CertbotFactory, certbot_variant: str) -> None:
    result = certbot(certbot_variant).run("plugins", "--installers")
    assert result.returncode == 0
    assert "* wazo" in result.stdout
    assert "Wazo (XiVO) telephony server" in result.stdout


def test_certbot_rollback_restores_the_previous_deployment(
        legacy_host: SandboxHost, certbot: CertbotFactory, certbot_variant: str,
        tmp_path: Path) -> None:
    cb, host = certbot(certbot_variant), legacy_host
    obtain(cb, host)
    first = {unit: host.served_cert(unit) for unit in host.endpoints}
    before = snapshot(host.root)
    assert cb.run("renew", "--force-renewal").returncode == 0
    assert {unit: host.served_cert(unit) for unit in host.endpoints} != first
    # certbot rollback: rollback_checkpoints() then restart() on the installer.
    result = cb.run("rollback", "--checkpoints", "1", "--installer", "wazo", "--wazo-root",
                    str(host.root))
    assert result.returncode == 0, result.stderr[-2000:]
    assert {unit: host.served_cert(unit) for unit in host.endpoints} == first
    assert differences(before, snapshot(host.root)) == []
