"""`certbot run --configurator wazo -d NAME` on each release: HTTP-01 answered by the release's own
nginx site (real nginx on ports 80 and 443 of a private network), validated by pebble, the
certificate deployed, and nginx's configuration byte-identical afterwards."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from tests.sandbox.acme import Pebble
from tests.sandbox.certbot import Certbot, certbot_variants
from tests.sandbox.host import SandboxHost
from tests.sandbox.release import NAME, facts, releases

from .test_releases import _leaf_der

SNIPPET = "certbot-wazo-acme-challenge"


@pytest.fixture(scope="module")
def pebble(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pebble]:
    """pebble validating HTTP-01 on port 80, as Let's Encrypt does."""
    with Pebble(http_port=80) as server:
        server.start(tmp_path_factory.mktemp("pebble"))
        yield server


def _certbot(pebble: Pebble, workdir: Path, variant: str = "pypi") -> Certbot:
    variants = certbot_variants()
    if variant not in variants:
        pytest.fail(f"certbot {variant} is not installed (run .ci/bootstrap)")
    return Certbot(variants[variant], pebble, workdir)


def _tree(root: Path) -> dict[str, tuple[str, bytes]]:
    """Every file and link of /etc/nginx, with its bytes or target."""
    found: dict[str, tuple[str, bytes]] = {}
    for directory, dirs, names in os.walk(root / "etc/nginx"):
        for name in [*dirs, *names]:
            path = Path(directory) / name
            if path.is_symlink():
                found[str(path)] = ("link", os.readlink(path).encode())
            elif path.is_file():
                found[str(path)] = ("file", path.read_bytes())
            else:
                found[str(path)] = ("dir", b"")
    return found


def _wazo(host: SandboxHost) -> list[str]:
    return ["--wazo-root", str(host.root), "--wazo-probe-timeout", "30"]


@pytest.mark.parametrize("host", releases(), indirect=True)
def test_configurator_issues_and_deploys(host: SandboxHost, pebble: Pebble, tmp_path: Path) -> None:
    """One command, the release's own nginx answering, nothing left in its configuration."""
    before = _tree(host.root)
    cb = _certbot(pebble, tmp_path / "certbot")
    result = cb.run("run", "--configurator", "wazo", *_wazo(host), "-d", NAME)
    assert result.returncode == 0, result.stderr[-3000:]
    leaf = _leaf_der(cb.live(NAME) / "fullchain.pem")
    for unit in host.endpoints:
        assert host.served_cert(unit) == leaf, unit
    assert _tree(host.root) == before
    renewal = (cb.config_dir / "renewal" / f"{NAME}.conf").read_text()
    assert "authenticator = wazo" in renewal and "installer = wazo" in renewal
    # Where the answers went: the release's own include directory of the server the
    # validation reached (port 80's, or 443's where port 80 redirects).
    servers = facts(_release(host))["nginx"]["servers"]
    redirects = any(s["redirect"] for s in servers)
    answering = next(s for s in servers if s["listen"][0].startswith("443" if redirects else "80"))
    directory = answering["includes"][0].rsplit("/", 1)[0]
    assert f"{directory}/{SNIPPET}" in _log(cb)


def _release(host: SandboxHost) -> str:
    return str(json.loads((host.root / "etc/sandbox.json").read_text())["release"])


def _log(cb: Certbot) -> str:
    path = cb.logs_dir / "letsencrypt.log"
    return path.read_text() if path.exists() else ""


@pytest.mark.parametrize("host", ["15.12", "22.16"], indirect=True)
def test_renew_reuses_the_configurator(host: SandboxHost, pebble: Pebble, tmp_path: Path) -> None:
    """certbot renew answers through nginx again and deploys; Debian's certbot too."""
    before = _tree(host.root)
    for variant in sorted(certbot_variants()):
        cb = _certbot(pebble, tmp_path / variant, variant)
        assert cb.run("run", "--configurator", "wazo", *_wazo(host), "-d", NAME).returncode == 0
        first = _leaf_der(cb.live(NAME) / "fullchain.pem")
        result = cb.run("renew", "--force-renewal")
        assert result.returncode == 0, result.stderr[-3000:]
        renewed = _leaf_der(cb.live(NAME) / "fullchain.pem")
        assert renewed != first
        for unit in host.endpoints:
            assert host.served_cert(unit) == renewed, (variant, unit)
        assert _tree(host.root) == before


@pytest.mark.parametrize("host", ["22.16"], indirect=True)
def test_a_broken_nginx_configuration_stops_before_any_reload(host: SandboxHost, pebble: Pebble,
                                                              tmp_path: Path) -> None:
    """An admin's broken location file (nginx runs on its earlier configuration): nginx -t
    fails, certbot fails with nginx's own reason naming that file, nginx is not reloaded, the
    snippet is gone and nothing was deployed."""
    broken = host.root / "etc/nginx/locations/https-enabled/admin-broken"
    broken.write_text("location /admin-broken {\n    no_such_directive on;\n}\n")
    before = _tree(host.root)
    served = {unit: host.served_cert(unit) for unit in host.endpoints}
    reloads = host.events().count("reload nginx")
    cb = _certbot(pebble, tmp_path / "certbot")
    result = cb.run("run", "--configurator", "wazo", *_wazo(host), "-d", NAME)
    assert result.returncode != 0
    assert "nginx refuses its configuration" in result.stderr, result.stderr[-3000:]
    assert "no_such_directive" in result.stderr
    assert _tree(host.root) == before
    assert host.events().count("reload nginx") == reloads
    assert {unit: host.served_cert(unit) for unit in host.endpoints} == served


@pytest.mark.parametrize("host", ["25.17"], indirect=True)
def test_without_d_certbot_offers_the_hosts_names(host: SandboxHost, pebble: Pebble,
                                                  tmp_path: Path) -> None:
    """Interactive, no -d: certbot lists the names the host answers to; Enter takes them all."""
    cb = _certbot(pebble, tmp_path / "certbot")
    argv = [*cb.argv, "run", "--configurator", "wazo", *_wazo(host), "--server",
            pebble.directory_url, "--config-dir", str(cb.config_dir), "--work-dir",
            str(cb.work_dir), "--logs-dir", str(cb.logs_dir), "--agree-tos", "-m",
            "admin@example.test", "--no-eff-email", "--force-interactive"]
    result = subprocess.run(argv, input="\n", capture_output=True, text=True, timeout=180,
                            env=cb.env(), cwd=cb.workdir)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Which names would you like to activate HTTPS for?" in result.stdout
    assert f"1: {NAME}" in result.stdout
    leaf = _leaf_der(cb.live(NAME) / "fullchain.pem")
    for unit in host.endpoints:
        assert host.served_cert(unit) == leaf, unit
