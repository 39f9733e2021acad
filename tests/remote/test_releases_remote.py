"""Every release of the corpus (hosts built from upstream's facts) deployed over SSH, with only sh
and coreutils in the host's sessions: each endpoint of the release's table serves the new pair,
and revert puts every file back byte for byte."""
from __future__ import annotations

import functools
import json
import os
import ssl
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from tests.pki import CA
from tests.sandbox.acme import Pebble
from tests.sandbox.certbot import Certbot, certbot_variants
from tests.sandbox.host import SandboxHost
from tests.sandbox.release import build_release, releases
from tests.sandbox.remote import Target, Targets
from tests.sandbox.tree import differences, snapshot

REPO = Path(__file__).resolve().parents[2]
NAME = "wazo.example.test"


@pytest.fixture(scope="module")
def ca() -> CA:
    return CA("Remote releases")


def served(targets: Targets, target: Target, address: str) -> bytes:
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    with targets.tunnel(target, int(port), f"[{host}]" if ":" in host else host) as sock:
        sock.settimeout(10)
        with ctx.wrap_socket(sock, server_hostname=NAME) as tls:
            return tls.getpeercert(binary_form=True) or b""


def certbot_wazo(targets: Targets, target: Target, bundle: Path,
                 *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "certbot_wazo.cli", *args, "--ssh", target.destination,
         "--ssh-config", str(targets.ssh_config), "--root", str(target.root)],
        capture_output=True, text=True, timeout=300, cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), "SSL_CERT_FILE": str(bundle)})


@pytest.mark.parametrize("release", releases())
def test_release_deployed_and_reverted_over_ssh(targets: Targets, ca: CA, tmp_path: Path,
                                               release: str) -> None:
    target = targets.add("r" + release.replace(".", ""),
                         functools.partial(build_release, release=release, name=NAME))
    try:
        bundle = ca.trust_bundle(tmp_path / "trust.pem")
        before = snapshot(target.root)
        fullchain, key = ca.issue(tmp_path / "pair", names=[NAME])
        deployed = certbot_wazo(targets, target, bundle, "deploy", "--cert", str(fullchain),
                                "--key", str(key), "--hostname", NAME, "--probe-timeout", "30")
        assert deployed.returncode == 0, deployed.stdout + deployed.stderr
        leaf = x509.load_pem_x509_certificates(fullchain.read_bytes())[0] \
            .public_bytes(Encoding.DER)
        for unit, address in target.host.endpoints.items():
            assert served(targets, target, address) == leaf, unit
        status = certbot_wazo(targets, target, bundle, "status", "--hostname", NAME)
        assert status.returncode == 0, status.stdout + status.stderr
        assert f"release {release}, family " in status.stdout, status.stdout

        reverted = certbot_wazo(targets, target, bundle, "revert")
        assert reverted.returncode == 0, reverted.stdout + reverted.stderr
        assert differences(before, snapshot(target.root)) == []
    finally:
        target.stop()


def test_directory_definitions_of_a_legacy_host_over_ssh(targets: Targets, ca: CA,
                                                         tmp_path: Path) -> None:
    """18.03 runs Debian 9: remote mode is its way in. Its directory definitions are changed
    with its own psql over SSH, and revert puts the rows back byte for byte."""
    from tests.sandbox.database import Postgres, unavailable
    from tests.sandbox.requirements import need
    need("postgres", unavailable())
    with Postgres() as postgres:
        postgres.create_asterisk("18.03")
        postgres.seed_variant("custom")

        def build(root: Path) -> SandboxHost:
            host = build_release(root, "18.03", NAME)
            conf_d = host.root / "etc/xivo-confgend/conf.d"
            conf_d.mkdir(parents=True, exist_ok=True)
            (conf_d / "zz-tests-database.yml").write_text(f"db_uri: {postgres.uri()}\n")
            (host.root / "usr/bin/psql").symlink_to("/usr/bin/psql")
            return host

        target = targets.add("db1803", build)
        try:
            bundle = ca.trust_bundle(tmp_path / "trust.pem")
            dump = postgres.dump()
            fullchain, key = ca.issue(tmp_path / "pair", names=[NAME])
            deployed = certbot_wazo(targets, target, bundle, "deploy", "--cert", str(fullchain),
                                    "--key", str(key), "--hostname", NAME)
            assert deployed.returncode == 0, deployed.stdout + deployed.stderr
            custom = next(r for r in postgres.rows() if r["xivo_custom_ca_path"] is not None
                          and r["uri"].startswith("https://"))
            assert custom["uri"] == f"https://{NAME}:9486" and custom["xivo_custom_ca_path"] == ""
            reverted = certbot_wazo(targets, target, bundle, "revert")
            assert reverted.returncode == 0, reverted.stdout + reverted.stderr
            assert postgres.dump() == dump
        finally:
            target.stop()


@pytest.mark.parametrize("release", ["18.03", "25.17"])
def test_configurator_over_ssh(targets: Targets, tmp_path: Path, release: str) -> None:
    """certbot run --configurator wazo --wazo-ssh: the remote host's own nginx answers HTTP-01
    on its own address (pebble resolves the name there), the pair is deployed there, and its
    nginx configuration is byte-identical afterwards."""
    target = targets.add("c" + release.replace(".", ""),
                         functools.partial(build_release, release=release, name=NAME))
    try:
        nginx_before = {k: v for k, v in snapshot(target.root).items() if k.startswith("etc/nginx")}
        with Pebble(http_port=80) as pebble:
            pebble.start(tmp_path / "pebble")
            request = urllib.request.Request(
                f"{pebble.dns_management_url}/add-a", method="POST",
                data=json.dumps({"host": NAME, "addresses": [target.address]}).encode())
            urllib.request.urlopen(request, timeout=10).close()
            cb = Certbot(certbot_variants()["pypi"], pebble, tmp_path / "certbot")
            result = cb.run("run", "--configurator", "wazo", "--wazo-ssh", target.destination,
                            "--wazo-ssh-config", str(targets.ssh_config), "--wazo-root",
                            str(target.root), "--wazo-probe-timeout", "30", "-d", NAME)
            assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
            leaf = x509.load_pem_x509_certificates(
                (cb.live(NAME) / "fullchain.pem").read_bytes())[0].public_bytes(Encoding.DER)
        for unit, address in target.host.endpoints.items():
            assert served(targets, target, address) == leaf, unit
        nginx_after = {k: v for k, v in snapshot(target.root).items() if k.startswith("etc/nginx")}
        assert differences(nginx_before, nginx_after) == []
    finally:
        target.stop()
