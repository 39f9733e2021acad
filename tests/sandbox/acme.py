"""Pebble, a local ACME server, with challtestsrv answering every DNS name with 127.0.0.1."""
from __future__ import annotations

import datetime
import ipaddress
import json
import os
import ssl
import subprocess
import urllib.request
from pathlib import Path
from types import TracebackType

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .common import free_ports
from .procs import port_open, wait_until

PEBBLE = "/usr/bin/pebble"
CHALLTESTSRV = "/usr/bin/pebble-challtestsrv"


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_api_pair(directory: Path) -> tuple[Path, Path, Path]:
    """A throwaway CA and a localhost/127.0.0.1 leaf for pebble's API: (ca, cert, key)."""
    now = datetime.datetime.utcnow() - datetime.timedelta(minutes=5)
    later = now + datetime.timedelta(days=7)
    ca_key, leaf_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("sandbox pebble API CA")
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now).not_valid_after(later)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          # Python 3.13's default context verifies strictly (VERIFY_X509_STRICT): a CA needs
          # its key usage and key identifier, a leaf the authority's.
          .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, key_cert_sign=True, crl_sign=True,
                                       encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    leaf = (x509.CertificateBuilder().subject_name(_name("localhost")).issuer_name(ca.subject)
            .public_key(leaf_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(later)
            .add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    paths = (directory / "api-ca.pem", directory / "api-cert.pem", directory / "api-key.pem")
    paths[0].write_bytes(ca.public_bytes(pem))
    paths[1].write_bytes(leaf.public_bytes(pem))
    paths[2].write_bytes(leaf_key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                serialization.NoEncryption()))
    return paths


class Pebble:
    """pebble + pebble-challtestsrv on free loopback ports; start(workdir), stop()."""

    def __init__(self, http_port: int | None = None, validity: int | None = None) -> None:
        self.fixed_http_port = http_port  # the port HTTP-01 validation connects to (80 in a netns)
        self.validity = validity  # certificates' lifetime in seconds (pebble's default: 5 years)
        self.workdir = Path()
        self.processes: list[subprocess.Popen[bytes]] = []
        self.api_port = self.management_port = self.http_port = self.tls_port = 0
        self.dns_management_url = ""  # challtestsrv: POST /set-txt, /clear-txt (DNS-01)
        self.api_ca_path = self.trust_bundle_path = Path()

    @property
    def directory_url(self) -> str:
        """The ACME directory URL (for certbot --server)."""
        return f"https://127.0.0.1:{self.api_port}/dir"

    def _spawn(self, argv: list[str], log: str, env: dict[str, str]) -> None:
        with open(self.workdir / log, "ab") as out:
            self.processes.append(subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                                   stderr=subprocess.STDOUT, env=env, cwd=self.workdir))

    def _get(self, url: str) -> bytes:
        context = ssl.create_default_context(cafile=str(self.api_ca_path))
        with urllib.request.urlopen(url, context=context, timeout=5) as response:
            body: bytes = response.read()
            return body

    def start(self, workdir: Path) -> Pebble:
        """Start both servers, wait until ready, fetch the issuing root into trust_bundle_path."""
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.api_ca_path, cert, key = make_api_pair(self.workdir)
        self.api_port, self.management_port, self.http_port, self.tls_port, dns, challmgmt = free_ports(6)
        self.http_port = self.fixed_http_port or self.http_port
        self.dns_management_url = f"http://127.0.0.1:{challmgmt}"
        config = {"pebble": {"listenAddress": f"127.0.0.1:{self.api_port}",
                             "managementListenAddress": f"127.0.0.1:{self.management_port}",
                             "certificate": str(cert), "privateKey": str(key), "httpPort": self.http_port,
                             "tlsPort": self.tls_port, "ocspResponderURL": "",
                             "externalAccountBindingRequired": False}}
        if self.validity:
            config["pebble"]["certificateValidityPeriod"] = self.validity
        (self.workdir / "pebble-config.json").write_text(json.dumps(config, indent=2))
        env = {"PATH": "/usr/bin:/bin", "PEBBLE_VA_NOSLEEP": "1", "PEBBLE_WFE_NONCEREJECT": "0",
               "PEBBLE_AUTHZREUSE": "0"}
        try:
            self._spawn([CHALLTESTSRV, "-defaultIPv4", "127.0.0.1", "-defaultIPv6", "", "-dns01",
                         f"127.0.0.1:{dns}", "-http01", "", "-https01", "", "-tlsalpn01", "",
                         "-management", f"127.0.0.1:{challmgmt}"], "challtestsrv.log", env)
            if not wait_until(lambda: port_open(f"127.0.0.1:{challmgmt}"), 15):
                raise RuntimeError(f"pebble-challtestsrv did not start, see {self.workdir}/challtestsrv.log")
            self._spawn([PEBBLE, "-config", str(self.workdir / "pebble-config.json"), "-dnsserver",
                         f"127.0.0.1:{dns}"], "pebble.log", env)
            if not wait_until(self._ready, 20, interval=0.1):
                raise RuntimeError(f"pebble did not start, see {self.workdir}/pebble.log")
            self.trust_bundle_path = self.workdir / "trust-bundle.pem"
            self.trust_bundle_path.write_bytes(self.roots_pem())
        except BaseException:
            self.stop()
            raise
        return self

    def describe(self, path: Path) -> None:
        """Write what a client needs to path (read by attach()): URLs, ports, and the CA files,
        named relative to path's directory, so the directory may be seen at another path (a
        chroot sharing this network namespace)."""
        files = {"api_ca": self.api_ca_path, "trust_bundle": self.trust_bundle_path}
        path.write_text(json.dumps({
            "api_port": self.api_port, "management_port": self.management_port,
            "http_port": self.http_port, "tls_port": self.tls_port,
            "dns_management_url": self.dns_management_url,
            **{key: os.path.relpath(value, path.parent) for key, value in files.items()}}, indent=2))

    @classmethod
    def attach(cls, path: Path) -> Pebble:
        """The pebble describe() wrote path for, started by another process in this network
        namespace; stop() leaves it running (its owner stops it)."""
        try:
            data = json.loads(path.read_text())
            pebble = cls()
            pebble.workdir = path.parent
            pebble.api_port, pebble.management_port = int(data["api_port"]), int(data["management_port"])
            pebble.http_port, pebble.tls_port = int(data["http_port"]), int(data["tls_port"])
            pebble.dns_management_url = str(data["dns_management_url"])
            pebble.api_ca_path = path.parent / data["api_ca"]
            pebble.trust_bundle_path = path.parent / data["trust_bundle"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise RuntimeError(f"{path}: not a pebble description ({exc}; write it with "
                               "Pebble.describe())") from None
        if not pebble._ready():
            raise RuntimeError(f"{path}: no pebble answers at {pebble.directory_url} (is it "
                               "running, in this network namespace?)")
        return pebble

    def _ready(self) -> bool:
        if any(p.poll() is not None for p in self.processes):
            raise RuntimeError(f"pebble exited early, see {self.workdir}/pebble.log")
        try:
            return b"newOrder" in self._get(self.directory_url)
        except OSError:
            return False

    def roots_pem(self) -> bytes:
        """The current issuing root(s), as served by the management API."""
        return self._get(f"https://127.0.0.1:{self.management_port}/roots/0")

    def stop(self) -> None:
        """Kill both processes and wait for them. Idempotent."""
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes = []

    def __enter__(self) -> Pebble:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.stop()
