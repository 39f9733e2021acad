"""The whole command on random pairs and random bytes in the host's files: exit 0 with the new
pair served everywhere, or exit 1 (2 for usage) with the host byte-identical; never a
traceback, never a hang."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.pki import CA
from tests.sandbox.host import SandboxHost
from tests.sandbox.tree import differences, snapshot

CLI = Path(sys.executable).with_name("certbot-wazo")
# Files an admin, a package or an attacker can put odd bytes in.
TARGETS = ("etc/xivo/common.conf", "etc/group", "etc/xivo-auth/config.yml",
           "etc/xivo-auth/conf.d/020-admin.yml", "etc/xivo/custom/custom-certificate.yml",
           "etc/nginx/sites-available/wazo", "etc/asterisk/http.conf",
           "etc/xivo/custom-templates/system/etc/hosts",
           "usr/share/xivo-config/templates/system/etc/hosts", "etc/consul.d/wazo.json")


def _reset(host: SandboxHost, pristine: Path) -> None:
    host.stop()
    for name in ("etc", "usr"):
        subprocess.run(["rm", "-rf", str(host.root / name)], check=True)
    subprocess.run(["rm", "-rf", str(host.root / "var/lib/certbot-wazo")], check=True)
    subprocess.run(["cp", "-a", str(pristine / "etc"), str(pristine / "usr"), str(host.root)],
                   check=True)


mutations = st.tuples(st.sampled_from(TARGETS), st.sampled_from(["replace", "insert", "cut"]),
                      st.binary(max_size=200), st.integers(min_value=0, max_value=4000))
# Mostly a good pair, so that the host's files decide the outcome.
pairs = st.sampled_from(["good"] * 5 + ["garbage", "truncated", "swapped", "empty-key"])


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(changes=st.lists(mutations, max_size=3), pair_kind=pairs)
def test_fuzz_deploy(shared_legacy: tuple[SandboxHost, Path], ca: CA, bundle: Path,
                     tmp_path_factory: pytest.TempPathFactory,
                     changes: list[tuple[str, str, bytes, int]], pair_kind: str) -> None:
    host, pristine = shared_legacy
    _reset(host, pristine)
    for target, how, data, at in changes:
        path = host.root / target
        path.parent.mkdir(parents=True, exist_ok=True)
        old = path.read_bytes() if path.is_file() else b""
        at = min(at, len(old))
        path.write_bytes({"replace": data, "insert": old[:at] + data + old[at:],
                          "cut": old[:at]}[how])
    crt, key = ca.issue(tmp_path_factory.mktemp("pair"), names=[host.name])
    if pair_kind == "garbage":
        crt.write_bytes(os.urandom(300))
    elif pair_kind == "truncated":
        crt.write_bytes(crt.read_bytes()[:400])
    elif pair_kind == "swapped":
        crt, key = key, crt
    elif pair_kind == "empty-key":
        key.write_bytes(b"")
    before = snapshot(host.root)
    env = {**os.environ, "SSL_CERT_FILE": str(bundle)}
    result = subprocess.run([str(CLI), "deploy", "--root", str(host.root), "--cert", str(crt),
                             "--key", str(key), "--probe-timeout", "15"], capture_output=True,
                            text=True, timeout=300, env=env, check=False)
    assert "Traceback" not in result.stdout + result.stderr
    assert result.returncode in (0, 1), result
    if result.returncode == 1:
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert differences(before, snapshot(host.root)) == [], result.stderr
        return
    status = subprocess.run([str(CLI), "status", "--json", "--root", str(host.root)],
                            capture_output=True, text=True, timeout=300, env=env, check=False)
    assert "Traceback" not in status.stderr
    report = json.loads(status.stdout)
    leaf = x509.load_pem_x509_certificates(crt.read_bytes())[0].public_bytes(Encoding.DER)
    assert report["endpoints"] and all(e["ok"] for e in report["endpoints"]), report
    assert host.served_cert("nginx") == leaf
