"""The installed Debian package python3-certbot-wazo, as Debian's certbot and the admin see it.

Runs only where the package is installed and CERTBOT_WAZO_DEB_INSTALLED=1 (.ci/package sets it);
the real issuance through the installed plugin is debian/tests/issue.
"""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(
    os.environ.get("CERTBOT_WAZO_DEB_INSTALLED") != "1",
    reason="needs python3-certbot-wazo installed and CERTBOT_WAZO_DEB_INSTALLED=1 (run .ci/package)")

HOOK = Path("/usr/share/certbot-wazo/hooks/certbot-wazo-deploy")


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    """Run against the installed package only (tests/conftest.py puts the tree on PYTHONPATH)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=120, cwd="/",
                          env=env)


def test_debian_certbot_lists_the_plugin(tmp_path: Path) -> None:
    dirs = [f"--{kind}-dir={tmp_path / kind}" for kind in ("config", "work", "logs")]
    result = run("/usr/bin/certbot", "plugins", "--text", *dirs)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "* wazo" in result.stdout.splitlines(), result.stdout


def test_command_is_installed() -> None:
    result = run("/usr/bin/certbot-wazo", "--help")
    assert result.returncode == 0, result.stderr
    assert "deploy" in result.stdout


def test_hook_is_shipped_executable() -> None:
    assert HOOK.is_file() and os.access(HOOK, os.X_OK)


def test_nothing_enabled_in_renewal_hooks() -> None:
    files = run("dpkg", "-L", "python3-certbot-wazo")
    assert files.returncode == 0, files.stderr
    assert str(HOOK) in files.stdout.splitlines()
    assert not [f for f in files.stdout.splitlines() if f.startswith("/etc/letsencrypt")]


def test_the_plugin_is_also_an_authenticator(tmp_path: Path) -> None:
    """`certbot run --configurator wazo` needs both interfaces."""
    dirs = [f"--{kind}-dir={tmp_path / kind}" for kind in ("config", "work", "logs")]
    result = run("/usr/bin/certbot", "plugins", "--text", "--authenticators", "--installers",
                 *dirs)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "* wazo" in result.stdout.splitlines(), result.stdout


@pytest.mark.parametrize("upgrader", ["wazo-upgrade", "xivo-upgrade"])
def test_upgrades_run_the_repair(upgrader: str) -> None:
    """wazo-upgrade (xivo-upgrade before 19.13) runs each executable of post-start.d; on a host
    where nothing was ever deployed the hook does nothing, successfully."""
    hook = Path(f"/usr/share/{upgrader}/post-start.d/90-certbot-wazo-repair")
    assert hook.is_file() and os.access(hook, os.X_OK)
    if Path("/var/lib/certbot-wazo").exists():
        pytest.skip("this machine has certbot-wazo state: the hook would repair it")
    result = run(str(hook))
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_package_changes_trigger_the_repair() -> None:
    triggers = Path("/var/lib/dpkg/info/python3-certbot-wazo.triggers").read_text()
    for directory in ("/usr/share/xivo-certs", "/usr/share/wazo-certs",
                      "/etc/nginx/sites-available", "/usr/share/xivo-config/templates"):
        assert f"interest-noawait {directory}" in triggers.splitlines()
    unit = Path("/lib/systemd/system/certbot-wazo-repair.service").read_text()
    assert "ExecStart=/usr/bin/certbot-wazo repair --wait-for-dpkg 3600" in unit
