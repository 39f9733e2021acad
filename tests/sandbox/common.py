"""Paths, constants and small file helpers shared by the sandbox modules."""
from __future__ import annotations

import json
import os
import random
import shutil
import socket
from pathlib import Path
from typing import Any

PYTHON = "/usr/bin/python3"
REPO = Path(__file__).resolve().parents[2]
STATE_FILE = "etc/sandbox.json"


def under(root: Path, path: str | os.PathLike[str]) -> Path:
    """Map a Wazo path (/usr/share/...) under root; paths already under root are kept."""
    text = str(path)
    if text == str(root) or text.startswith(str(root) + "/"):
        return Path(text)
    return root / text.lstrip("/")


def wazo_path(root: Path, path: str | os.PathLike[str]) -> str:
    """Inverse of under(): the Wazo absolute path of a file under root."""
    text = str(path)
    if text.startswith(str(root) + "/"):
        return text[len(str(root)):]
    return text


def resolve_in_root(root: Path, path: str | os.PathLike[str]) -> Path:
    """Follow symlinks of the last component, mapping absolute targets under root."""
    current = under(root, path)
    for _ in range(40):
        if not current.is_symlink():
            return current
        target = os.readlink(current)
        current = under(root, target) if target.startswith("/") else current.parent / target
    raise OSError(f"too many levels of symbolic links: {path}")


def sandbox_dir(root: Path) -> Path:
    """Runtime state of the sandbox: pidfiles, ready files, faults."""
    return root / "run/sandbox"


def log_dir(root: Path) -> Path:
    """Logs of the sandbox: commands, services, daemon output."""
    return root / "var/log/sandbox"


def state(root: Path) -> dict[str, Any]:
    """The sandbox description written at build time (generation, name, units)."""
    data: dict[str, Any] = json.loads((root / STATE_FILE).read_text())
    return data


def fault_armed(root: Path, name: str) -> bool:
    """Whether the fault knob `name` is armed."""
    return (sandbox_dir(root) / "faults" / name).exists()


def append_line(path: Path, line: str) -> None:
    """Append one line with a single write (safe across processes)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line.rstrip("\n") + "\n").encode())
    finally:
        os.close(fd)


def log_command(root: Path, argv: list[str]) -> None:
    """Record one invocation of a stub command."""
    append_line(log_dir(root) / "commands.log", json.dumps([os.path.basename(argv[0]), *argv[1:]]))


def log_event(root: Path, event: str) -> None:
    """Record one service action such as "restart nginx"."""
    append_line(log_dir(root) / "services.log", event)


def counter(path: Path, increment: bool = False) -> int:
    """Read (and optionally increment) an integer counter file."""
    value = int(path.read_text()) if path.exists() else 0
    if increment:
        value += 1
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(str(value))
        tmp.replace(path)
    return value


def pinned(root: Path, unit: str, role: str, path: Path) -> Path:
    """The file a unit loads for role (e.g. "certificate"); with `<unit>.stale` armed, the one it
    loaded at its last start before the fault was armed (it keeps serving the pair it had)."""
    copy = root / "var/lib/sandbox/pinned" / unit / role
    if fault_armed(root, f"{unit}.stale") and copy.exists():
        return copy
    if path.exists():
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, copy)
    return path


# Ports a sandbox takes: below the kernel's ephemeral range, which every outgoing connection
# and every bind to port 0 draws from (a port picked there can be taken by someone else's
# connection before its daemon binds it), each pytest-xdist worker in a range of its own.
FIRST_PORT = 10000


def _ephemeral_start() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range", encoding="ascii") as stream:
            return int(stream.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_ports(count: int) -> list[int]:
    """Distinct free TCP ports on 127.0.0.1 (all held open while allocating), outside the
    ephemeral range and in this test worker's own share of the ports below it."""
    top = _ephemeral_start()
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")[2:]
    share = (top - FIRST_PORT) // 4
    start = FIRST_PORT + share * (int(worker) % 4 if worker.isdigit() else 0)
    candidates = random.sample(range(start, start + share), share) if share >= 64 else []
    sockets: list[socket.socket] = []
    try:
        for port in candidates:
            if len(sockets) == count:
                break
            sock = socket.socket()
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                sock.close()
                continue
            sockets.append(sock)
        while len(sockets) < count:  # no room below the ephemeral range: the kernel's choice
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()
