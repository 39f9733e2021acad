"""The Ansible collection (ansible/): the role deploy on three remote targets, one of which
fails; the play goes on for the others, writes one report, and ends non-zero."""
from __future__ import annotations

import json
import os
import shutil
import socket
import ssl
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.pki import CA
from tests.sandbox.host import build_host
from tests.sandbox.remote import Target, Targets

REPO = Path(__file__).resolve().parents[2]
COLLECTIONS = REPO / "ansible"
PLAYBOOK = REPO / "ansible/playbooks/deploy.yml"
INVENTORY = REPO / "ansible/inventory/hosts.ini"
ANSIBLE_PLAYBOOK = REPO / ".venv/bin/ansible-playbook"
COMMAND = REPO / ".venv/bin/certbot-wazo"
NAME = "wazo.example.test"

pytestmark = pytest.mark.skipif(not os.access(ANSIBLE_PLAYBOOK, os.X_OK),
                                reason="ansible-core is not in .venv (bash .ci/bootstrap installs it)")


def _env(tmp_path: Path, **more: str) -> dict[str, str]:
    return {**os.environ, "ANSIBLE_COLLECTIONS_PATH": str(COLLECTIONS),
            "ANSIBLE_HOME": str(tmp_path / "ansible-home"), "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_RETRY_FILES_ENABLED": "0",
            # No ControlPersist: no ssh master outlives the play.
            "ANSIBLE_SSH_ARGS": "-o ControlMaster=no", **more}


def _served_der(targets: Targets, target: Target) -> bytes:
    """The leaf the target serves on its nginx endpoint (through ssh -W)."""
    address = next(iter(target.host.endpoints.values()))
    host, port = address.rsplit(":", 1)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    stream: socket.socket = targets.tunnel(target, int(port), host)
    stream.settimeout(10)
    with context.wrap_socket(stream, server_hostname=NAME) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der
    return der


def test_example_playbook_syntax(tmp_path: Path) -> None:
    result = subprocess.run([str(ANSIBLE_PLAYBOOK), "--syntax-check", "-i", str(INVENTORY), str(PLAYBOOK)],
                            env=_env(tmp_path), cwd=tmp_path, capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_role_deploys_each_host_and_reports_the_failed_one(targets: Targets, tmp_path: Path) -> None:
    made = [targets.add(name, lambda root: build_host(root, "legacy")) for name in ("pbx1", "pbx2", "pbx3")]
    good, bad = [made[0], made[2]], made[1]
    before = {t.name: _served_der(targets, t) for t in made}
    bad.host.fault("restart-fails")

    ca = CA("Ansible")
    lineage = tmp_path / "letsencrypt/live" / NAME
    fullchain, _ = ca.issue(lineage)
    new_der = ssl.PEM_cert_to_DER_cert(fullchain.read_text().split("-----END CERTIFICATE-----")[0]
                                       + "-----END CERTIFICATE-----\n")
    assert all(der != new_der for der in before.values())

    inventory = tmp_path / "hosts.ini"
    inventory.write_text(
        "[wazo]\n" + "".join(f"{t.name} certbot_wazo_root={t.root}\n" for t in made)
        + "\n[wazo:vars]\nansible_user=root\n"
        f"ansible_ssh_common_args='-F {targets.ssh_config}'\n"
        f"certbot_wazo_ssh_config={targets.ssh_config}\n")
    report_path = tmp_path / "report.json"
    playbook = tmp_path / "deploy.yml"
    playbook.write_text(json.dumps([{
        "name": "Deploy into the test targets", "hosts": "wazo", "gather_facts": False,
        "roles": [{"role": "wazo_community.certbot_wazo.deploy", "vars": {
            "certbot_wazo_lineage": str(lineage), "certbot_wazo_command": str(COMMAND),
            "certbot_wazo_report_path": str(report_path)}}]}]))

    result = subprocess.run(
        [str(ANSIBLE_PLAYBOOK), "-i", str(inventory), str(playbook)],
        env=_env(tmp_path, SSL_CERT_FILE=str(ca.trust_bundle(tmp_path / "trust.pem"))),
        cwd=tmp_path, capture_output=True, text=True, timeout=150, check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "certbot-wazo failed on: pbx2" in output, output

    report: dict[str, Any] = json.loads(report_path.read_text())
    assert report["healthy"] == ["pbx1", "pbx3"], report
    assert report["failing"] == ["pbx2"], report
    assert report["expiring"] == [], report
    for target in good:
        entry = report["hosts"][target.name]
        assert entry["mode"] == "remote", entry  # auto: no python3 on the target's PATH
        assert (entry["healthy"], entry["failed"], entry["deployed"]) == (True, False, True), entry
        assert entry["problems"] == [] and 85 <= entry["days_left"] <= 90, entry
        assert entry["not_after"], entry
        assert _served_der(targets, target) == new_der, target
    failed = report["hosts"]["pbx2"]
    assert (failed["mode"], failed["healthy"], failed["failed"], failed["deployed"]) == \
        ("remote", False, True, False), failed
    assert any("root@pbx2" in problem and "failed" in problem for problem in failed["problems"]), failed
    assert _served_der(targets, bad) == before["pbx2"], "the failed host serves its previous certificate"

    for target in made:  # the mode was detected on the target itself, through ssh
        assert any("python3" in command for command in target.commands()), target.name
    shutil.rmtree(tmp_path / "ansible-home", ignore_errors=True)
