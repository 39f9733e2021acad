"""Whether a package change is under way on this machine: dpkg's lock held, wazo-upgrade running."""
from __future__ import annotations

import fcntl
import os
import struct
import time
from pathlib import Path
from typing import Callable, Optional

from certbot_wazo.access import LocalAccess
from certbot_wazo.host import Host

# dpkg holds an fcntl lock on these while it runs (apt takes lock-frontend first).
DPKG_LOCK = "/var/lib/dpkg/lock"
DPKG_LOCKS = ("/var/lib/dpkg/lock-frontend", DPKG_LOCK)
# wazo-upgrade's name before 17.x was xivo-upgrade (wazo-platform/wazo-upgrade, bin/).
UPGRADERS = ("wazo-upgrade", "xivo-upgrade", "wazo-dist-upgrade", "xivo-dist-upgrade")


def _locked_inodes(proc_locks: Path = Path("/proc/locks")) -> set[tuple[int, int, int]]:
    """(major, minor, inode) of every file a process holds a lock on."""
    found: set[tuple[int, int, int]] = set()
    try:
        lines = proc_locks.read_text(encoding="ascii", errors="replace").splitlines()
    except OSError:
        return found
    for line in lines:
        fields = line.split()
        if len(fields) > 5 and fields[1] != "->" and fields[5].count(":") == 2:
            major, minor, inode = fields[5].split(":")
            try:
                found.add((int(major, 16), int(minor, 16), int(inode)))
            except ValueError:
                continue
    return found


# struct flock on 64-bit Linux: l_type, l_whence, l_start, l_len, l_pid (native alignment).
_FLOCK = "@hhqqi"


def _write_locked(path: Path) -> Optional[bool]:
    """Whether another process holds a lock on path (fcntl F_GETLK: asks, takes nothing, so a
    starting dpkg never finds it taken); None when this cannot be asked here."""
    if struct.calcsize("P") != 8:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        answer = fcntl.fcntl(fd, fcntl.F_GETLK, struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET,
                                                             0, 0, 0))
        return bool(struct.unpack(_FLOCK, answer[:struct.calcsize(_FLOCK)])[0] != fcntl.F_UNLCK)
    except OSError:
        return None
    finally:
        os.close(fd)


def dpkg_busy(host: Host, proc: Path = Path("/proc")) -> bool:
    """Whether dpkg (or apt) holds its lock, or wazo-upgrade runs, on this machine."""
    held: Optional[set[tuple[int, int, int]]] = None
    for lock in DPKG_LOCKS:
        path = host.path(lock)
        asked = _write_locked(path)
        if asked:
            return True
        if asked is None:  # no F_GETLK here: /proc/locks (device numbers may differ on btrfs)
            held = _locked_inodes(proc / "locks") if held is None else held
            try:
                info = os.stat(path)
            except OSError:
                continue
            if (os.major(info.st_dev), os.minor(info.st_dev), info.st_ino) in held:
                return True
    for entry in proc.iterdir() if proc.is_dir() else []:
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(os.path.basename(a.decode("utf-8", "replace")) in UPGRADERS for a in argv[:2]):
            return True
    return False


def wait_idle(host: Host, timeout: float, sleep: Callable[[float], None] = time.sleep,
              clock: Callable[[], float] = time.monotonic) -> bool:
    """Wait until no package change runs (only on this machine: a remote host is not
    watched). :returns: whether it is idle"""
    if not isinstance(host.access, LocalAccess):
        return True
    deadline = clock() + timeout
    while dpkg_busy(host):
        if clock() >= deadline:
            return False
        sleep(5.0)
    return True
