"""Every listener, every time (issue 22): what listens and serves Wazo's pair is restarted and
probed whether or not a configuration names it, and the same host gives the same endpoints on
every run."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from tests.pki import CA
from tests.sandbox import cgroups, systemctl
from tests.sandbox.common import STATE_FILE
from tests.sandbox.host import SandboxHost, add_tls_daemon
from tests.sandbox.release import NAME, facts

CLI = Path(sys.executable).with_name("certbot-wazo")
EXTRA_UNIT, EXTRA_PORT = "local-tls-daemon", 9444


@pytest.fixture(scope="module")
def ca() -> CA:
    return CA("Listeners")


def _leaf(fullchain: Path) -> bytes:
    return x509.load_pem_x509_certificates(fullchain.read_bytes())[0].public_bytes(Encoding.DER)


def _cli(host: SandboxHost, bundle: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(host.env(), SSL_CERT_FILE=str(bundle))
    env.pop("SSL_CERT_DIR", None)
    return subprocess.run([str(CLI), *args, "--root", str(host.root), "--hostname", NAME],
                          capture_output=True, text=True, timeout=300, env=env, check=False)


def _migrate_then_renew(host: SandboxHost, ca: CA, bundle: Path,
                        tmp_path: Path) -> Iterator[str]:
    """The migration, then a certificate-only renewal: each must leave every endpoint of the
    host serving its pair; yields what each said."""
    for step in ("first", "renewed"):
        pair = ca.issue(tmp_path / step, names=[NAME])
        result = _cli(host, bundle, "deploy", "--cert", str(pair[0]), "--key", str(pair[1]),
                      "--probe-timeout", "30")
        assert result.returncode == 0, result.stderr
        for unit in host.endpoints:
            assert host.served_cert(unit) == _leaf(pair[0]), (step, unit)
        yield result.stdout + result.stderr


@pytest.mark.parametrize("host", ["18.03", "25.17"], indirect=True)
def test_a_tls_daemon_the_corpus_does_not_know_is_restarted_probed_and_named(
        host: SandboxHost, ca: CA, tmp_path: Path) -> None:
    if cgroups.base() is None:
        pytest.skip("no control group hierarchy can be written here (the daemon has no unit)")
    add_tls_daemon(host, EXTRA_UNIT, EXTRA_PORT)
    assert systemctl.start(host.root, EXTRA_UNIT) == 0
    bundle = ca.trust_bundle(tmp_path / "trust.pem")
    for said in _migrate_then_renew(host, ca, bundle, tmp_path):
        assert f"127.0.0.1:{EXTRA_PORT}: {EXTRA_UNIT} serves Wazo's certificate there" in said
        assert "1 found listening)" in said
        assert f"restart {EXTRA_UNIT}" in host.events()
    status = _cli(host, bundle, "status", "--json")
    report = json.loads(status.stdout)
    observed = [e for e in report["endpoints"] if e["source"] == "observed"]
    assert [e["endpoint"] for e in observed] == [f"127.0.0.1:{EXTRA_PORT} ({EXTRA_UNIT})"]
    assert all(e["ok"] for e in report["endpoints"]), report["endpoints"]


@pytest.mark.parametrize("host", ["18.03", "19.17"], indirect=True)
def test_the_same_host_gives_the_same_endpoints_every_run(host: SandboxHost, ca: CA,
                                                          tmp_path: Path) -> None:
    """10 runs in a row (a deployment, a renewal, then status after services restarted in
    between, daemons still starting included) name the same endpoints: every port of the
    release's table, wazo-admin-ui's 9296 (18.03) and wazo-setupd's 9302 (19.17) among them."""
    release = json.loads((host.root / STATE_FILE).read_text())["release"]
    ports = {row["port"] for row in facts(release)["endpoints"]}
    bundle = ca.trust_bundle(tmp_path / "trust.pem")
    list(_migrate_then_renew(host, ca, bundle, tmp_path))
    seen = []
    restarting = "xivo-websocketd" if release == "18.03" else "wazo-plugind"
    for run in range(10):
        restart = subprocess.Popen([str(host.root / "bin/systemctl"), "restart", restarting],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) \
            if run % 3 == 1 else None  # a daemon down or starting while discovery runs
        report = json.loads(_cli(host, bundle, "status", "--json").stdout)
        if restart is not None:
            restart.wait(60)
        seen.append([e["endpoint"] for e in report["endpoints"]])
    assert all(run == seen[0] for run in seen), seen
    assert {int(e.split(" ")[0].rsplit(":", 1)[1]) for e in seen[0]} == ports
