"""SandboxHost: a fake legacy or modern Wazo host under a root directory, with real TLS endpoints."""
from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import socket
import ssl
import subprocess
from pathlib import Path
from types import TracebackType

from . import cgroups, systemctl
from .common import STATE_FILE, log_dir, sandbox_dir, state
from .layout import build
from .peers import peer_errors
from .procs import port_open, processes_under, terminate, wait_until


class SandboxHost:
    """A built sandbox host; use start()/stop() or as a context manager."""

    def __init__(self, root: Path, generation: str, name: str, endpoints: dict[str, str]) -> None:
        self.root = root
        self.generation = generation
        self.name = name
        self.endpoints = endpoints

    @property
    def units(self) -> dict[str, str]:
        """Every unit the sandbox systemctl knows, with its kind."""
        units: dict[str, str] = state(self.root)["units"]
        return units

    @property
    def certs_dir(self) -> Path:
        """Where Wazo's pair lives in this generation (under root)."""
        return self.root / ("usr/share/xivo-certs" if self.generation == "legacy" else "usr/share/wazo-certs")

    def env(self) -> dict[str, str]:
        """os.environ with the sandbox's command directories first on PATH."""
        dirs = [str(self.root / d) for d in ("usr/sbin", "usr/bin", "sbin", "bin")]
        return {**os.environ, "PATH": os.pathsep.join([*dirs, os.environ.get("PATH", "/usr/bin:/bin")])}

    def run(self, command: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run a sandbox command by name (wazo-service, systemctl, xivo-update-config, asterisk)."""
        path = next(p for d in ("usr/sbin", "usr/bin", "bin") if (p := self.root / d / command).exists())
        return subprocess.run([str(path), *args], capture_output=True, text=True, timeout=timeout)

    def start(self) -> None:
        """wazo-service start all, then wait until every TLS endpoint accepts connections."""
        result = self.run("wazo-service", "start", "all")
        if result.returncode != 0:
            raise RuntimeError(f"wazo-service start all failed:\n{result.stdout}{result.stderr}")
        # What systemd starts at boot besides (enabled units in no group of wazo-service, such
        # as wazo-setupd at 19.17).
        for unit in self.units:
            if not systemctl.active(self.root, unit) and systemctl.start(self.root, unit) != 0:
                raise RuntimeError(f"systemctl start {unit} failed")
        for unit, address in self.endpoints.items():
            if not wait_until(functools.partial(port_open, address), 10):
                raise RuntimeError(f"{unit} does not listen on {address}")

    def pids(self) -> list[int]:
        """Live processes of this sandbox (command line under root, and their process groups)."""
        return processes_under(self.root)

    def stop(self) -> None:
        """Stop every unit, then kill anything of this sandbox still alive. Idempotent."""
        for unit in self.units:
            with contextlib.suppress(Exception):  # keep going: the sweep below kills leftovers
                systemctl.stop(self.root, unit)
        for _ in range(3):
            leftovers = processes_under(self.root)
            if not leftovers:
                break
            for pid in leftovers:
                terminate(pid, timeout=2)
        cgroups.remove(self.root)

    def __enter__(self) -> SandboxHost:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()

    def events(self) -> list[str]:
        """Service actions performed so far ("start nginx", "restart wazo-auth", ...), in order."""
        path = log_dir(self.root) / "services.log"
        return path.read_text().splitlines() if path.exists() else []

    def commands(self) -> list[list[str]]:
        """argv (basename first) of each stub command invocation, in order."""
        path = log_dir(self.root) / "commands.log"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []

    def served_cert(self, unit: str) -> bytes:
        """DER of the leaf served at the unit's endpoint (no verification; SNI = host name)."""
        host, port = self.endpoints[unit].rsplit(":", 1)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            with context.wrap_socket(sock, server_hostname=self.name) as tls:
                der = tls.getpeercert(binary_form=True)
        if der is None:
            raise RuntimeError(f"{unit} served no certificate")
        return der

    def asterisk_starts(self) -> int:
        """How many times the asterisk stand-in process was started."""
        path = self.root / "var/lib/sandbox/asterisk.starts"
        return int(path.read_text()) if path.exists() else 0

    def peer_errors(self, unit: str, cafile: Path | None = None) -> list[str]:
        """Errors the unit's HTTP clients would meet calling their peers (cafile = the system store)."""
        return peer_errors(self.root, unit, cafile)

    def fault(self, name: str, on: bool = True) -> None:
        """Arm (or disarm) a fault knob, e.g. "restart-fails" or "nginx.noreload"."""
        path = sandbox_dir(self.root) / "faults" / name
        if on:
            path.touch()
        else:
            path.unlink(missing_ok=True)


def build_host(root: Path, generation: str, *, name: str = "wazo.example.test",
               http_port: int | None = None) -> SandboxHost:
    """Build a legacy ("XiVO 15.12 – Wazo 18.03") or modern ("Wazo 24.01+") host under root;
    with http_port, its nginx also serves plain HTTP there (for HTTP-01 through Wazo's nginx)."""
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    layout = build(root, generation, name, http_port)
    return SandboxHost(root, generation, name, dict(layout.endpoints))


def keep_pristine(root: Path, pristine: Path) -> None:
    """Copy a built sandbox's Wazo files (etc, usr) aside, owners and modes kept."""
    pristine.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", "-a", str(root / "etc"), str(root / "usr"), str(pristine)], check=True)


def restore_pristine(root: Path, pristine: Path) -> None:
    """Put a sandbox back as built: its Wazo files from keep_pristine(), no certbot-wazo state,
    no fault armed (running services keep what they loaded)."""
    for name in ("etc", "usr", "var/lib/certbot-wazo"):
        shutil.rmtree(root / name, ignore_errors=True)
    subprocess.run(["cp", "-a", str(pristine / "etc"), str(pristine / "usr"), str(root)],
                   check=True)
    for fault in (root / "run/sandbox/faults").iterdir():
        fault.unlink()


def add_tls_daemon(host: SandboxHost, unit: str, port: int) -> None:
    """A TLS daemon no Wazo configuration names: it serves Wazo's pair on 127.0.0.1:port from
    /etc/UNIT/config.yml (a directory certbot-wazo does not read: not /etc/wazo-* or xivo-*),
    run as its own unit; started with the host, or by systemctl.start when it already runs."""
    import yaml
    certs = "/" + str(host.certs_dir.relative_to(host.root))
    config = host.root / "etc" / unit / "config.yml"
    config.parent.mkdir(parents=True)
    config.write_text(yaml.safe_dump({"rest_api": {"https": {
        "listen": "127.0.0.1", "port": port, "certificate": f"{certs}/server.crt",
        "private_key": f"{certs}/server.key"}}}))
    data = state(host.root)
    data["units"][unit] = "daemon"
    data["endpoints"][unit] = f"127.0.0.1:{port}"
    (host.root / STATE_FILE).write_text(json.dumps(data, indent=2))
    host.endpoints[unit] = f"127.0.0.1:{port}"

