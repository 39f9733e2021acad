"""Sandbox systemctl: start/stop/restart/reload/is-active/status of the sandbox's units."""
from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from . import cgroups, nginx
from .common import PYTHON, REPO, fault_armed, log_dir, log_event, sandbox_dir, state
from .procs import pid_alive, read_pid, spawn_detached, terminate, wait_until

START_TIMEOUT = 30.0  # systemd gives a unit 90 s (DefaultTimeoutStartSec); 5 s failed on a loaded CI


def _kind(root: Path, unit: str) -> str | None:
    kind: str | None = state(root)["units"].get(unit)
    return kind


def active(root: Path, unit: str) -> bool:
    """Whether the unit runs."""
    kind = _kind(root, unit)
    if kind == "nginx":
        return nginx.pid(root) is not None
    if kind == "noop":
        return (sandbox_dir(root) / f"{unit}.active").exists()
    pid = read_pid(sandbox_dir(root) / f"{unit}.pid")
    return pid is not None and pid_alive(pid)


def _failed(unit: str) -> int:
    print(f"Job for {unit}.service failed because the control process exited with error code.\n"
          f'See "systemctl status {unit}.service" and "journalctl -xe" for details.', file=sys.stderr)
    return 1


def start(root: Path, unit: str) -> int:
    """Start a unit; 0 when it runs (and listens) afterwards."""
    if active(root, unit):
        return 0
    if fault_armed(root, f"{unit}.nostart"):
        return _failed(unit)
    kind = _kind(root, unit)
    if kind == "noop":
        (sandbox_dir(root) / f"{unit}.active").touch()
        return 0
    if kind == "nginx":
        return _failed(unit) if nginx.start(root) else 0
    ready = sandbox_dir(root) / f"{unit}.ready"
    ready.unlink(missing_ok=True)
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "LANG": "C.UTF-8"}
    group = cgroups.unit_group(root, unit)  # systemd's shape: observed as this unit's
    proc = spawn_detached([PYTHON, "-m", "tests.sandbox.tlsdaemon", str(root), unit],
                          log_dir(root) / f"{unit}.log", env, REPO,
                          preexec=lambda: cgroups.join(group))
    (sandbox_dir(root) / f"{unit}.pid").write_text(f"{proc.pid}\n")
    if wait_until(lambda: ready.exists() or proc.poll() is not None, START_TIMEOUT) and ready.exists():
        return 0
    terminate(proc.pid)
    proc.wait()
    (sandbox_dir(root) / f"{unit}.pid").unlink(missing_ok=True)
    return _failed(unit)


def stop(root: Path, unit: str) -> int:
    """Stop a unit and wait for its processes to exit."""
    kind = _kind(root, unit)
    if kind == "nginx":
        nginx.stop(root)
    elif kind == "noop":
        (sandbox_dir(root) / f"{unit}.active").unlink(missing_ok=True)
    else:
        pidfile = sandbox_dir(root) / f"{unit}.pid"
        pid = read_pid(pidfile)
        if pid is not None and pid_alive(pid):
            terminate(pid)
        pidfile.unlink(missing_ok=True)
        (sandbox_dir(root) / f"{unit}.ready").unlink(missing_ok=True)
    return 0


def reload(root: Path, unit: str) -> int:
    """Reload: nginx (graceful) and asterisk (SIGHUP) only, like their units."""
    kind = _kind(root, unit)
    if kind == "nginx":
        return nginx.reload(root)
    if unit == "asterisk" and active(root, unit):
        pid = read_pid(sandbox_dir(root) / "asterisk.pid")
        if pid is not None:
            signal_pid(pid, signal.SIGHUP)
            return 0
    if unit == "asterisk":
        print("asterisk.service is not active, cannot reload.", file=sys.stderr)
        return 1
    print(f"Failed to reload {unit}.service: Job type reload is not applicable for unit {unit}.service.",
          file=sys.stderr)
    return 1


def signal_pid(pid: int, sig: int) -> None:
    """Send a signal, ignoring a process that is already gone."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def run(root: Path, argv: list[str]) -> int:
    """Entry point: systemctl ACTION UNIT..."""
    args = [a for a in argv[1:] if not a.startswith("-")]
    if not args:
        print("Too few arguments.", file=sys.stderr)
        return 1
    action, units = args[0], [u.removesuffix(".service") for u in args[1:]]
    known = state(root)["units"]
    status = 0
    for unit in units:
        if unit not in known:
            if action in ("is-active", "status"):
                print("inactive" if action == "is-active" else f"Unit {unit}.service could not be found.",
                      file=sys.stdout if action == "is-active" else sys.stderr)
                status = status or (3 if action == "is-active" else 4)
                continue
            print(f"Failed to {action} {unit}.service: Unit {unit}.service not found.", file=sys.stderr)
            status = status or 5
            continue
        if action in ("is-active", "status"):
            running = active(root, unit)
            words = ("active", "active (running)") if running else ("inactive", "inactive (dead)")
            print(words[0] if action == "is-active" else f"● {unit}.service\n     Active: {words[1]}")
            status = status or (0 if running else 3)
            continue
        if action not in ("start", "stop", "restart", "reload"):
            print(f"Unknown command verb {action}.", file=sys.stderr)
            return 1
        log_event(root, f"{action} {unit}")
        if action == "restart":
            stop(root, unit)
            result = start(root, unit)
        else:
            result = {"start": start, "stop": stop, "reload": reload}[action](root, unit)
        status = status or result
    return status
