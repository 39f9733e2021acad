"""The sandbox's stand-ins behave like Wazo's originals, and real certbot works against Pebble."""
from __future__ import annotations

import datetime
import grp
import os
import socket
import ssl
import subprocess
import urllib.request
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.sandbox.certbot import CertbotFactory, certbot_variants
from tests.sandbox.host import SandboxHost, build_host
from tests.sandbox.procs import pid_alive, read_pid, wait_until

NAME = "wazo.example.test"
pytestmark = pytest.mark.e2e


def pem_to_der(pem: bytes) -> bytes:
    """DER of the first certificate in a PEM file."""
    return x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)


def dns_names(cert: x509.Certificate) -> list[str]:
    """The DNS names of a certificate's subjectAltName."""
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    names: list[str] = san.get_values_for_type(x509.DNSName)
    return names


def replace_pair(host: SandboxHost, common_name: str) -> bytes:
    """Overwrite server.crt/key with a new self-signed pair; returns its DER."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.utcnow()
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    (host.certs_dir / "server.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (host.certs_dir / "server.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return cert.public_bytes(serialization.Encoding.DER)


def serves(host: SandboxHost, unit: str, der: bytes, timeout: float = 5.0) -> bool:
    """Whether the unit serves der (waiting a little: nginx reloads asynchronously)."""
    return wait_until(lambda: host.served_cert(unit) == der, timeout, interval=0.05)


def test_legacy_layout_and_update_config(tmp_path: Path) -> None:
    host = build_host(tmp_path / "root", "legacy")
    root = host.root
    certs = root / "usr/share/xivo-certs"
    for name in ("server.crt", "server.key"):
        assert (certs / name).stat().st_mode & 0o777 == 0o640
        assert (certs / name).stat().st_gid == grp.getgrnam("www-data").gr_gid
    assert f"www-data:x:{grp.getgrnam('www-data').gr_gid}:" in (root / "etc/group").read_text()
    leaf = x509.load_pem_x509_certificate((certs / "server.crt").read_bytes())
    assert leaf.subject.rfc4514_string() == "CN=localhost"
    assert dns_names(leaf) == ["localhost"]
    confd = yaml.safe_load((root / "etc/xivo-confd/config.yml").read_text())
    assert confd["rest_api"]["https"]["certificate"] == "/usr/share/xivo-certs/server.crt"
    assert confd["auth"]["verify_certificate"] == "/usr/share/xivo-certs/server.crt"
    assert "tlsenable=yes" in (root / "etc/asterisk/http.conf").read_text()

    hosts = root / "etc/hosts"
    inode = hosts.stat().st_ino
    hosts.write_text("garbage\n")
    result = host.run("xivo-update-config")
    assert result.returncode == 0 and "'system' configuration UPDATED." in result.stdout
    assert "127.0.1.1\twazo.example.test\tlocalhost.localdomain\twazo\n" in hosts.read_text()
    assert hosts.read_text().startswith("# XIVO: FILE AUTOMATICALLY GENERATED")
    assert hosts.stat().st_ino == inode
    assert "'system' configuration OK, skipping." in host.run("xivo-update-config").stdout

    custom = root / "etc/xivo/custom-templates/system/etc/hosts"
    custom.parent.mkdir(parents=True)
    template = (root / "usr/share/xivo-config/templates/system/etc/hosts").read_text()
    custom.write_text(template + "127.0.0.1\t#XIVO_HOSTNAME#.#XIVO_DOMAIN#\n")
    assert host.run("xivo-update-config").returncode == 0
    assert hosts.read_text().endswith("127.0.0.1\twazo.example.test\n")
    assert (root / "etc/hostname").read_text() == "wazo\n"
    assert ["xivo-update-config"] in host.commands()


def test_update_config_failures(tmp_path: Path) -> None:
    host = build_host(tmp_path / "root", "modern")
    root = host.root
    before = (root / "etc/hosts").read_text()
    custom = root / "etc/xivo/custom-templates/system/etc/hosts"
    custom.parent.mkdir(parents=True)
    custom.write_text("127.0.0.1\t#XIVO_BOGUS#\n")
    result = host.run("xivo-update-config")
    # Upstream aborts the module but still exits 0 ("DONE"): the ERROR line is the signal.
    assert result.returncode == 0
    assert "ERROR: generation from template 'system' failed" in result.stderr
    assert "/etc/hosts: 127.0.0.1\t#XIVO_BOGUS#" in result.stdout
    assert (root / "etc/hosts").read_text() == before
    custom.unlink()

    host.fault("update-config-fails")
    result = host.run("xivo-update-config")
    assert result.returncode == 1 and "ERROR" in result.stderr
    host.fault("update-config-fails", on=False)

    common = root / "etc/xivo/common.conf"
    common.write_text(common.read_text().replace("XIVO_NET4_NETMASK=255.255.255.0", "XIVO_NET4_NETMASK="))
    result = host.run("xivo-update-config")
    assert result.returncode == 1 and "Network badly configured" in result.stderr


def test_legacy_reloads_then_restart_all(legacy_host: SandboxHost) -> None:
    host = legacy_host
    assert set(host.endpoints) >= {"nginx", "asterisk", "wazo-auth", "xivo-confd", "xivo-dird-phoned"}
    default = pem_to_der((host.certs_dir / "server.crt").read_bytes())
    for unit in host.endpoints:
        assert host.served_cert(unit) == default, unit
    for unit, kind in host.units.items():
        if kind == "daemon":
            assert host.peer_errors(unit) == [], unit
    assert host.events()[:4] == ["start rabbitmq-server", "start consul", "start postgresql", "start nginx"]
    assert host.asterisk_starts() == 1

    # reload nginx: graceful (same master), new pair; asterisk "module reload http": no restart
    master = read_pid(host.root / "run/nginx.pid")
    reloaded = replace_pair(host, "reloaded")
    assert host.run("systemctl", "reload", "nginx").returncode == 0
    assert serves(host, "nginx", reloaded)
    assert read_pid(host.root / "run/nginx.pid") == master
    assert host.served_cert("asterisk") == default
    # Asterisk 13.19 skips the reload while http.conf is unchanged (fixed in 13.24).
    assert host.run("asterisk", "-rx", "module reload http").returncode == 0
    assert host.served_cert("asterisk") == default
    os.utime(host.root / "etc/asterisk/http.conf")
    assert host.run("asterisk", "-rx", "module reload http").returncode == 0
    assert host.served_cert("asterisk") == reloaded
    assert host.asterisk_starts() == 1
    assert host.served_cert("xivo-confd") == default  # daemons load the pair once, at start
    assert "Asterisk 13" in host.run("asterisk", "-rx", "core show version").stdout

    # xivo-service restart all: stop in reverse order, start again; everything serves the new pair
    new = replace_pair(host, "new")
    mark = len(host.events())
    result = host.run("xivo-service", "restart", "all")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Wazo fully booted" in result.stdout
    events = host.events()[mark:]
    stops = [e.split()[1] for e in events if e.startswith("stop ")]
    starts = [e.split()[1] for e in events if e.startswith("start ")]
    assert stops == list(reversed(starts)) and stops[-1] == "rabbitmq-server"
    assert events.index("stop rabbitmq-server") < events.index("start rabbitmq-server")
    for unit in host.endpoints:
        assert host.served_cert(unit) == new, unit
    assert host.asterisk_starts() == 2


def test_fault_knobs(legacy_host: SandboxHost) -> None:
    host = legacy_host
    old = host.served_cert("nginx")
    for name in ("xivo-confd.stale", "asterisk.stale", "nginx.noreload"):
        host.fault(name)
    new = replace_pair(host, "stale")
    assert host.run("systemctl", "restart", "xivo-confd", "xivo-amid").returncode == 0
    assert host.served_cert("xivo-confd") == old
    assert host.served_cert("xivo-amid") == new
    os.utime(host.root / "etc/asterisk/http.conf")
    assert host.run("asterisk", "-rx", "module reload http").returncode == 0
    assert host.served_cert("asterisk") == old
    assert host.run("systemctl", "reload", "nginx").returncode == 0
    assert not serves(host, "nginx", new, timeout=1.0)
    assert host.events()[-1] == "reload nginx"
    host.fault("nginx.noreload", on=False)
    assert host.run("systemctl", "reload", "nginx").returncode == 0
    assert serves(host, "nginx", new)
    host.fault("nginx.stale")
    replace_pair(host, "newer")
    assert host.run("systemctl", "restart", "nginx").returncode == 0
    assert host.served_cert("nginx") == new  # the pair it had before the fault
    host.fault("nginx.stale", on=False)

    mark = len(host.events())
    host.fault("restart-fails")
    assert host.run("wazo-service", "restart", "all").returncode == 1
    host.fault("restart-fails", on=False)
    host.fault("restart-hangs")
    with pytest.raises(subprocess.TimeoutExpired):
        host.run("wazo-service", "restart", "all", timeout=1.0)
    host.fault("restart-hangs", on=False)
    assert host.events()[mark:] == []

    host.fault("xivo-dird.nostart")
    result = host.run("wazo-service", "restart", "xivo")
    assert result.returncode == 1 and "starting xivo-dird ... NOK" in result.stdout
    assert host.run("systemctl", "is-active", "xivo-dird").returncode == 3
    assert host.run("systemctl", "is-active", "xivo-dird-phoned").returncode == 3  # after dird: never started
    host.fault("xivo-dird.nostart", on=False)
    assert host.run("wazo-service", "start", "xivo").returncode == 0
    assert host.run("systemctl", "is-active", "xivo-dird", "xivo-dird-phoned").returncode == 0

    (host.certs_dir / "server.key").write_text("not a key\n")
    result = host.run("systemctl", "restart", "wazo-auth")
    assert result.returncode == 1 and "failed" in result.stderr
    assert host.run("systemctl", "restart", "nginx").returncode == 1
    assert host.run("systemctl", "start", "no-such-unit").returncode == 5


def test_modern_host(modern_host: SandboxHost) -> None:
    host = modern_host
    assert set(host.endpoints) == {"nginx", "wazo-phoned"}
    certs = host.root / "usr/share/wazo-certs"
    assert (certs / "server.crt").stat().st_mode & 0o777 == 0o644
    assert (certs / "server.key").stat().st_mode & 0o777 == 0o640
    assert not (host.root / "usr/share/xivo-certs").exists()
    assert (host.root / "etc/hosts").read_text().startswith("# WAZO:")
    default = pem_to_der((certs / "server.crt").read_bytes())
    assert host.served_cert("nginx") == host.served_cert("wazo-phoned") == default
    confd = yaml.safe_load((host.root / "etc/wazo-confd/config.yml").read_text())
    assert "https" not in confd["rest_api"]
    with urllib.request.urlopen(f"http://127.0.0.1:{confd['rest_api']['http']['port']}/", timeout=5) as reply:
        assert reply.status == 200
    assert host.peer_errors("wazo-calld") == []

    new = replace_pair(host, "modern")
    assert host.run("systemctl", "restart", "nginx").returncode == 0
    assert host.served_cert("nginx") == new and host.served_cert("wazo-phoned") == default
    mark = len(host.events())
    result = host.run("xivo-service", "restart", "wazo")
    assert result.returncode == 0 and "deprecated alias" in result.stderr
    assert host.served_cert("wazo-phoned") == new
    assert "restart asterisk" not in host.events()[mark:] and "stop asterisk" in host.events()[mark:]
    assert not any(e.endswith(" nginx") for e in host.events()[mark:])  # nginx is not in the wazo group
    assert host.run("systemctl", "is-active", "postgresql").stdout.strip() == "active"


def test_stop_leaves_no_process(tmp_path: Path) -> None:
    host = build_host(tmp_path / "root", "legacy")
    with host:
        host.start()
        pids = host.pids()
        assert len(pids) > len(host.endpoints)  # daemons + asterisk + nginx master and worker
        host.fault("restart-hangs")
        hanging = subprocess.Popen([str(host.root / "usr/bin/wazo-service"), "restart", "all"],
                                   stdout=subprocess.DEVNULL, start_new_session=True)
        assert wait_until(lambda: hanging.pid in host.pids(), 5)
    hanging.wait(timeout=5)
    assert host.pids() == []
    assert not any(pid_alive(pid) for pid in pids)
    for address in host.endpoints.values():
        with pytest.raises(OSError):
            socket.create_connection(tuple(address.rsplit(":", 1)), timeout=1).close()  # type: ignore[arg-type]
    host.stop()


def test_a_certbot_is_available() -> None:
    assert certbot_variants(), "no certbot: make .venv (pip install certbot) and/or .venv-debian"


def test_certbot_certonly_against_pebble(certbot: CertbotFactory, certbot_variant: str) -> None:
    bot = certbot(certbot_variant)
    result = bot.run("certonly", *bot.standalone_args(), "-d", NAME)
    assert result.returncode == 0, result.stderr
    live = bot.live(NAME)
    verify = subprocess.run(["openssl", "verify", "-CAfile", str(bot.pebble.trust_bundle_path),
                             "-untrusted", str(live / "chain.pem"), str(live / "cert.pem")],
                            capture_output=True, text=True, timeout=30)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    leaf = x509.load_pem_x509_certificate((live / "cert.pem").read_bytes())
    assert NAME in dns_names(leaf)
    utc = datetime.timezone.utc
    not_after = getattr(leaf, "not_valid_after_utc", None) or leaf.not_valid_after.replace(tzinfo=utc)
    assert not_after > datetime.datetime.now(datetime.timezone.utc)


def test_issued_chain_on_legacy_host(legacy_host: SandboxHost, certbot: CertbotFactory) -> None:
    host = legacy_host
    bot = certbot()
    assert bot.run("certonly", *bot.standalone_args(), "-d", NAME).returncode == 0
    live = bot.live(NAME)
    (host.certs_dir / "server.crt").write_bytes((live / "fullchain.pem").read_bytes())
    (host.certs_dir / "server.key").write_bytes((live / "privkey.pem").read_bytes())
    assert host.run("wazo-service", "restart", "all").returncode == 0
    context = ssl.create_default_context(cafile=str(bot.pebble.trust_bundle_path))
    for unit, address in host.endpoints.items():
        ip, port = address.rsplit(":", 1)
        with socket.create_connection((ip, int(port)), timeout=5) as sock:
            with context.wrap_socket(sock, server_hostname=NAME) as tls:
                assert len(tls.getpeercert(binary_form=True) or b"") > 0, unit

    # Why the legacy procedure exists: peers still call https://localhost with the old CA file.
    assert host.peer_errors("xivo-ctid-ng", bot.pebble.trust_bundle_path)
    override = {section: {"host": NAME, "verify_certificate": True} for section in ("auth", "amid", "confd")}
    (host.root / "etc/xivo-ctid-ng/conf.d/010-custom-certificate.yml").write_text(yaml.safe_dump(override))
    assert any("resolve" in e or "127.0.1.1" in e for e in host.peer_errors("xivo-ctid-ng"))
    with open(host.root / "etc/hosts", "a") as hosts:
        hosts.write(f"127.0.0.1\t{NAME}\n")
    hosts_text = (host.root / "etc/hosts").read_text()
    (host.root / "etc/hosts").write_text(hosts_text.replace(f"127.0.1.1\t{NAME}", "127.0.1.1\twazo-old"))
    assert host.peer_errors("xivo-ctid-ng", bot.pebble.trust_bundle_path) == []
    assert host.peer_errors("xivo-ctid-ng") != []  # without the trust store, verify=True fails
