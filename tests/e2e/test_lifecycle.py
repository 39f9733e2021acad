"""Renewal that always ends deployed: the deploy hook, retry after a failure, status, revert."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Callable

from tests.e2e.test_certbot import gentle_reloads, obtain, restart_alls, serves
from tests.sandbox.certbot import Certbot
from tests.sandbox.host import SandboxHost
from tests.sandbox.tree import differences, snapshot

CertbotFactory = Callable[[str], Certbot]
HOOK = Path(__file__).resolve().parents[2] / "hooks/certbot-wazo-deploy"


def certbot_wazo(cb: Certbot) -> str:
    """The certbot-wazo command of the same environment as this certbot."""
    return str(Path(cb.argv[0]).parent / "certbot-wazo")


def cli(cb: Certbot, host: SandboxHost, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([certbot_wazo(cb), *args, "--root", str(host.root)],
                          capture_output=True, text=True, env=cb.env(), timeout=120)


def hook_env(cb: Certbot, host: SandboxHost) -> dict[str, str]:
    return {"CERTBOT_WAZO": certbot_wazo(cb), "CERTBOT_WAZO_ROOT": str(host.root)}


def test_hook_deploys_from_renewed_lineage(legacy_host: SandboxHost, certbot: CertbotFactory,
                                           certbot_variant: str) -> None:
    cb, host = certbot(certbot_variant), legacy_host
    result = cb.run("certonly", *cb.standalone_args(), "-d", host.name, "--deploy-hook",
                    str(HOOK), env_extra=hook_env(cb, host))
    assert result.returncode == 0, result.stderr[-2000:]
    assert serves(host, cb.live(host.name) / "fullchain.pem")
    result = cb.run("renew", "--force-renewal", env_extra=hook_env(cb, host))
    assert result.returncode == 0, result.stderr[-2000:]
    assert serves(host, cb.live(host.name) / "fullchain.pem")
    assert (restart_alls(host), gentle_reloads(host)) == (1, 1)


def test_hook_leaves_installer_lineages_alone(legacy_host: SandboxHost, certbot: CertbotFactory,
                                              certbot_variant: str) -> None:
    cb, host = certbot(certbot_variant), legacy_host
    obtain(cb, host)
    hooks = cb.config_dir / "renewal-hooks/deploy"
    hooks.mkdir(parents=True, exist_ok=True)
    shutil.copy(HOOK, hooks / "certbot-wazo")
    result = cb.run("renew", "--force-renewal", env_extra=hook_env(cb, host))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "deployed by certbot's wazo installer; nothing to do" in result.stdout + result.stderr
    # One deployment for the migration, one (gentle) for the renewal: never two.
    assert (restart_alls(host), gentle_reloads(host)) == (1, 1)
    assert serves(host, cb.live(host.name) / "fullchain.pem")


def test_failed_renewal_is_retried(legacy_host: SandboxHost, certbot: CertbotFactory,
                                   certbot_variant: str) -> None:
    cb, host = certbot(certbot_variant), legacy_host
    obtain(cb, host)
    host.fault("xivo-confd.stale")
    assert cb.run("renew", "--force-renewal").returncode != 0
    live = cb.live(host.name) / "fullchain.pem"
    assert not serves(host, live)

    status = cli(cb, host, "status", "--json", "--config-dir", str(cb.config_dir))
    assert status.returncode == 1
    report = json.loads(status.stdout)
    assert report["healthy"] is False and report["lineage"]["installed"] is False
    assert any("failed at" in p and "retry" in p for p in report["problems"])
    assert any("is not the one installed" in p for p in report["problems"])

    host.fault("xivo-confd.stale", on=False)
    retried = cli(cb, host, "retry")
    assert retried.returncode == 0, retried.stderr
    assert serves(host, live)
    status = cli(cb, host, "status", "--config-dir", str(cb.config_dir))
    assert status.returncode == 0, status.stdout
    assert status.stdout.rstrip().endswith("Healthy.")
    assert cli(cb, host, "retry").stdout.strip() == "No failed deployment to retry"


def test_status_of_an_endpoint_that_is_down(legacy_host: SandboxHost, certbot: CertbotFactory,
                                            certbot_variant: str) -> None:
    cb, host = certbot(certbot_variant), legacy_host
    obtain(cb, host)
    assert host.run("systemctl", "stop", "xivo-amid").returncode == 0
    status = cli(cb, host, "status", "--json")
    assert status.returncode == 1
    failing = [e for e in json.loads(status.stdout)["endpoints"] if not e["ok"]]
    assert [e["endpoint"].split()[-1] for e in failing] == ["(xivo-amid)"]


def test_revert_restores_the_original_tree(legacy_host: SandboxHost, certbot: CertbotFactory,
                                           certbot_variant: str) -> None:
    cb, host = certbot(certbot_variant), legacy_host
    original = snapshot(host.root)
    self_signed = {unit: host.served_cert(unit) for unit in host.endpoints}
    obtain(cb, host)
    result = cli(cb, host, "revert")
    assert result.returncode == 0, result.stderr
    assert differences(original, snapshot(host.root)) == []
    assert {unit: host.served_cert(unit) for unit in host.endpoints} == self_signed
    assert not (host.root / "var/lib/certbot-wazo/original").exists()
    assert cli(cb, host, "revert").returncode == 1  # nothing left to revert


def test_mismatched_pair_through_deploy_changes_nothing(legacy_host: SandboxHost,
                                                        certbot: CertbotFactory,
                                                        certbot_variant: str) -> None:
    cb, host = certbot(certbot_variant), legacy_host
    obtain(cb, host)
    before, events = snapshot(host.root, excluded=("run", "var/log")), host.events()
    live = cb.live(host.name)
    result = cli(cb, host, "deploy", "--cert", str(live / "fullchain.pem"), "--key",
                 str(host.certs_dir.parent / "xivo-config" / "nope.pem"))
    assert result.returncode == 1 and result.stderr.count("\n") == 1
    assert "nope.pem: private key file not found" in result.stderr
    stale_key = host.root / "stale.key"
    blobs = (host.root / "var/lib/certbot-wazo/original").glob("*.blob")
    stale_key.write_bytes(next(b.read_bytes() for b in blobs if b"PRIVATE KEY" in b.read_bytes()))
    result = cli(cb, host, "deploy", "--cert", str(live / "fullchain.pem"), "--key", str(stale_key))
    assert result.returncode == 1
    assert f"{stale_key}: " in result.stderr
    stale_key.unlink()
    assert differences(before, snapshot(host.root, excluded=("run", "var/log"))) == []
    assert host.events() == events


def test_usage_errors_exit_2(legacy_host: SandboxHost, certbot: CertbotFactory,
                             certbot_variant: str) -> None:
    cb, host = certbot(certbot_variant), legacy_host
    assert cli(cb, host, "deploy").returncode == 2
    assert cli(cb, host, "deploy", "--lineage", "/nonexistent").returncode == 2
    bad = cli(cb, host, "deploy", "--lineage", "/tmp", "--hostname", "a;rm -rf /")
    assert bad.returncode == 2 and "--hostname" in bad.stderr
