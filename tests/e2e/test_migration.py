"""The README's one-shot migrations from Wazo's self-signed certificate, one per way to prove the name."""
from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from tests.e2e.test_certbot import serves, wazo_args
from tests.sandbox.acme import Pebble
from tests.sandbox.certbot import Certbot, certbot_variants
from tests.sandbox.host import SandboxHost, build_host

HOOK = Path(__file__).with_name("dns01_hook.py")
ACME_LOCATION = "location ^~ /.well-known/acme-challenge/ {\n    root /var/www/certbot;\n}\n"


def debian_certbot(pebble: Pebble, workdir: Path) -> Certbot:
    """What a Wazo admin has: Debian's certbot (the newest when it is not installed)."""
    variants = certbot_variants()
    return Certbot(variants.get("debian") or variants["pypi"], pebble, workdir)


@pytest.fixture
def wazo_with_http(pebble: Pebble) -> Iterator[SandboxHost]:
    """A legacy host whose nginx serves plain HTTP where pebble validates HTTP-01 (under a
    directory nginx's www-data workers can traverse, unlike pytest's 0700 tmp_path)."""
    top = Path(tempfile.mkdtemp(prefix="certbot-wazo-http01-"))
    top.chmod(0o755)
    host = build_host(top / "root", "legacy", http_port=pebble.http_port)
    try:
        host.start()
        yield host
    finally:
        host.stop()
        shutil.rmtree(top, ignore_errors=True)


def test_http01_through_wazos_nginx(wazo_with_http: SandboxHost, pebble: Pebble,
                                    tmp_path: Path) -> None:
    host = wazo_with_http
    location = host.root / "etc/nginx/locations/http-enabled/acme-challenge"
    location.write_text(ACME_LOCATION)
    (host.root / "var/www/certbot").mkdir(parents=True)
    assert host.run("systemctl", "reload", "nginx").returncode == 0
    cb = debian_certbot(pebble, tmp_path / "certbot")
    result = cb.run("run", "-a", "webroot", "-w", str(host.root / "var/www/certbot"),
                    *wazo_args(host), "-d", host.name)
    assert result.returncode == 0, result.stderr[-2000:]
    assert serves(host, cb.live(host.name) / "fullchain.pem")


@pytest.mark.parametrize("generation", ["legacy", "modern"])
def test_dns01(generation: str, pebble: Pebble, tmp_path: Path) -> None:
    with build_host(tmp_path / "root", generation) as host:
        host.start()
        cb = debian_certbot(pebble, tmp_path / "certbot")
        hook = f"{sys.executable} {HOOK}"
        result = cb.run("run", "-a", "manual", "--preferred-challenges", "dns",
                        "--manual-auth-hook", hook, "--manual-cleanup-hook", f"{hook} cleanup",
                        *wazo_args(host), "-d", host.name,
                        env_extra={"CHALLTESTSRV": pebble.dns_management_url})
        assert result.returncode == 0, result.stderr[-2000:]
        assert serves(host, cb.live(host.name) / "fullchain.pem")
