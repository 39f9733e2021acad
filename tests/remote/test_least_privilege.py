"""Least privilege at both ends: a target that refuses root logins (PermitRootLogin no), reached
as an unprivileged account with the README's sudoers line (`--sudo`), and a controller that is
not root (owners and modes of the host's files kept as data, never as file ownership here)."""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from tests.pki import CA
from tests.remote.test_remote import REPO, Legacy, cw, leaf_of, serves
from tests.sandbox.host import build_host, keep_pristine
from tests.sandbox.remote import ADMIN, SSH, Targets

NOBODY = 65534


@pytest.fixture(scope="module")
def trust(ca: CA) -> Iterator[Path]:
    """The test CA's bundle, where any user can read it."""
    directory = Path(tempfile.mkdtemp(prefix="cw-trust-"))
    directory.chmod(0o755)
    bundle = ca.trust_bundle(directory / "trust.pem")
    bundle.chmod(0o644)
    yield bundle
    shutil.rmtree(directory)


@pytest.fixture(scope="module")
def guarded(targets: Targets, tmp_path_factory: pytest.TempPathFactory) -> Legacy:
    target = targets.add("guarded", lambda root: build_host(root, "legacy"), sudo=True)
    pristine = tmp_path_factory.mktemp("pristine")
    keep_pristine(target.root, pristine)
    return Legacy(targets, target, pristine)


@pytest.fixture
def fresh(guarded: Legacy, trust: Path, monkeypatch: pytest.MonkeyPatch) -> Legacy:
    monkeypatch.setenv("SSL_CERT_FILE", str(trust))
    guarded.reset()
    return guarded


def test_a_host_refusing_root_logins_is_deployed_with_sudo(fresh: Legacy, ca: CA,
                                                           tmp_path: Path) -> None:
    targets, target = fresh.targets, fresh.target
    root_login = subprocess.run([SSH, "-F", str(targets.ssh_config), f"root@{target.name}", "true"],
                                capture_output=True, text=True, timeout=30, check=False)
    assert root_login.returncode == 255 and "Permission denied" in root_login.stderr
    fullchain, _ = ca.issue(tmp_path / "lineage")
    args = ["--ssh", target.destination, "--root", str(target.root), "--lineage",
            str(tmp_path / "lineage")]

    without = cw(targets, "deploy", *args)
    assert without.returncode == 1, without.stdout + without.stderr
    lines = without.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{target.destination}"), without.stderr

    earlier = len(target.commands())
    result = cw(targets, "deploy", *args, "--sudo")
    assert result.returncode == 0, result.stdout + result.stderr
    assert serves(targets, target, leaf_of(fullchain))
    ours = target.commands()[earlier:]
    assert ours and all(c.startswith("sudo -n -- sh -c ") for c in ours)
    key = (target.root / "usr/share/xivo-certs/server.key").stat()
    assert (key.st_mode & 0o777, key.st_uid, key.st_gid) == (0o640, 0, 33)
    status = cw(targets, "status", "--ssh", target.destination, "--root", str(target.root),
                "--sudo")
    assert status.returncode == 0, status.stdout + status.stderr
    assert f"{ADMIN}@" in status.stdout


def test_a_controller_that_is_not_root(fresh: Legacy, ca: CA, trust: Path) -> None:
    """certbot-wazo as nobody on the controller (Debian's python3, a copy of the package it can
    reach, its own ssh key and ledger), deploying through sudo: the host's key is root:www-data
    0640 there, and nothing of the controller's belongs to root."""
    targets, target = fresh.targets, fresh.target
    home = Path(tempfile.mkdtemp(prefix="cw-nobody-"))
    try:
        shutil.copytree(REPO / "certbot_wazo", home / "code" / "certbot_wazo",
                        ignore=shutil.ignore_patterns("__pycache__"))
        fullchain, _ = ca.issue(home / "lineage")
        shutil.copy(targets.client_key, home / "key")
        shutil.copy(targets.known_hosts, home / "known_hosts")
        config = targets.ssh_config.read_text().replace(str(targets.client_key), str(home / "key"))
        (home / "ssh_config").write_text(config.replace(str(targets.known_hosts),
                                                        str(home / "known_hosts")))
        (home / "tmp").mkdir()
        for directory, _, names in os.walk(home):
            os.chown(directory, NOBODY, NOBODY)
            for name in names:
                os.chown(Path(directory) / name, NOBODY, NOBODY, follow_symlinks=False)
        (home / "key").chmod(0o600)
        env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(home / "code"), "HOME": str(home),
               "TMPDIR": str(home / "tmp"), "SSL_CERT_FILE": str(trust),
               "CERTBOT_WAZO_CONTROLLER_DIR": str(home / "ledger")}
        result = subprocess.run(
            ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
             "/usr/bin/python3", "-m", "certbot_wazo.cli", "deploy", "--ssh", target.destination,
             "--root", str(target.root), "--sudo", "--lineage", str(home / "lineage"),
             "--ssh-config", str(home / "ssh_config")],
            capture_output=True, text=True, timeout=300, check=False, cwd=home, env=env)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "Traceback" not in result.stderr
        assert serves(targets, target, leaf_of(fullchain))
        key = (target.root / "usr/share/xivo-certs/server.key").stat()
        assert (key.st_mode & 0o777, key.st_uid, key.st_gid) == (0o640, 0, 33)
        mine = [p for p in home.rglob("*") if p.lstat().st_uid != NOBODY]
        assert mine == [] and list((home / "tmp").iterdir()) == []  # the mirror is gone
        assert len(list((home / "ledger").iterdir())) == 1
    finally:
        shutil.rmtree(home)
