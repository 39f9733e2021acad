"""LocalAccess: this machine's changes, commands and the lock it shares with remote runs."""
from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from certbot_wazo.access import LocalAccess
from certbot_wazo.errors import LockBusyError


def _start_time(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[19]


def test_a_remote_run_holding_lock_d_keeps_a_local_run_waiting(tmp_path: Path) -> None:
    """A run from another machine holds the host's lock.d (its SSH session's process is alive):
    the local run waits for it, and names it."""
    (tmp_path / "lock.d").mkdir()
    (tmp_path / "lock.d/owner").write_text(f"{os.getpid()} {_start_time(os.getpid())} ctl-1\n")
    waits: list[str] = []
    with pytest.raises(LockBusyError, match=r"lock: another certbot-wazo deployment is still "
                       r"running \(a remote run from ctl-1\)"):
        with LocalAccess().lock(tmp_path / "lock", 0.3, waits.append):
            pass
    assert waits and "a remote run from ctl-1" in waits[0]


def test_a_stale_lock_d_does_not_block(tmp_path: Path) -> None:
    """Its owner is gone (a dropped connection): the local run goes on."""
    (tmp_path / "lock.d").mkdir()
    (tmp_path / "lock.d/owner").write_text(f"{os.getpid()} 1 ctl-1\n")  # another start time
    with LocalAccess().lock(tmp_path / "lock", 0.0, lambda _: None):
        pass


def test_the_local_lock_is_taken_once_the_remote_run_ends(tmp_path: Path) -> None:
    (tmp_path / "lock.d").mkdir()
    owner = tmp_path / "lock.d/owner"
    owner.write_text(f"{os.getpid()} {_start_time(os.getpid())} ctl-1\n")
    timer = threading.Timer(0.5, owner.unlink)
    timer.start()
    try:
        with LocalAccess().lock(tmp_path / "lock", 10, lambda _: None):
            assert not owner.exists()
    finally:
        timer.cancel()


def test_a_secret_reaches_the_command_in_a_private_file_never_in_argv() -> None:
    """The file is 0600, named by the variable, gone when the command ends; the same with the
    remote RUN script, run here by sh (its secret comes on standard input)."""
    import subprocess

    from certbot_wazo import access, remote
    show = ["sh", "-c", 'stat -c "%a" "$PGPASSFILE"; cat "$PGPASSFILE"; echo "$PGPASSFILE"']
    out = access.run(show, 10, access.Secret("PGPASSFILE", b"*:*:*:*:s3cret\n")).splitlines()
    assert out[:2] == ["600", "*:*:*:*:s3cret"] and not os.path.exists(out[2])
    done = subprocess.run(["sh", "-c", remote.RUN, "sh", "/", "/nonexistent", "-", "10",
                           "PGPASSFILE", *show], input=b"*:*:*:*:s3cret\n",
                          capture_output=True, check=True)
    lines = done.stdout.decode().splitlines()
    assert lines[:3] == ["CWRC 0", "600", "*:*:*:*:s3cret"] and not os.path.exists(lines[3])
    assert "s3cret" not in " ".join(show)
