"""revert never loses what an admin changed after the deployment."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from certbot_wazo.host import HOSTS_CUSTOM
from tests.pki import CA
from tests.sandbox.host import SandboxHost
from tests.sandbox.tree import differences, snapshot

CLI = Path(sys.executable).with_name("certbot-wazo")


def _run(host: SandboxHost, trust: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CLI), *args, "--root", str(host.root)], capture_output=True,
                          text=True, timeout=300, check=False,
                          env={**os.environ, "SSL_CERT_FILE": str(trust)})


def test_revert_refuses_to_drop_an_admins_later_edit(reset_legacy: SandboxHost, ca: CA,
                                                     trust: Path, tmp_path: Path) -> None:
    host = reset_legacy
    original = snapshot(host.root)
    crt, key = ca.issue(tmp_path / "pair", names=[host.name])
    assert _run(host, trust, "deploy", "--cert", str(crt), "--key", str(key)).returncode == 0
    template = host.root / HOSTS_CUSTOM.lstrip("/")
    ours = template.read_bytes()
    template.write_bytes(ours + b"10.0.0.5\tsbc.example.test\n")
    edited = snapshot(host.root)

    refused = _run(host, trust, "revert")
    assert refused.returncode == 1
    assert refused.stderr.startswith(f"{template}: changed since certbot-wazo wrote it")
    assert differences(edited, snapshot(host.root)) == []

    template.write_bytes(ours)  # the admin takes the edit back out, as the message says
    assert _run(host, trust, "revert").returncode == 0, "revert after undoing the edit"
    assert differences(original, snapshot(host.root)) == []
