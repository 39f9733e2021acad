"""Process helpers: liveness, detached spawning, killing, waiting and port probes."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Callable


def pid_alive(pid: int) -> bool:
    """True when pid exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def read_pid(pidfile: Path) -> int | None:
    """The pid in a pidfile, or None when absent or unreadable."""
    try:
        return int(pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.02) -> bool:
    """Poll predicate until true or timeout; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def port_open(address: str, timeout: float = 0.5) -> bool:
    """Whether "host:port" accepts a TCP connection."""
    host, port = address.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return True
    except OSError:
        return False


def group_members(pgid: int) -> list[int]:
    """Live pids whose process group is pgid."""
    members = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getpgid(int(entry.name)) == pgid and pid_alive(int(entry.name)):
                    members.append(int(entry.name))
            except OSError:
                continue
    return members


def terminate(pid: int, sig: int = signal.SIGTERM, timeout: float = 5.0) -> None:
    """Signal pid (its whole group when it leads one), wait, then SIGKILL what is left."""
    try:
        leader = os.getpgid(pid) == pid and pid != os.getpgid(0)
    except OSError:
        return
    members = group_members(pid) if leader else [pid]
    for target_sig in (sig, signal.SIGKILL):
        try:
            if leader:
                os.killpg(pid, target_sig)
            else:
                os.kill(pid, target_sig)
        except OSError:
            pass
        if wait_until(lambda: not any(pid_alive(p) for p in members), timeout):
            return
        timeout = 2.0


def spawn_detached(argv: list[str], log: Path, env: dict[str, str], cwd: Path,
                   preexec: Callable[[], None] | None = None) -> subprocess.Popen[bytes]:
    """Start argv in its own session, stdio to log (preexec runs in the child before exec)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                env=env, cwd=cwd, start_new_session=True, preexec_fn=preexec)


def processes_under(root: Path) -> list[int]:
    """Live processes whose command line mentions root, plus their group members."""
    marker = str(root).rstrip("/")
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            args = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if any(a == marker or marker + "/" in a for a in args) and pid_alive(int(entry.name)):
            found.add(int(entry.name))
    own_group = os.getpgid(0)
    for pid in list(found):
        try:
            if os.getpgid(pid) == pid and pid != own_group:
                found.update(group_members(pid))
        except OSError:
            continue
    return sorted(found)
