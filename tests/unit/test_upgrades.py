"""Whether dpkg or wazo-upgrade runs: /proc/locks and process names."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from certbot_wazo import upgrades
from certbot_wazo.host import Host


def _proc(tmp_path: Path, locks: str, commands: dict[str, bytes]) -> Path:
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "locks").write_text(locks)
    for pid, cmdline in commands.items():
        (proc / pid).mkdir()
        (proc / pid / "cmdline").write_bytes(cmdline)
    return proc


def _lock_line(path: Path) -> str:
    info = os.stat(path)
    return (f"1: POSIX  ADVISORY  WRITE 4242 {os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:"
            f"{info.st_ino} 0 EOF\n")


def test_dpkg_lock_held_by_another_process(tmp_path: Path) -> None:
    """What dpkg does (an fcntl write lock on lock-frontend, then lock), seen without taking it."""
    root = tmp_path / "root"
    lock = root / "var/lib/dpkg/lock-frontend"
    lock.parent.mkdir(parents=True)
    lock.write_text("")
    (root / "var/lib/dpkg/lock").write_text("")
    proc = _proc(tmp_path, "", {})
    assert not upgrades.dpkg_busy(Host(root), proc)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys, time\n"
         "fd = os.open(sys.argv[1], os.O_RDWR)\nfcntl.lockf(fd, fcntl.LOCK_EX)\n"
         "print('locked', flush=True)\ntime.sleep(60)\n", str(lock)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        assert upgrades.dpkg_busy(Host(root), proc)
    finally:
        holder.kill()
        holder.wait()
    assert not upgrades.dpkg_busy(Host(root), proc)


def test_proc_locks_where_fcntl_cannot_ask(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(upgrades, "_write_locked", lambda path: None)
    root = tmp_path / "root"
    lock = root / "var/lib/dpkg/lock-frontend"
    lock.parent.mkdir(parents=True)
    lock.write_text("")
    held = _proc(tmp_path, "2: FLOCK  ADVISORY  WRITE 1 00:00:1 0 EOF\n" + _lock_line(lock), {})
    assert upgrades.dpkg_busy(Host(root), held)
    other = tmp_path / "other"
    other.mkdir()
    free = _proc(other, "1: POSIX  ADVISORY  WRITE 1 fd:01:999999 0 EOF\n", {"1": b"/sbin/init\0"})
    assert not upgrades.dpkg_busy(Host(root), free)


def test_wazo_upgrade_running(tmp_path: Path) -> None:
    proc = _proc(tmp_path, "", {"7": b"/bin/bash\0/usr/bin/wazo-upgrade\0-f\0",
                                "8": b"/usr/bin/python3\0/usr/bin/certbot-wazo\0"})
    assert upgrades.dpkg_busy(Host(tmp_path / "root"), proc)


def test_wait_idle_gives_up_after_timeout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(upgrades, "dpkg_busy", lambda host: True)
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    assert not upgrades.wait_idle(Host(tmp_path), 12, sleep=sleep, clock=lambda: now[0])
    assert now[0] >= 12
    monkeypatch.setattr(upgrades, "dpkg_busy", lambda host: False)
    assert upgrades.wait_idle(Host(tmp_path), 12, sleep=sleep, clock=lambda: now[0])
