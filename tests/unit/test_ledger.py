"""The controller's ledger: a remote host's own records never choose the controller's files
(retry, repair and status's lineage hint come from the ledger), and the ledger refuses what it
cannot trust."""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from certbot_wazo import repair, status
from certbot_wazo.deployment import Deployment, Settings
from certbot_wazo.errors import HostError, WazoError
from certbot_wazo.ledger import Ledger
from certbot_wazo.pair import Pair
from certbot_wazo.records import Failure, RecordError
from tests.pki import CA
from tests.sandbox.certbot import lineage
from tests.unit.fakepbx import FakePBX, install

NAME = "wazo.example.test"
VICTIM = "victim.example.test"
DEST = "root@pbx1"
KEY = "ED25519 SHA256:first"
STATE = "var/lib/certbot-wazo"


@pytest.fixture
def legacy(monkeypatch: pytest.MonkeyPatch, legacy_root: Path) -> FakePBX:
    return install(monkeypatch, legacy_root)


def remote(pbx: FakePBX, directory: Path, host_key: str = KEY) -> Deployment:
    """A deployment whose access keeps a controller ledger, as a remote run's does."""
    d = Deployment(Settings(root=pbx.root, lock_timeout=0.0), notify=lambda m: None)
    d.access.ledger = Ledger(directory, DEST, Path("/"), host_key)
    return d


@pytest.fixture
def config_dir(tmp_path: Path, ca: CA) -> Path:
    """The controller's certbot: this host's lineage and another customer's."""
    config = tmp_path / "letsencrypt"
    lineage(config, ca.issue(tmp_path / "mine", names=[NAME]), NAME)
    lineage(config, ca.issue(tmp_path / "victim", names=[VICTIM]), VICTIM)
    return config


def test_an_entry_is_private_to_the_controller_and_names_its_host(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "l", DEST, Path("/"), KEY)
    assert ledger.read() is None
    ledger.deployed(Path("/le/live/a/fullchain.pem"), Path("/le/live/a/privkey.pem"), [NAME])
    ledger.failed(Failure(cert="/c", key="/k", error="e", failed_at="t"), ["other.test"])
    entry = ledger.read()
    assert entry is not None and entry.names == (NAME, "other.test")
    assert (entry.cert, entry.failure.cert if entry.failure else None) == \
        ("/le/live/a/fullchain.pem", "/c")
    assert stat.S_IMODE(os.stat(ledger.path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(ledger.path.parent).st_mode) == 0o700
    # another host's entry copied over this one is refused, as is junk
    other = Ledger(tmp_path / "l", "root@pbx2", Path("/"), KEY)
    other.path.write_bytes(ledger.path.read_bytes())
    with pytest.raises(RecordError, match="the ledger entry of root@pbx1, not of root@pbx2"):
        other.read()
    for junk in (b"[]", b"{", b"x" * (300 * 1024), json.dumps({"version": 99}).encode()):
        ledger.path.write_bytes(junk)
        with pytest.raises(RecordError) as refused:
            ledger.read()
        assert str(refused.value).startswith(str(ledger.path)) and "\n" not in str(refused.value)


def test_another_host_key_is_refused(tmp_path: Path) -> None:
    Ledger(tmp_path, DEST, Path("/"), KEY).deployed(Path("/c"), Path("/k"), [NAME])
    with pytest.raises(HostError, match="answers with the SSH host key ED25519 SHA256:other"):
        Ledger(tmp_path, DEST, Path("/"), "ED25519 SHA256:other").trusted()


def test_retry_never_takes_the_pair_a_hosts_record_names(legacy: FakePBX, tmp_path: Path,
                                                       config_dir: Path) -> None:
    """A hostile host rewrites its failed.json to name another customer's key: the retry is
    refused before anything is read or written, and the victim's key never reaches the host."""
    mine, victim = config_dir / "live" / NAME, config_dir / "live" / VICTIM
    legacy.failing.add("wazo-service")
    with pytest.raises(WazoError):
        remote(legacy, tmp_path / "l").run(mine / "fullchain.pem", mine / "privkey.pem",
                                           remember=True)
    legacy.failing.clear()
    record = legacy.root / STATE / "failed.json"
    data = json.loads(record.read_text())
    data.update(cert=str(victim / "fullchain.pem"), key=str(victim / "privkey.pem"))
    record.write_text(json.dumps(data))
    before = (legacy.root / "usr/share/xivo-certs/server.key").read_bytes()
    ran = len(legacy.commands)
    with pytest.raises(HostError) as refused:
        remote(legacy, tmp_path / "l").retry()
    assert str(refused.value).startswith(f"{record}: names {victim}/fullchain.pem, a pair this "
                                         "controller did not record as failed on root@pbx1")
    assert (legacy.root / "usr/share/xivo-certs/server.key").read_bytes() == before
    assert len(legacy.commands) == ran
    # the host's record put back as written: the controller's own pair is retried
    data.update(cert=str(mine / "fullchain.pem"), key=str(mine / "privkey.pem"))
    record.write_text(json.dumps(data))
    assert remote(legacy, tmp_path / "l").retry() is True
    assert legacy.serves(Pair.load(mine / "fullchain.pem", mine / "privkey.pem").leaf_der)


def test_a_failure_only_the_host_remembers_is_not_retried(legacy: FakePBX, tmp_path: Path,
                                                          config_dir: Path) -> None:
    victim = config_dir / "live" / VICTIM
    d = remote(legacy, tmp_path / "l")
    d.journal.record_failure(Failure(cert=str(victim / "fullchain.pem"),
                                     key=str(victim / "privkey.pem"), error="e", failed_at="t"))
    with pytest.raises(HostError, match="a host's record never chooses this machine's files"):
        remote(legacy, tmp_path / "l").retry()
    assert not any("restart" in " ".join(c) for c in legacy.commands)


def test_repair_deploys_only_the_pair_recorded_for_the_host(legacy: FakePBX, tmp_path: Path,
                                                            config_dir: Path) -> None:
    """The host's undo log names the victim's certificate (public, so any host can): repair
    still picks the ledger's pair; without a ledger entry it refuses; a recorded lineage that
    no longer names the host is refused too."""
    mine, victim = config_dir / "live" / NAME, config_dir / "live" / VICTIM
    with pytest.raises(HostError, match="this controller never deployed a certificate there"):
        repair.source(remote(legacy, tmp_path / "l"), config_dir)
    remote(legacy, tmp_path / "l").run(mine / "fullchain.pem", mine / "privkey.pem")
    manifest = legacy.root / STATE / "previous/manifest.json"
    data = json.loads(manifest.read_text())
    data["meta"]["new_leaf"] = Pair.load(victim / "fullchain.pem",
                                         victim / "privkey.pem").leaf_der.hex()
    manifest.write_text(json.dumps(data))
    assert repair.source(remote(legacy, tmp_path / "l"), config_dir) == \
        (mine / "fullchain.pem", mine / "privkey.pem")
    # the recorded lineage now holds another name: refused, never deployed
    (mine / "fullchain.pem").unlink()
    (mine / "fullchain.pem").symlink_to(victim / "fullchain.pem")
    with pytest.raises(HostError, match=f"names none of {NAME}"):
        repair.source(remote(legacy, tmp_path / "l"), config_dir)
    # a host reinstalled behind the same name: refused
    with pytest.raises(HostError, match="answers with the SSH host key"):
        repair.source(remote(legacy, tmp_path / "l", host_key="ED25519 SHA256:new"), config_dir)


def test_status_suggests_no_lineage_the_ledger_does_not_hold(legacy: FakePBX, tmp_path: Path,
                                                             config_dir: Path, ca: CA) -> None:
    """A host claiming a customer's name gets no `--lineage` of that customer's."""
    pair = ca.issue(tmp_path / "host", names=[VICTIM])
    Deployment(Settings(root=legacy.root, lock_timeout=0.0)).run(*pair)
    report = status.check(remote(legacy, tmp_path / "l"), config_dir)
    assert report.hostname == VICTIM and report.lineage is None
    assert not any(str(config_dir) in p for p in report.problems)
    local = status.check(Deployment(Settings(root=legacy.root)), config_dir)
    assert local.lineage is not None and local.lineage["path"].endswith(VICTIM)


def test_a_ledger_that_cannot_be_written_still_leaves_the_hosts_record(
        legacy: FakePBX, tmp_path: Path, config_dir: Path) -> None:
    """The two records are written independently: a controller whose ledger directory is
    unusable still leaves the host its failed.json (what a local retry there reads)."""
    (tmp_path / "l").write_text("a file where the ledger's directory goes")
    mine = config_dir / "live" / NAME
    legacy.failing.add("wazo-service")
    with pytest.raises(WazoError):
        remote(legacy, tmp_path / "l").run(mine / "fullchain.pem", mine / "privkey.pem",
                                           remember=True)
    record = json.loads((legacy.root / STATE / "failed.json").read_text())
    assert record["cert"] == str(mine / "fullchain.pem")


def test_status_suggests_the_ledgers_lineage_only_when_it_is_one(
        legacy: FakePBX, tmp_path: Path, config_dir: Path, ca: CA) -> None:
    """A pair deployed from outside certbot's live/ directory is no lineage to suggest."""
    loose = ca.issue(tmp_path / "loose", names=[NAME])
    remote(legacy, tmp_path / "l").run(*loose)
    assert status.check(remote(legacy, tmp_path / "l"), config_dir).lineage is None
    mine = config_dir / "live" / NAME
    remote(legacy, tmp_path / "l").run(mine / "fullchain.pem", mine / "privkey.pem")
    report = status.check(remote(legacy, tmp_path / "l"), config_dir)
    assert report.lineage is not None and report.lineage["path"] == str(mine)
