"""The undo log: snapshots written whole or not at all, the record of how far a transaction
went, commit, the remembered failure, and the host's lock."""
from __future__ import annotations

import dataclasses
import os
import stat
from pathlib import Path

import pytest

from certbot_wazo.errors import HostError, LockBusyError
from certbot_wazo.files import FileState, apply_state, read_state
from certbot_wazo.journal import Journal, Snapshot
from certbot_wazo.records import Failure, Phase, RecordError
from tests.unit.records import RECORD


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "root/certs").mkdir(parents=True)
    (tmp_path / "root/certs/server.key").write_bytes(b"wazo's key")
    return tmp_path / "root"


@pytest.fixture
def journal(root: Path) -> Journal:
    return Journal(root / "state", lambda p: root / p.lstrip("/"))


def test_begin_saves_the_paths_and_the_original_once(root: Path, journal: Journal) -> None:
    journal.begin(["/certs/server.key", "/certs/new.yml"], RECORD)
    record = journal.open_transaction()
    assert record is not None and record.phase == Phase.INSTALLING
    apply_state(root / "certs/server.key", FileState.file(b"first", 0o640))
    journal.commit()
    journal.begin(["/certs/server.key"], RECORD)
    entries, _ = journal.original.read()
    assert dict(entries)["/certs/server.key"].data == b"wazo's key"  # not "first"
    assert journal.original_record().generation == RECORD.generation


def test_restore_puts_back_every_path_and_removes_what_was_added(root: Path,
                                                               journal: Journal) -> None:
    key = root / "certs/server.key"
    before = read_state(key)
    journal.begin(["/certs/server.key", "/certs/new.yml"], RECORD)
    apply_state(key, FileState.file(b"new", 0o600))
    apply_state(root / "certs/new.yml", FileState.file(b"x", 0o644))
    assert journal.restore(journal.transaction) == ["/certs/server.key", "/certs/new.yml"]
    assert read_state(key) == before and not (root / "certs/new.yml").exists()


def test_the_phase_is_recorded_and_the_saved_bytes_kept(journal: Journal) -> None:
    journal.begin(["/certs/server.key"], RECORD)
    journal.phase(Phase.RESTARTING)
    record = journal.open_transaction()
    assert record is not None and record.phase == Phase.RESTARTING
    entries, _ = journal.transaction.read()
    assert entries[0][1].data == b"wazo's key"


def test_saved_keys_are_as_private_as_the_key(root: Path, journal: Journal) -> None:
    journal.begin(["/certs/server.key"], RECORD)
    assert stat.S_IMODE((root / "state").stat().st_mode) == 0o700
    for blob in (root / "state").rglob("*.blob"):
        assert stat.S_IMODE(blob.stat().st_mode) == 0o600


def test_a_snapshot_caught_between_its_two_renames_is_read_from_the_copy_aside(
        journal: Journal) -> None:
    journal.begin(["/certs/server.key"], RECORD)
    snapshot = journal.transaction
    os.rename(snapshot.path, snapshot.path.parent / ".transaction.old")
    assert snapshot.exists()
    assert snapshot.read()[0][0][0] == "/certs/server.key"


def test_commit_keeps_the_transaction_as_previous_and_what_it_wrote(journal: Journal) -> None:
    journal.begin(["/certs/server.key"], RECORD)
    journal.commit()
    assert not journal.transaction.exists() and journal.previous.exists()
    assert journal.written() == RECORD.written
    assert journal.saved_generation(journal.previous) == RECORD.generation


def test_a_path_first_changed_by_a_later_deployment_joins_the_original(
        root: Path, journal: Journal) -> None:
    journal.begin(["/certs/server.key"], RECORD)
    journal.commit()
    journal.begin(["/certs/server.key", "/certs/new.yml"], RECORD)
    entries, _ = journal.original.read()
    assert [p for p, _ in entries] == ["/certs/server.key", "/certs/new.yml"]


def test_what_was_written_accumulates_over_deployments(journal: Journal) -> None:
    journal.begin(["/certs/server.key"], dataclasses.replace(RECORD, written={"/a": "file:1"}))
    journal.commit()
    journal.begin(["/certs/server.key"], dataclasses.replace(RECORD, written={"/b": "file:2"}))
    journal.commit()
    assert journal.written() == {"/a": "file:1", "/b": "file:2"}


def test_the_state_directory_keeps_nothing_but_its_records(root: Path, journal: Journal) -> None:
    """No staging, aside or trash copy is left, and every file is root's and 0600."""
    for _ in range(2):
        journal.begin(["/certs/server.key"], dataclasses.replace(RECORD, written={"/a": "f"}))
        journal.phase(Phase.INSTALLED)
        journal.commit()
    assert sorted(p.name for p in journal.state_dir.iterdir()) == \
        ["original", "previous", "written.json"]
    for path in journal.state_dir.rglob("*"):
        st = path.stat()
        if path.is_file():
            assert stat.S_IMODE(st.st_mode) == 0o600, path
            if os.geteuid() == 0:
                assert (st.st_uid, st.st_gid) == (0, 0), path


def test_a_damaged_undo_log_is_a_record_error_naming_it(journal: Journal) -> None:
    journal.begin(["/certs/server.key"], RECORD)
    journal.transaction.update_meta(endpoints="nginx")
    with pytest.raises(RecordError) as err:
        journal.open_transaction()
    assert str(err.value).startswith(f"{journal.transaction.path}: certbot-wazo's undo log")


def test_the_failure_is_remembered_until_cleared(journal: Journal) -> None:
    assert journal.failure() is None
    failure = Failure(cert="/le/fullchain.pem", key="/le/privkey.pem", error="e", failed_at="t")
    journal.record_failure(failure)
    assert journal.failure() == failure
    assert stat.S_IMODE(journal.failure_path.stat().st_mode) == 0o600
    journal.clear_failure()
    assert journal.failure() is None


def test_a_damaged_failure_record_names_the_file(journal: Journal) -> None:
    journal.state_dir.mkdir()
    journal.failure_path.write_bytes(b"{")
    with pytest.raises(RecordError, match=f"^{journal.failure_path}: .*remove"):
        journal.failure()


def test_the_lock_is_exclusive_and_names_its_holder(journal: Journal) -> None:
    waits: list[str] = []
    with journal.lock(0.0, waits.append):
        other = Journal(journal.state_dir, journal.resolve)
        with pytest.raises(LockBusyError) as err, other.lock(0.0, waits.append):
            pass
    assert f"(pid {os.getpid()})" in str(err.value) and "wait for it to finish" in str(err.value)
    assert waits and "waiting up to 0 s" in waits[0]
    with Journal(journal.state_dir, journal.resolve).lock(0.0, waits.append):
        pass  # let go


def test_a_symlinked_lock_file_is_refused(journal: Journal, tmp_path: Path) -> None:
    journal.state_dir.mkdir(mode=0o700)
    (journal.state_dir / "lock").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(HostError, match="is a symlink: remove it"), \
            journal.lock(0.0, lambda m: None):
        pass
    assert not (tmp_path / "elsewhere").exists()


def test_removing_a_snapshot_leaves_nothing_half_read(journal: Journal) -> None:
    journal.begin(["/certs/server.key"], RECORD)
    journal.transaction.remove()
    assert not journal.transaction.exists()
    assert Snapshot(journal.transaction.path).exists() is False
