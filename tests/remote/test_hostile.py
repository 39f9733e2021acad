"""Remote mode against a hostile host, on the real sshd targets: its records name another
customer's lineage, its links point at the controller's files, it serves FIFOs and huge files.
Each attack costs that host alone: one line and exit 1 for it, the controller's files and every
other host unchanged, the run within its bounds."""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Iterator

import pytest

from tests.pki import CA
from tests.remote.test_remote import Legacy, cw, leaf_of, remote_args, serves
from tests.sandbox.certbot import lineage
from tests.sandbox.host import build_host, keep_pristine
from tests.sandbox.remote import Targets
from tests.sandbox.tree import differences, snapshot

VICTIM = "victim.example.test"
STATE = "var/lib/certbot-wazo"


def _legacy(targets: Targets, name: str, pristine: Path) -> Legacy:
    target = targets.add(name, lambda root: build_host(root, "legacy"))
    keep_pristine(target.root, pristine)
    return Legacy(targets, target, pristine)


@pytest.fixture(scope="module")
def hosts(targets: Targets, tmp_path_factory: pytest.TempPathFactory) -> tuple[Legacy, Legacy]:
    """The hostile host, and an honest one run in the same fleet."""
    return (_legacy(targets, "evil", tmp_path_factory.mktemp("pristine-evil")),
            _legacy(targets, "honest", tmp_path_factory.mktemp("pristine-honest")))


@pytest.fixture
def evil(hosts: tuple[Legacy, Legacy], trust: Path,
         monkeypatch: pytest.MonkeyPatch) -> Iterator[Legacy]:
    monkeypatch.setenv("SSL_CERT_FILE", str(trust))
    for host in hosts:
        host.reset()
    yield hosts[0]


@pytest.fixture
def controller(tmp_path: Path, ca: CA, evil: Legacy) -> Path:
    """The controller's certbot: the hostile host's lineage, and another customer's."""
    config = tmp_path / "letsencrypt"
    lineage(config, ca.issue(tmp_path / "mine", names=[evil.target.host.name]),
            evil.target.host.name)
    lineage(config, ca.issue(tmp_path / "victim", names=[VICTIM]), VICTIM)
    return config


def _victim_key(controller: Path) -> bytes:
    return (controller / "archive" / VICTIM / "privkey1.pem").read_bytes()


def _holds(root: Path, secret: bytes) -> list[str]:
    """Every file under root whose bytes contain secret (base64 copies included)."""
    import base64
    needles = (secret, base64.b64encode(secret))
    found = []
    for directory, _, names in os.walk(root):
        for name in names:
            path = Path(directory) / name
            if path.is_file() and not path.is_symlink() and path.stat().st_size < 1 << 20:
                data = path.read_bytes()
                if any(n in data for n in needles):
                    found.append(str(path))
    return found


def test_a_hosts_records_never_make_the_controller_upload_another_customers_key(
        evil: Legacy, controller: Path) -> None:
    """failed.json naming the victim's lineage (retry), an undo log naming the victim's
    certificate (repair), a hostname claiming the victim's name (status): the victim's key
    never reaches the host and the controller's files are unchanged."""
    targets, target = evil.targets, evil.target
    mine = controller / "live" / target.host.name
    deployed = cw(targets, "deploy", *remote_args(target), "--lineage", str(mine))
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    before = snapshot(controller)
    victim = controller / "live" / VICTIM

    failed = target.root / STATE / "failed.json"
    failed.write_text(json.dumps({"version": 1, "cert": str(victim / "fullchain.pem"),
                                  "key": str(victim / "privkey.pem"), "error": "x",
                                  "failed_at": "then", "settings": {"hostname": VICTIM}}))
    retry = cw(targets, "retry", *remote_args(target))
    assert retry.returncode == 1, retry.stdout + retry.stderr
    lines = retry.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{target.destination}:")
    assert "a host's record never chooses this machine's files" in lines[0]
    failed.unlink()

    manifest = target.root / STATE / "previous/manifest.json"
    data = json.loads(manifest.read_text())
    data["meta"]["new_leaf"] = leaf_of(victim / "fullchain.pem").hex()
    data["meta"]["hostname"] = VICTIM
    manifest.write_text(json.dumps(data))
    (target.root / "etc/hosts").write_text("127.0.0.1 localhost\n")  # drift for repair
    status = cw(targets, "status", *remote_args(target), "--config-dir", str(controller))
    assert str(victim) not in status.stdout + status.stderr
    repaired = cw(targets, "repair", *remote_args(target), "--config-dir", str(controller))
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert serves(targets, target, leaf_of(mine / "fullchain.pem"))

    assert _holds(target.root, _victim_key(controller)) == []
    assert differences(before, snapshot(controller)) == []


def test_a_link_to_the_controllers_files_is_followed_on_the_host_only(
        evil: Legacy, controller: Path) -> None:
    """The host's certificate, and an nginx certificate, linked to the victim's files by their
    controller paths: the controller never reads its own files through them (the host's
    `status` knows nothing of the victim) and never copies them to the host."""
    targets, target = evil.targets, evil.target
    victim = controller / "live" / VICTIM
    certs = target.root / "usr/share/xivo-certs"
    for name, source in (("server.crt", "fullchain.pem"), ("server.key", "privkey.pem")):
        (certs / name).unlink()
        (certs / name).symlink_to(victim / source)
    before = snapshot(controller)
    status = cw(targets, "status", *remote_args(target), "--json", "--config-dir",
                str(controller))
    report = json.loads(status.stdout)
    assert VICTIM not in report.get("pair", {}).get("names", []), status.stdout
    assert report.get("hostname") != VICTIM and not report["healthy"]
    mine = controller / "live" / target.host.name
    cw(targets, "deploy", *remote_args(target), "--lineage", str(mine))
    assert _holds(target.root, _victim_key(controller)) == []
    assert differences(before, snapshot(controller)) == []


@pytest.mark.parametrize("attack", ["fifo", "huge"])
def test_special_and_huge_files_stop_that_host_alone(
        evil: Legacy, hosts: tuple[Legacy, Legacy], controller: Path, attack: str) -> None:
    """A FIFO, or a 300 MB file, where the controller reads the host's configuration: one line
    naming the host and exit 1, within the bounds; the honest host in the same run is deployed."""
    targets, target, honest = evil.targets, evil.target, hosts[1].target
    planted = target.root / "etc/nginx/planted.pem"
    if attack == "fifo":
        os.mkfifo(planted)
    else:
        with open(planted, "wb") as stream:
            stream.truncate(300 * 1024 * 1024)
    mine = controller / "live" / target.host.name
    before, started = snapshot(controller), time.monotonic()
    try:
        result = cw(targets, "deploy", *remote_args(target), "--ssh",
                    f"{honest.destination}:{honest.root}", "--lineage", str(mine),
                    timeout=240)
    finally:
        planted.unlink()
    assert time.monotonic() - started < 180
    assert result.returncode == 1, result.stdout + result.stderr
    failed = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(failed) == 1 and failed[0].startswith(f"{target.destination}") \
        and ": failed: " in failed[0] and "planted.pem" in failed[0], result.stderr
    assert len(failed[0]) < 400
    assert f"{honest.destination}:{honest.root}: deployed" in result.stdout
    assert serves(targets, honest, leaf_of(mine / "fullchain.pem"))
    assert not serves(targets, target, leaf_of(mine / "fullchain.pem"))
    assert differences(before, snapshot(controller)) == []


def test_a_host_whose_sh_lies_cannot_shape_the_controllers_files(
        targets: Targets, hosts: tuple[Legacy, Legacy], evil: Legacy, controller: Path) -> None:
    """The issue's first attack, on a real sshd: the host's /etc/xivo holds `l -> /` and
    `m -> l/<a root-only directory of the controller>`, and its sh adds to what the host's files
    are read as a 0777 directory under m. That host's run stops with one line; the controller's
    directory is unchanged, modes included; the honest host of the same run is deployed."""
    import base64
    import tempfile
    own = Path(tempfile.mkdtemp(prefix="cw-controller-"))  # 0700, root's
    try:
        (own / "secret").write_text("the controller's own\n")
        before = snapshot(own)
        evil_dir = base64.b64encode(b"etc/xivo/m/evil").decode()
        liar = targets.add("liar", lambda root: build_host(root, "legacy"),
                           lie=f"/bin/sed -u '/^END$/i D 777 0 0 0 {evil_dir}'")
        (liar.root / "etc/xivo/l").symlink_to("/")
        (liar.root / "etc/xivo/m").symlink_to(f"l{own}")
        honest = hosts[1].target
        mine = controller / "live" / evil.target.host.name
        result = cw(targets, "deploy", "--ssh", f"{liar.destination}:{liar.root}", "--ssh",
                    f"{honest.destination}:{honest.root}", "--lineage", str(mine))
        assert result.returncode == 1, result.stdout + result.stderr
        failed = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(failed) == 1 and failed[0].startswith(f"{liar.destination}:{liar.root}: "
                                                         "failed: "), result.stderr
        assert "has a symlink or a file above it" in failed[0]
        assert f"{honest.destination}:{honest.root}: deployed" in result.stdout
        assert differences(before, snapshot(own)) == []
        assert oct(own.stat().st_mode & 0o777) == "0o700" and not (own / "evil").exists()
    finally:
        shutil.rmtree(own)
