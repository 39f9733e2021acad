"""Each release of the corpus, end to end: a host built from upstream's facts, a first deployment
and a certificate-only renewal, endpoints discovered from the host (no --probe)."""
from __future__ import annotations

import contextlib
import json
import os
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from tests.bench.handshakes import HandshakeLoop
from tests.pki import CA
from tests.sandbox.config import daemon_config
from tests.sandbox.host import SandboxHost
from tests.sandbox.peers import client_context, resolve
from tests.sandbox.release import NAME, facts, releases

CLI = Path(sys.executable).with_name("certbot-wazo")


@pytest.fixture(scope="module")
def ca() -> CA:
    return CA("Releases")


def _leaf_der(fullchain: Path) -> bytes:
    return x509.load_pem_x509_certificates(fullchain.read_bytes())[0].public_bytes(Encoding.DER)


def _deploy(host: SandboxHost, pair: tuple[Path, Path], bundle: Path) -> subprocess.CompletedProcess[str]:
    env = dict(host.env(), SSL_CERT_FILE=str(bundle))
    env.pop("SSL_CERT_DIR", None)
    return subprocess.run([str(CLI), "deploy", "--root", str(host.root), "--cert", str(pair[0]),
                           "--key", str(pair[1]), "--hostname", NAME, "--probe-timeout", "30"],
                          capture_output=True, text=True, timeout=300, env=env, check=False)


@pytest.mark.parametrize("host", releases(), indirect=True)
def test_release_deploy_then_renew(host: SandboxHost, ca: CA, tmp_path: Path) -> None:
    release = facts(_release(host))
    table = release["endpoints"]
    assert table, "the corpus gives every release at least one TLS endpoint"
    assert set(host.endpoints) >= {row["unit"] for row in table}
    bundle = ca.trust_bundle(tmp_path / "trust.pem")

    first = ca.issue(tmp_path / "first", names=[NAME])
    result = _deploy(host, first, bundle)
    assert result.returncode == 0, result.stderr
    for unit in host.endpoints:
        assert host.served_cert(unit) == _leaf_der(first[0]), unit

    renewed = ca.issue(tmp_path / "renewed", names=[NAME])
    nginx = next((unit for unit in host.endpoints if unit.startswith("nginx")), None)
    with HandshakeLoop(host.endpoints[nginx], NAME) if nginx else \
            contextlib.nullcontext() as loop:
        result = _deploy(host, renewed, bundle)
    assert result.returncode == 0, result.stderr
    for unit in host.endpoints:
        assert host.served_cert(unit) == _leaf_der(renewed[0]), unit
    if loop is not None:
        assert loop.served and loop.failed() == 0, (len(loop.served), loop.failed())

    assert _peer_errors(host, release, bundle) == []

    status = subprocess.run([str(CLI), "status", "--root", str(host.root), "--hostname", NAME],
                            capture_output=True, text=True, timeout=120, check=False,
                            env=dict(host.env(), SSL_CERT_FILE=str(bundle)))
    assert f"release {_release(host)}, family " in status.stdout, status.stdout


def _peer_errors(host: SandboxHost, release: dict[str, object], bundle: Path) -> list[str]:
    """Every client section that verifies server.crt in the packaged configuration, calling its
    peer (when the release table serves it) the way the daemon's HTTP client would."""
    ports = {row["port"] for row in release["endpoints"]}  # type: ignore[attr-defined]
    errors = []
    for daemon in release["daemons"]:  # type: ignore[attr-defined]
        config = daemon_config(host.root, daemon["unit"])
        for dotted in daemon["verifies_server_crt"]:
            section = config.get(dotted.split(".")[0], {})
            if not isinstance(section, dict) or section.get("port") not in ports:
                continue
            name = str(section.get("host", "localhost"))
            address = resolve(host.root, name) or name
            context = client_context(host.root, section.get(dotted.rsplit(".", 1)[-1], True),
                                     bundle)
            try:
                with socket.create_connection((address, int(section["port"])), timeout=5) as sock:
                    with context.wrap_socket(sock, server_hostname=name):
                        pass
            except (OSError, ssl.SSLError) as exc:
                errors.append(f"{daemon['unit']} {dotted} -> {name}:{section['port']}: {exc}")
    return errors


def _release(host: SandboxHost) -> str:
    return str(json.loads((host.root / "etc/sandbox.json").read_text())["release"])


def test_the_network_is_private() -> None:
    """The guard works: in here, loopback is the only interface (unshare --net)."""
    with open("/proc/self/net/dev", encoding="ascii") as stream:
        assert [line.split(":")[0].strip() for line in stream.readlines()[2:]] == ["lo"]


@pytest.mark.parametrize("host", ["19.17", "25.17"], indirect=True)
def test_nginx_on_its_own_certificate(host: SandboxHost, ca: CA, tmp_path: Path) -> None:
    """An admin who followed upstream's page since 19.01 (certbot --nginx, or their own
    ssl_certificate) has nginx serving another file: another certificate stops the deployment
    before any change; the certificate being deployed is accepted, and nginx is probed."""
    bundle = ca.trust_bundle(tmp_path / "trust.pem")
    live = host.root / "etc/letsencrypt/live" / NAME
    site = host.root / "etc/nginx/sites-available/wazo"
    crt_dir = json.loads((host.root / "etc/sandbox.json").read_text())
    wazo_crt = next(line.split()[1].rstrip(";") for line in site.read_text().splitlines()
                    if line.strip().startswith("ssl_certificate "))
    other = ca.issue(tmp_path / "other", names=[NAME])
    live.mkdir(parents=True)
    for source_file, name in ((other[0], "fullchain.pem"), (other[1], "privkey.pem")):
        (live / name).write_bytes(source_file.read_bytes())
    site.write_text(site.read_text()
                    .replace(f"ssl_certificate {wazo_crt};",
                             f"ssl_certificate /etc/letsencrypt/live/{NAME}/fullchain.pem;")
                    .replace(f"ssl_certificate_key {wazo_crt[:-4]}.key;",
                             f"ssl_certificate_key /etc/letsencrypt/live/{NAME}/privkey.pem;"))
    assert host.run("systemctl", "reload", "nginx").returncode == 0
    before = {p: p.read_bytes() for p in (host.root / "usr/share").rglob("server.*")}

    pair = ca.issue(tmp_path / "pair", names=[NAME])
    refused = _deploy(host, pair, bundle)
    assert refused.returncode == 1
    assert refused.stderr.strip().startswith(f"{site}:") and "nginx serves" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    assert {p: p.read_bytes() for p in before} == before

    for source_file, name in ((pair[0], "fullchain.pem"), (pair[1], "privkey.pem")):
        (live / name).write_bytes(source_file.read_bytes())
    assert host.run("systemctl", "reload", "nginx").returncode == 0
    result = _deploy(host, pair, bundle)
    assert result.returncode == 0, result.stderr
    assert host.served_cert("nginx") == _leaf_der(pair[0])
    assert crt_dir["release"] in ("19.17", "25.17")


@pytest.mark.parametrize("host", ["18.03"], indirect=True)
def test_sysconfd_rewriting_etc_hosts_is_reported_and_repaired(host: SandboxHost, ca: CA,
                                                               tmp_path: Path) -> None:
    """wazo-sysconfd writes /etc/hosts from its own template when the wizard or the network
    settings call it (wazo-platform/wazo-sysconfd wazo-18.03, templates/resolvconf/hosts: only
    localhost and `127.0.1.1 HOST.DOMAIN localhost.localdomain HOST`): NAME no longer resolves
    to 127.0.0.1. status says so; deploying the same pair again re-renders it, restarting
    nothing."""
    bundle = ca.trust_bundle(tmp_path / "trust.pem")
    pair = ca.issue(tmp_path / "pair", names=[NAME])
    assert _deploy(host, pair, bundle).returncode == 0
    hostname, domain = NAME.split(".", 1)
    (host.root / "etc/hosts").write_text(
        "# XIVO: FILE AUTOMATICALLY GENERATED BY THE XIVO CONFIGURATION SUBSYSTEM\n"
        f"127.0.0.1\tlocalhost\n127.0.1.1\t{NAME}\tlocalhost.localdomain\t{hostname}\n")
    env = dict(host.env(), SSL_CERT_FILE=str(bundle))
    status = subprocess.run([str(CLI), "status", "--root", str(host.root), "--hostname", NAME],
                            capture_output=True, text=True, timeout=120, check=False, env=env)
    assert status.returncode == 1
    assert f"{host.root}/etc/hosts: {NAME} resolves to 127.0.1.1" in status.stdout
    events = len(host.events())
    again = _deploy(host, pair, bundle)
    assert again.returncode == 0, again.stderr
    assert [e for e in host.events()[events:] if e.startswith(("restart", "stop"))] == []
    status = subprocess.run([str(CLI), "status", "--root", str(host.root), "--hostname", NAME],
                            capture_output=True, text=True, timeout=120, check=False, env=env)
    assert status.returncode == 0, status.stdout
    assert domain in NAME


def _postinst_configure(host: SandboxHost, crt_mode: int) -> None:
    """What wazo-certs' postinst does on every configure (wazo-platform/wazo-certs wazo-24.04,
    debian/wazo-certs.postinst): a new self-signed pair only when a file is missing, then
    root:www-data, key 0640, certificate 0644."""
    certs = host.certs_dir
    if not (certs / "server.key").exists() or not (certs / "server.crt").exists():
        subprocess.run(["openssl", "req", "-x509", "-sha256", "-nodes", "-days", "825", "-newkey",
                        "rsa:2048", "-subj", "/CN=localhost", "-keyout", str(certs / "server.key"),
                        "-out", str(certs / "server.crt")], check=True, capture_output=True)
    for name, mode in (("server.key", 0o640), ("server.crt", crt_mode)):
        os.chown(certs / name, 0, 33)
        os.chmod(certs / name, mode)


@pytest.mark.parametrize("host", ["24.16"], indirect=True)
def test_wazo_certs_upgrade_and_reinstall(host: SandboxHost, ca: CA, tmp_path: Path) -> None:
    """An upgrade of wazo-certs resets owner and modes: the deployed pair stays healthy. A
    remove (postrm deletes the pair) then install makes a new self-signed pair: status says the
    host no longer has the deployed certificate; deploying it again puts it back."""
    bundle = ca.trust_bundle(tmp_path / "trust.pem")
    pair = ca.issue(tmp_path / "pair", names=[NAME])
    assert _deploy(host, pair, bundle).returncode == 0
    env = dict(host.env(), SSL_CERT_FILE=str(bundle))

    def status() -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(CLI), "status", "--root", str(host.root), "--hostname", NAME],
                              capture_output=True, text=True, timeout=120, check=False, env=env)

    _postinst_configure(host, 0o644)
    assert status().returncode == 0, status().stdout
    for name in ("server.key", "server.crt"):
        (host.certs_dir / name).unlink()
    _postinst_configure(host, 0o644)
    after = status()
    assert after.returncode == 1, after.stdout
    assert "self-signed" in after.stdout or "does not serve" in after.stdout, after.stdout
    assert _deploy(host, pair, bundle).returncode == 0
    assert status().returncode == 0


def _manual_procedure(host: SandboxHost, extra: str = "") -> list[Path]:
    """What an admin who followed the pre-19.01 page left behind (wazo-doc wazo-18.05,
    source/system/https_certificate.rst): custom-certificate.yml, its 010 links (absolute, as
    the page's `ln -s` makes them) and the hosts template made by its sed."""
    custom = host.root / "etc/xivo/custom/custom-certificate.yml"
    custom.parent.mkdir(parents=True, exist_ok=True)
    sections = ("consul", "agentd", "amid", "auth", "confd", "dird", "websocketd")
    custom.write_text("".join(f"{s}:\n  host: {NAME}\n  "
                              f"{'verify' if s == 'consul' else 'verify_certificate'}: True\n"
                              for s in sections) + extra)
    made = [custom]
    for conf_d in sorted(host.root.glob("etc/wazo-*/conf.d")):
        (conf_d / "010-custom-certificate.yml").symlink_to("/etc/xivo/custom/custom-certificate.yml")
        made.append(conf_d / "010-custom-certificate.yml")
    base = host.root / "usr/share/xivo-config/templates/system/etc/hosts"
    template = host.root / "etc/xivo/custom-templates/system/etc/hosts"
    template.parent.mkdir(parents=True, exist_ok=True)
    template.write_text(base.read_text().replace("127.0.1.1", "127.0.0.1"))
    return [*made, template]


@pytest.mark.parametrize("host", ["24.16"], indirect=True)
def test_upgraded_host_loses_the_old_overrides_in_one_transaction(host: SandboxHost, ca: CA,
                                                                 tmp_path: Path) -> None:
    """From 19.01 upstream asks to remove the old procedure's files: the deployment removes
    them with the new pair, restarts once the documented way, and revert puts them back."""
    bundle = ca.trust_bundle(tmp_path / "trust.pem")
    left = _manual_procedure(host)
    before = {p: (p.is_symlink(), os.readlink(p) if p.is_symlink() else p.read_bytes())
              for p in left}
    status = subprocess.run([str(CLI), "status", "--root", str(host.root), "--hostname", NAME],
                            capture_output=True, text=True, timeout=120, check=False,
                            env=dict(host.env(), SSL_CERT_FILE=str(bundle)))
    assert f"{left[0]}: left by the pre-19.01 procedure" in status.stdout, status.stdout
    pair = ca.issue(tmp_path / "pair", names=[NAME])
    result = _deploy(host, pair, bundle)
    assert result.returncode == 0, result.stderr
    assert "pre-19.01 procedure" in result.stdout + result.stderr
    assert [p for p in left if p.exists() or p.is_symlink()] == []
    assert "restart all" in " ".join(" ".join(c) for c in host.commands())
    for unit in host.endpoints:
        assert host.served_cert(unit) == _leaf_der(pair[0]), unit
    revert = subprocess.run([str(CLI), "revert", "--root", str(host.root)], capture_output=True,
                            text=True, timeout=300, check=False,
                            env=dict(host.env(), SSL_CERT_FILE=str(bundle)))
    assert revert.returncode == 0, revert.stderr
    assert {p: (p.is_symlink(), os.readlink(p) if p.is_symlink() else p.read_bytes())
            for p in left} == before


@pytest.mark.parametrize("host", ["22.16"], indirect=True)
def test_old_overrides_holding_more_are_kept_and_named(host: SandboxHost, ca: CA,
                                                       tmp_path: Path) -> None:
    bundle = ca.trust_bundle(tmp_path / "trust.pem")
    custom = _manual_procedure(host, extra="webhookd:\n  debug: true\n")[0]
    result = _deploy(host, ca.issue(tmp_path / "pair", names=[NAME]), bundle)
    assert result.returncode == 0, result.stderr
    assert f"{custom}: kept, it holds more than the procedure's overrides (webhookd.debug)" in \
        result.stdout + result.stderr
    assert custom.is_file()
    assert not list(host.root.glob("etc/wazo-*/conf.d/010-custom-certificate.yml"))
