"""Wazo upgrades, simulated on hosts built from the releases' facts, repaired with no human:
`certbot-wazo repair` (run by wazo-upgrade's post-start.d hook and by a dpkg trigger) ends with
a healthy status and every endpoint serving the deployed lineage.

What an upgrade does, from upstream (tests/data/upstream-notes/upgrades.yml):
- packaged configuration files are replaced (wazo-upgrade installs with --force-confnew), files
  that no package owns (conf.d overrides, /etc/xivo/custom*, the state directory) stay;
- 24.01: wazo-certs' preinst copies /usr/share/xivo-certs/server.{crt,key} into
  /usr/share/wazo-certs on its first install, then wazo-upgrade's
  pre-start.d/40-remove-unused-packages.sh purges xivo-certs, whose postrm removes the pair
  (wazo-platform/wazo-certs wazo-24.01, debian/wazo-certs.preinst; wazo-platform/wazo-upgrade
  wazo-24.01, pre-start.d/40-remove-unused-packages.sh);
- the certificate package's postinst makes a self-signed pair when a file is missing, then
  resets owner and modes (wazo-platform/wazo-certs wazo-24.04, debian/wazo-certs.postinst).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Iterator

import pytest

from tests.pki import CA
from tests.sandbox.certbot import lineage
from tests.sandbox.host import SandboxHost
from tests.sandbox.release import NAME, build_release

from .test_releases import _leaf_der, _postinst_configure

CLI = Path(sys.executable).with_name("certbot-wazo")
# What an upgrade leaves alone: files no package owns.
KEPT = ("var/lib/certbot-wazo", "etc/xivo/custom", "etc/xivo/custom-templates")


@pytest.fixture(scope="module")
def ca() -> CA:
    return CA("Upgrades")


@pytest.fixture
def hosts() -> Iterator[list[SandboxHost]]:
    made: list[SandboxHost] = []
    yield made
    for host in made:
        host.stop()


def _cli(host: SandboxHost, bundle: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(host.env(), SSL_CERT_FILE=str(bundle))
    env.pop("SSL_CERT_DIR", None)
    return subprocess.run([str(CLI), *args, "--root", str(host.root)], capture_output=True,
                          text=True, timeout=300, env=env, check=False)


def _deployed(host: SandboxHost, ca: CA, tmp: Path, bundle: Path) -> tuple[Path, bytes]:
    config = tmp / "letsencrypt"
    live = lineage(config, ca.issue(tmp / "pair", names=[NAME]), NAME)
    result = _cli(host, bundle, "deploy", "--lineage", str(live), "--hostname", NAME,
                  "--probe-timeout", "30")
    assert result.returncode == 0, result.stderr
    return config, _leaf_der(live / "fullchain.pem")


def _upgrade(host: SandboxHost, release: str) -> SandboxHost:
    """The host after `wazo-upgrade` to release: the new release's packaged tree, the old
    host's own files kept, the pair carried by wazo-certs' preinst, xivo-certs purged."""
    host.stop()
    old = host.root.with_name(host.root.name + ".old")
    host.root.rename(old)
    new = build_release(host.root, release, NAME)
    for kept in KEPT:
        if (old / kept).exists():
            shutil.rmtree(new.root / kept, ignore_errors=True)
            shutil.copytree(old / kept, new.root / kept, symlinks=True)
    for conf_d in old.glob("etc/*/conf.d"):  # overrides: no package owns them
        target = new.root / conf_d.relative_to(old)
        if target.is_dir():
            for item in conf_d.iterdir():
                if not (target / item.name).exists() and not (target / item.name).is_symlink():
                    shutil.copy2(item, target / item.name, follow_symlinks=False)
    hosts = old / "etc/hosts"
    shutil.copy2(hosts, new.root / "etc/hosts")  # rebuilt from the templates by the upgrade
    # The pair is made by the postinst, owned by no package: it stays through an upgrade of
    # its package, and wazo-certs' preinst copies it from xivo-certs on its first install.
    old_certs = old / "usr/share/xivo-certs"
    new_certs = next(new.root / d for d in ("usr/share/xivo-certs", "usr/share/wazo-certs")
                     if (new.root / d).is_dir())
    for name in ("server.crt", "server.key"):
        shutil.copy2(old_certs / name, new_certs / name)
    _postinst_configure(new, 0o644)
    shutil.rmtree(old)
    return new


@pytest.mark.parametrize(("before", "after", "repaired"),
                         [("18.03", "19.17", True), ("23.16", "24.16", False)])
def test_an_upgrade_ends_healthy_with_no_human(before: str, after: str, repaired: bool, ca: CA,
                                               tmp_path: Path, hosts: list[SandboxHost]) -> None:
    """18.03 -> 19.17 adds daemons (wazo-phoned, wazo-setupd, ...) that lack the overrides:
    repaired. 23.16 -> 24.16 moves the pair to wazo-certs with its preinst: healthy as is."""
    host = build_release(tmp_path / "root", before, NAME)
    hosts.append(host)
    host.start()
    bundle = ca.trust_bundle(tmp_path / "trust.pem")
    config, leaf = _deployed(host, ca, tmp_path, bundle)
    upgraded = _upgrade(host, after)
    hosts.append(upgraded)
    upgraded.start()
    result = _cli(upgraded, bundle, "repair", "--config-dir", str(config), "--hostname", NAME,
                  "--probe-timeout", "30")
    assert result.returncode == 0, result.stdout + result.stderr
    assert ("Repaired: the host is healthy" in result.stdout) == repaired, result.stdout
    for unit in upgraded.endpoints:
        assert upgraded.served_cert(unit) == leaf, unit
    status = _cli(upgraded, bundle, "status", "--config-dir", str(config), "--hostname", NAME)
    assert status.returncode == 0, status.stdout
    assert f"release {after}" in status.stdout
    again = _cli(upgraded, bundle, "repair", "--config-dir", str(config), "--hostname", NAME)
    assert again.returncode == 0 and "nothing to repair" in again.stdout, again.stdout


@pytest.mark.parametrize("release", ["24.16"])
def test_a_wazo_certs_reinstall_is_repaired(release: str, ca: CA, tmp_path: Path,
                                            hosts: list[SandboxHost]) -> None:
    """remove (postrm deletes the pair) then install (postinst makes a self-signed one):
    repair puts the deployed lineage back and restarts; revert history is kept."""
    host = build_release(tmp_path / "root", release, NAME)
    hosts.append(host)
    host.start()
    bundle = ca.trust_bundle(tmp_path / "trust.pem")
    config, leaf = _deployed(host, ca, tmp_path, bundle)
    for name in ("server.key", "server.crt"):
        (host.certs_dir / name).unlink()
    _postinst_configure(host, 0o644)
    broken = _cli(host, bundle, "status", "--config-dir", str(config), "--hostname", NAME)
    assert broken.returncode == 1
    result = _cli(host, bundle, "repair", "--config-dir", str(config), "--hostname", NAME,
                  "--probe-timeout", "30")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Repairing: " in result.stdout and "Repaired: the host is healthy" in result.stdout
    for unit in host.endpoints:
        assert host.served_cert(unit) == leaf, unit
    key = host.certs_dir / "server.key"
    assert os.stat(key).st_mode & 0o007 == 0


def test_repair_without_a_deployment_says_so(ca: CA, tmp_path: Path,
                                             hosts: list[SandboxHost]) -> None:
    host = build_release(tmp_path / "root", "25.17", NAME)
    hosts.append(host)
    host.start()
    bundle = ca.trust_bundle(tmp_path / "trust.pem")
    result = _cli(host, bundle, "repair", "--config-dir", str(tmp_path / "none"))
    assert result.returncode == 1
    assert "no deployment to repair (deploy first" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_services_still_starting_are_waited_for_not_restarted(ca: CA, tmp_path: Path,
                                                              hosts: list[SandboxHost]) -> None:
    """wazo-upgrade runs post-start.d right after `wazo-service restart`: a service that
    listens a few seconds later is waited for (the probe timeout), not restarted again."""
    host = build_release(tmp_path / "root", "24.16", NAME)
    hosts.append(host)
    host.start()
    bundle = ca.trust_bundle(tmp_path / "trust.pem")
    config, leaf = _deployed(host, ca, tmp_path, bundle)
    unit = next(u for u in host.endpoints if not u.startswith("nginx"))
    assert host.run("systemctl", "stop", unit).returncode == 0
    events = len(host.events())
    later = threading.Timer(3.0, host.run, ("systemctl", "start", unit))
    later.start()
    try:
        result = _cli(host, bundle, "repair", "--config-dir", str(config), "--hostname", NAME,
                      "--probe-timeout", "30")
    finally:
        later.join()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "nothing to repair" in result.stdout, result.stdout
    assert host.events()[events:] == [f"start {unit}"]
    assert host.served_cert(unit) == leaf
