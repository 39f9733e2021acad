"""What listens on a host, observed rather than read from its configuration: TCP listeners from
/proc/net/tcp and tcp6, each with the process and the systemd unit that own it.

The facts come from the kernel's own tables: a listening socket's inode (/proc/net/tcp*), the
process holding that inode (/proc/PID/fd/* -> socket:[INODE]) and that process's control group
(/proc/PID/cgroup, whose systemd path ends in UNIT.service on every systemd, cgroup v1 or v2).
Locally they are read from this machine's /proc; over SSH the same tables are printed by a sh
script (remote.SshAccess.listeners) and parsed here. Every read is bounded.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import logging
import os
import re
from pathlib import Path
from typing import Iterable, Optional

logger = logging.getLogger(__name__)

# The kernel's TCP_LISTEN state, as /proc/net/tcp prints it.
LISTEN = "0A"
# Bounds: a /proc/net/tcp table (a busy PBX has a few thousand sockets, 150 bytes each), the
# processes and descriptors looked at.
MAX_TABLE = 4 * 1024 * 1024
MAX_PROCESSES = 100_000
MAX_DESCRIPTORS = 200_000
_SOCKET = re.compile(r"^socket:\[(\d+)\]$")
_UNIT = re.compile(r"^[A-Za-z0-9:_.\\@-]{1,256}\.service$")


@dataclasses.dataclass(frozen=True)
class Socket:
    """A listening TCP socket from the kernel's table."""

    address: str
    port: int
    inode: int


@dataclasses.dataclass(frozen=True)
class Listener:
    """A listening TCP socket and who holds it (pid 0 and empty names when nobody could be
    found: a socket of another pid namespace, or a process that just exited)."""

    address: str
    port: int
    pid: int = 0
    unit: str = ""
    process: str = ""
    inode: int = 0  # the socket's: the same listener as long as it is the same

    @property
    def owner(self) -> str:
        """The unit, else the process, as messages name it."""
        if self.unit:
            return self.unit
        return f"pid {self.pid} ({self.process})" if self.pid else "an unknown process"


def _address(text: str) -> str:
    """An address as /proc/net/tcp prints it: the raw network-order bytes of each 32-bit word
    printed as a host-order (little-endian on amd64, Wazo's only architecture) hex integer."""
    raw = bytes.fromhex(text)
    swapped = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(swapped))


def parse_table(text: str) -> list[Socket]:
    """The listening sockets of a /proc/net/tcp or /proc/net/tcp6 table (other lines ignored)."""
    found = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10 or fields[3] != LISTEN:
            continue
        address, _, port = fields[1].partition(":")
        try:
            found.append(Socket(_address(address), int(port, 16), int(fields[9])))
        except ValueError:
            continue
    return found


def unit_of(cgroup: str) -> str:
    """The systemd service a process belongs to, from its /proc/PID/cgroup ("" when none: a
    login session's scope, or no systemd): the innermost UNIT.service of the systemd
    hierarchy (cgroup v1's name=systemd line, or v2's 0:: line)."""
    paths = []
    for line in cgroup.splitlines():
        hierarchy, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if controllers == "name=systemd" or (hierarchy == "0" and controllers == ""):
            paths.append(path)
    for path in paths:
        for part in reversed(path.split("/")):
            if _UNIT.match(part):
                return part[:-len(".service")]
    return ""


def _read(path: Path, limit: int) -> str:
    try:
        with open(path, "rb") as stream:
            return stream.read(limit).decode("ascii", "replace")
    except OSError:
        return ""


def observe(proc: Path = Path("/proc")) -> list[Listener]:
    """Every listening TCP socket of this machine's network namespace, with its owner.

    Descriptors are read only until every listening socket has its owner.
    """
    sockets = parse_table(_read(proc / "net/tcp", MAX_TABLE)) + \
        parse_table(_read(proc / "net/tcp6", MAX_TABLE))
    wanted = {s.inode for s in sockets}
    owners: dict[int, int] = {}
    seen = 0
    try:
        pids = [int(n) for n in os.listdir(proc) if n.isdigit()][:MAX_PROCESSES]
    except OSError:
        pids = []
    for pid in sorted(pids):
        if len(owners) == len(wanted) or seen > MAX_DESCRIPTORS:
            break
        fd_dir = proc / str(pid) / "fd"
        try:
            descriptors = os.listdir(fd_dir)
        except OSError:  # gone, or a kernel thread
            continue
        for fd in descriptors:
            seen += 1
            try:
                match = _SOCKET.match(os.readlink(fd_dir / fd))
            except OSError:
                continue
            if match and int(match.group(1)) in wanted:
                owners.setdefault(int(match.group(1)), pid)
    return combine(sockets, owners,
                   {pid: _read(proc / str(pid) / "cgroup", 65536) for pid in set(owners.values())},
                   {pid: _read(proc / str(pid) / "comm", 64).strip()
                    for pid in set(owners.values())})


def combine(sockets: Iterable[Socket], owners: dict[int, int], cgroups: dict[int, str],
            names: dict[int, str]) -> list[Listener]:
    """Listeners from the kernel's sockets, who holds each inode, and those processes'
    control groups and names; sorted by port then address, one per (address, port)."""
    found: dict[tuple[str, int], Listener] = {}
    for sock in sockets:
        pid = owners.get(sock.inode, 0)
        found.setdefault((sock.address, sock.port), Listener(
            sock.address, sock.port, pid, unit_of(cgroups.get(pid, "")), names.get(pid, ""),
            sock.inode))
    return sorted(found.values(), key=lambda listener: (listener.port, listener.address))


def parse_report(text: str) -> list[Listener]:
    """The listeners a remote host printed (remote.LISTENERS): "T4|T6 <table line>" for each
    line of /proc/net/tcp and tcp6, "O PID INODE" for a process holding a listening socket,
    "C PID <cgroup line>" and "N PID <comm>"."""
    tables: dict[str, list[str]] = {"T4": ["header"], "T6": ["header"]}
    owners: dict[int, int] = {}
    cgroups: dict[int, list[str]] = {}
    names: dict[int, str] = {}
    for line in text.splitlines():
        kind, _, rest = line.partition(" ")
        if kind in tables:
            tables[kind].append(rest)
            continue
        pid_text, _, value = rest.partition(" ")
        if not pid_text.isdigit():
            continue
        pid = int(pid_text)
        if kind == "O" and value.isdigit():
            owners.setdefault(int(value), pid)
        elif kind == "C":
            cgroups.setdefault(pid, []).append(value)
        elif kind == "N":
            names[pid] = value.strip()[:64]
    sockets = parse_table("\n".join(tables["T4"])) + parse_table("\n".join(tables["T6"]))
    return combine(sockets, owners, {pid: "\n".join(lines) for pid, lines in cgroups.items()},
                   names)


def reachable(address: str) -> Optional[str]:
    """Where a probe from the host itself reaches a listener bound to address (the wildcard
    addresses through loopback); None for an address no probe can use."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return None
    if parsed.is_unspecified:
        return "127.0.0.1" if parsed.version == 4 else "::1"
    if parsed.version == 6 and parsed.ipv4_mapped is not None:
        return str(parsed.ipv4_mapped)
    return str(parsed)
