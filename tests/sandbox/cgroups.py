"""Sandbox units in control groups shaped like systemd's (…/system.slice/UNIT.service), so that
certbot-wazo observes which unit holds a port as it does on a real host (/proc/PID/cgroup).

The groups live below one directory of this sandbox, in the name=systemd hierarchy (cgroup v1,
as Debian 8-10 mount it) or the unified one (v2); never in the machine's own system.slice.
Removed again when the sandbox stops. Where neither hierarchy can be written, units run
without one (their listeners then have no unit: tests that need it skip)."""
from __future__ import annotations

import contextlib
import hashlib
import os
import time
from pathlib import Path
from typing import Optional

HIERARCHIES = (Path("/sys/fs/cgroup/systemd"), Path("/sys/fs/cgroup/unified"), Path("/sys/fs/cgroup"))
TOP = "certbot-wazo-sandbox"


def base() -> Optional[Path]:
    """The writable hierarchy whose groups /proc/PID/cgroup names as systemd's."""
    for hierarchy in HIERARCHIES:
        if (hierarchy / "cgroup.procs").is_file() and os.access(hierarchy, os.W_OK):
            return hierarchy
    return None


def sandbox_group(root: Path) -> Optional[Path]:
    hierarchy = base()
    if hierarchy is None:
        return None
    return hierarchy / TOP / hashlib.sha256(str(root).encode()).hexdigest()[:12]


def unit_group(root: Path, unit: str) -> Optional[Path]:
    """The unit's group (created), or None where no hierarchy can be written."""
    group = sandbox_group(root)
    if group is None:
        return None
    path = group / "system.slice" / f"{unit}.service"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return path


def join(group: Optional[Path]) -> None:
    """In a child before exec: move this process into group."""
    if group is not None:
        with contextlib.suppress(OSError):
            (group / "cgroup.procs").write_text(str(os.getpid()))


# An empty group of another sandbox older than this was left by a killed run; a younger one
# may belong to a sandbox starting in another test process (a unit's group exists a moment
# before its daemon joins it).
STALE = 600.0


def remove(root: Path) -> None:
    """Remove the sandbox's groups once its processes are gone (a killed daemon may take a
    moment to be reaped), and the empty groups an earlier, killed run left."""
    group = sandbox_group(root)
    if group is None:
        return
    for _ in range(20):
        for directory, _, _ in sorted(os.walk(group), key=lambda entry: -len(entry[0])):
            with contextlib.suppress(OSError):
                os.rmdir(directory)
        if not group.exists():
            break
        time.sleep(0.1)
    now = time.time()
    for directory, _, _ in sorted(os.walk(group.parent), key=lambda entry: -len(entry[0])):
        with contextlib.suppress(OSError):
            if now - os.stat(directory).st_mtime > STALE:
                os.rmdir(directory)
