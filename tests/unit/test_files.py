"""Writes are atomic, take their final owner and mode before holding any byte, and never follow a symlink."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from certbot_wazo.errors import HostError
from certbot_wazo.files import MAX_FILE_BYTES, FileState, apply_state, read_state
from certbot_wazo.journal import Journal
from tests.unit.records import RECORD


def test_file_gets_content_owner_and_mode(tmp_path: Path) -> None:
    path = tmp_path / "certs/server.key"
    apply_state(path, FileState.file(b"secret", 0o640, 0, 33))
    st = path.lstat()
    assert (path.read_bytes(), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == \
        (b"secret", 0o640, 0, 33)
    assert read_state(path) == FileState.file(b"secret", 0o640, 0, 33)


def test_mode_is_exact_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0o077)
    try:
        apply_state(tmp_path / "server.crt", FileState.file(b"c", 0o644))
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "server.crt").stat().st_mode) == 0o644


def test_symlink_at_the_target_is_replaced_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep")
    os.symlink(victim, tmp_path / "server.key")
    apply_state(tmp_path / "server.key", FileState.file(b"new", 0o640))
    assert victim.read_bytes() == b"keep"
    assert not (tmp_path / "server.key").is_symlink()


def test_symlinked_directory_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    os.symlink(real, tmp_path / "certs")
    with pytest.raises(HostError, match="is a symlink"):
        apply_state(tmp_path / "certs/server.key", FileState.file(b"k", 0o640))
    assert list(real.iterdir()) == []


def test_failed_write_leaves_the_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "server.crt"
    path.write_bytes(b"old")

    def full(fd: int, data: object) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(HostError, match=f"^{path}: cannot be written \\(No space left"):
        apply_state(path, FileState.file(b"new", 0o644))
    monkeypatch.undo()
    assert path.read_bytes() == b"old"
    assert not list(tmp_path.glob(".*.tmp"))


def test_read_state_of_link_and_absent(tmp_path: Path) -> None:
    os.symlink("../x", tmp_path / "l")
    assert read_state(tmp_path / "l") == FileState.link("../x")
    assert read_state(tmp_path / "none").kind == "absent"


def test_journal_restores_and_keeps_the_original(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "certs").mkdir(parents=True)
    key = root / "certs/server.key"
    key.write_bytes(b"self-signed")
    key.chmod(0o640)
    journal = Journal(root / "state", lambda p: root / p.lstrip("/"))
    journal.begin(["/certs/server.key", "/certs/new.yml"], RECORD)
    apply_state(key, FileState.file(b"letsencrypt", 0o640))
    apply_state(root / "certs/new.yml", FileState.file(b"x", 0o644))
    journal.restore(journal.transaction)
    assert key.read_bytes() == b"self-signed" and not (root / "certs/new.yml").exists()
    blobs = list((root / "state/original").glob("*.blob"))
    assert blobs and all(stat.S_IMODE(b.stat().st_mode) == 0o600 for b in blobs)
    assert stat.S_IMODE((root / "state").stat().st_mode) == 0o700
    entries, _ = journal.original.read()
    assert dict(entries)["/certs/server.key"].data == b"self-signed"


def test_symlink_higher_up_is_refused(tmp_path: Path) -> None:
    """A planted symlink above the written file's directory would redirect the write."""
    outside = tmp_path / "outside"
    (outside / "system/etc").mkdir(parents=True)
    (tmp_path / "custom-templates").mkdir()
    os.symlink(outside / "system", tmp_path / "custom-templates/system")
    with pytest.raises(HostError, match="custom-templates/system: is a symlink on the way to "):
        apply_state(tmp_path / "custom-templates/system/etc/hosts", FileState.file(b"x", 0o644))
    assert list((outside / "system/etc").iterdir()) == []


def test_a_huge_file_where_a_managed_file_goes_is_refused(tmp_path: Path) -> None:
    huge = tmp_path / "hosts"
    with open(huge, "wb") as stream:
        stream.truncate(MAX_FILE_BYTES + 1)
    with pytest.raises(HostError, match=f"^{huge}: larger than 16 MiB"):
        read_state(huge)


def test_a_file_of_exactly_the_bound_is_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "big"
    with open(path, "wb") as stream:
        stream.truncate(MAX_FILE_BYTES)
    assert len(read_state(path).data) == MAX_FILE_BYTES


def test_an_existing_directory_is_read_with_its_mode_and_owner(tmp_path: Path) -> None:
    directory = tmp_path / "d"
    directory.mkdir(mode=0o750)
    directory.chmod(0o750)
    st = directory.stat()
    assert read_state(directory) == FileState.directory(0o750, st.st_uid, st.st_gid)
    assert read_state(directory) != FileState.directory(0o755, st.st_uid, st.st_gid)
