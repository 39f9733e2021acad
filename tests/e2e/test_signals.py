"""SIGINT, SIGTERM or SIGHUP while `wazo-service restart all` has every service stopped: the
restart is left to finish, the previous certificate comes back with the services running on
it, and certbot-wazo ends with one line and a non-zero exit."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from tests.pki import CA
from tests.sandbox import systemctl
from tests.sandbox.host import SandboxHost
from tests.sandbox.tree import differences, snapshot

CLI = Path(sys.executable).with_name("certbot-wazo")


def _leaf(path: Path) -> bytes:
    return x509.load_pem_x509_certificates(path.read_bytes())[0].public_bytes(Encoding.DER)


def _wait_for(marker: Path, proc: subprocess.Popen[str]) -> None:
    """Until a sandbox stand-in touches marker (the command under test is then mid-way)."""
    deadline = time.monotonic() + 60
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert marker.exists(), proc.communicate()


def _deploy_until_services_are_down(host: SandboxHost, ca: CA, trust: Path, tmp_path: Path,
                                    probe_timeout: int) -> subprocess.Popen[str]:
    """A deployment of a new pair, returned once `restart all` has stopped every service."""
    crt, key = ca.issue(tmp_path / "pair", names=[host.name])
    stopped = host.root / "run/sandbox/restart-stopped"
    stopped.unlink(missing_ok=True)
    host.fault("restart-slow")
    proc = subprocess.Popen([str(CLI), "deploy", "--root", str(host.root), "--cert", str(crt),
                             "--key", str(key), "--probe-timeout", str(probe_timeout)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "SSL_CERT_FILE": str(trust)})
    _wait_for(stopped, proc)
    return proc


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP],
                         ids=lambda s: signal.Signals(s).name)
def test_signal_during_the_restart(reset_legacy: SandboxHost, ca: CA, trust: Path,
                                   tmp_path: Path, signum: int) -> None:
    host = reset_legacy
    previous = _leaf(host.certs_dir / "server.crt")
    proc = _deploy_until_services_are_down(host, ca, trust, tmp_path, probe_timeout=20)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    name = signal.Signals(signum).name
    assert proc.returncode == 1, (out, err)
    assert "Traceback" not in out + err
    assert err.strip().splitlines() == [err.strip()]
    assert f"interrupted by {name} during the restart; the previous certificate was restored" \
        in err
    host.fault("restart-slow", on=False)
    for unit, kind in host.units.items():
        if kind != "noop":
            assert systemctl.active(host.root, unit), unit
    for unit in host.endpoints:
        assert host.served_cert(unit) == previous, unit


def _ignores_sigterm(pid: int) -> bool:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigIgn:"):
            return bool(int(line.split()[1], 16) >> (signal.SIGTERM - 1) & 1)
    return False


def test_signal_while_probing_does_not_wait_out_the_probe(reset_legacy: SandboxHost, ca: CA,
                                                          trust: Path, tmp_path: Path) -> None:
    """A service that keeps its old pair makes the probe wait up to --probe-timeout (300 s
    here); Ctrl-C then ends the run long before, back on the previous certificate, and the
    services the undo restarted still obey SIGTERM."""
    host = reset_legacy
    previous = _leaf(host.certs_dir / "server.crt")
    host.fault("wazo-auth.stale")
    started = time.monotonic()
    proc = _deploy_until_services_are_down(host, ca, trust, tmp_path, probe_timeout=300)
    time.sleep(4)  # the restart (2 s down) is over: the probe is waiting for wazo-auth
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=200)
    assert proc.returncode == 1 and "Traceback" not in out + err, (out, err)
    assert "interrupted by SIGINT" in err
    assert time.monotonic() - started < 150, "it waited out the probe timeout"
    host.fault("restart-slow", on=False)
    host.fault("wazo-auth.stale", on=False)
    for unit in host.endpoints:
        if unit != "wazo-auth":
            assert host.served_cert(unit) == previous, unit
    pid = int((host.root / "run/sandbox/xivo-confd.pid").read_text())
    assert not _ignores_sigterm(pid)


def test_signal_before_any_restart_changes_nothing(reset_legacy: SandboxHost, ca: CA,
                                                   trust: Path, tmp_path: Path) -> None:
    """SIGTERM while xivo-update-config renders the new hosts template: it is left to finish,
    then every file comes back as it was and nothing is restarted."""
    host = reset_legacy
    before, events = snapshot(host.root), len(host.events())
    crt, key = ca.issue(tmp_path / "pair", names=[host.name])
    running = host.root / "run/sandbox/update-config-running"
    running.unlink(missing_ok=True)
    host.fault("update-config-slow")
    proc = subprocess.Popen([str(CLI), "deploy", "--root", str(host.root), "--cert", str(crt),
                             "--key", str(key)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "SSL_CERT_FILE": str(trust)})
    _wait_for(running, proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    host.fault("update-config-slow", on=False)
    assert proc.returncode == 1 and "Traceback" not in out + err, (out, err)
    assert "interrupted by SIGTERM before any restart; nothing was changed" in err
    assert differences(before, snapshot(host.root)) == []
    assert host.events()[events:] == []


def test_signal_while_status_recovers(reset_legacy: SandboxHost, ca: CA, trust: Path,
                                      tmp_path: Path) -> None:
    """`status` finishes an interrupted deployment first (a restart back to the previous pair):
    Ctrl-C there too ends with one line, never a traceback, the services running."""
    host = reset_legacy
    crt, key = ca.issue(tmp_path / "pair", names=[host.name])
    env = {**os.environ, "SSL_CERT_FILE": str(trust)}
    killed = subprocess.run([str(CLI), "deploy", "--root", str(host.root), "--cert", str(crt),
                             "--key", str(key)], capture_output=True, text=True, timeout=180,
                            env={**env, "CERTBOT_WAZO_FAILPOINT": "after-restart"}, check=False)
    assert killed.returncode == -signal.SIGKILL
    stopped = host.root / "run/sandbox/restart-stopped"
    stopped.unlink(missing_ok=True)
    host.fault("restart-slow")
    proc = subprocess.Popen([str(CLI), "status", "--root", str(host.root)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(stopped, proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    host.fault("restart-slow", on=False)
    assert proc.returncode == 1 and "Traceback" not in out + err, (out, err)
    assert "interrupted by SIGINT" in out + err
    for unit, kind in host.units.items():
        if kind != "noop":
            assert systemctl.active(host.root, unit), unit
