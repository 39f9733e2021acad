"""A certificate chain and its private key: load them and check them before anything is touched."""
from __future__ import annotations

import dataclasses
import datetime
import hashlib
import os
import re
import stat
from pathlib import Path
from typing import Optional, Union

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from certbot_wazo import tls
from certbot_wazo.errors import PairError

PrivateKey = Union[rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey,
                   ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey]

_DNS_NAME = re.compile(r"^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*"
                       r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def valid_dns_name(name: str) -> bool:
    """Whether name is a plain DNS name (no spaces, slashes or shell characters)."""
    return len(name) <= 253 and bool(_DNS_NAME.match(name.lower()))


def not_before(cert: x509.Certificate) -> datetime.datetime:
    """The start of validity, timezone-aware, on any cryptography version."""
    value = getattr(cert, "not_valid_before_utc", None)
    return value if value is not None else cert.not_valid_before.replace(tzinfo=datetime.timezone.utc)


def not_after(cert: x509.Certificate) -> datetime.datetime:
    """The end of validity, timezone-aware, on any cryptography version."""
    value = getattr(cert, "not_valid_after_utc", None)
    return value if value is not None else cert.not_valid_after.replace(tzinfo=datetime.timezone.utc)


def dns_names(cert: x509.Certificate) -> list[str]:
    """The DNS names of subjectAltName, in order (certificates may have no CN)."""
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return [name.lower() for name in ext.value.get_values_for_type(x509.DNSName)]


def name_matches(name: str, pattern: str) -> bool:
    """Whether a DNS name is covered by a certificate name (a wildcard covers one label)."""
    if pattern.startswith("*."):
        head, _, rest = name.partition(".")
        return bool(head) and rest == pattern[2:]
    return name == pattern


def public_key_der(key: object) -> bytes:
    """A public key as DER SubjectPublicKeyInfo, to compare keys."""
    return key.public_bytes(  # type: ignore[attr-defined, no-any-return]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _pem_blocks(data: bytes) -> Optional[list[bytes]]:
    """The BEGIN...END CERTIFICATE blocks, in one pass (a file of BEGIN lines without END is
    read in linear time); None when one has no END before the next BEGIN."""
    begin, end = b"-----BEGIN CERTIFICATE-----", b"-----END CERTIFICATE-----"
    blocks: list[bytes] = []
    position = data.find(begin)
    while position >= 0:
        stop = data.find(end, position)
        following = data.find(begin, position + len(begin))
        if stop < 0 or 0 <= following < stop:
            return None
        blocks.append(data[position:stop + len(end)])
        position = following
    return blocks


def load_chain(data: bytes, path: Path) -> list[x509.Certificate]:
    """Parse every PEM certificate in data, in order.

    :raises PairError: no certificate, or one that does not parse
    """
    blocks = _pem_blocks(data)
    if blocks is None:
        raise PairError(f"{path}: a certificate in it is truncated (it has no END line; give "
                        "the complete fullchain.pem)")
    if not blocks:
        raise PairError(f"{path}: no PEM certificate found (give the full chain, e.g. "
                        "the lineage's fullchain.pem)")
    try:
        return [x509.load_pem_x509_certificate(block) for block in blocks]
    except ValueError as exc:
        raise PairError(f"{path}: a certificate does not parse ({exc}; give a valid PEM "
                        "full chain)") from None


def load_key(data: bytes, path: Path) -> PrivateKey:
    """Parse an unencrypted PEM private key.

    :raises PairError: missing, encrypted or unparsable key
    """
    if b"-----BEGIN" not in data or b"PRIVATE KEY-----" not in data:
        raise PairError(f"{path}: no PEM private key found (give the key of the certificate, "
                        "e.g. the lineage's privkey.pem)")
    if b"ENCRYPTED" in data:
        raise PairError(f"{path}: the private key is encrypted (decrypt it, e.g. "
                        "openssl pkey -in KEY -out KEY.plain, and give that)")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise PairError(f"{path}: the private key does not parse ({exc}; give a valid "
                        "PEM key)") from None
    if not isinstance(key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey,
                            ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey)):
        raise PairError(f"{path}: unsupported key type (use an RSA or ECDSA key)")
    return key


@dataclasses.dataclass(frozen=True)
class Pair:
    """A full chain (leaf first) and its private key, as read from two files."""

    cert_path: Path
    key_path: Path
    chain_pem: bytes
    key_pem: bytes
    chain: tuple[x509.Certificate, ...]

    @classmethod
    def load(cls, cert_path: Path, key_path: Path) -> Pair:
        """Read and parse a pair.

        :raises PairError: a file is missing, empty or not PEM, or the key is encrypted
        """
        chain_pem = _read(cert_path, "certificate")
        key_pem = _read(key_path, "private key")
        chain = load_chain(chain_pem, cert_path)
        load_key(key_pem, key_path)
        normalized = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain)
        return cls(cert_path, key_path, normalized, key_pem, tuple(chain))

    @property
    def leaf(self) -> x509.Certificate:
        """The server certificate."""
        return self.chain[0]

    @property
    def leaf_der(self) -> bytes:
        """The server certificate, DER-encoded (what a TLS peer sends)."""
        return self.leaf.public_bytes(serialization.Encoding.DER)

    @property
    def names(self) -> list[str]:
        """The DNS names the certificate is valid for."""
        return dns_names(self.leaf)

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the leaf, hex."""
        return hashlib.sha256(self.leaf_der).hexdigest()

    def default_hostname(self) -> str:
        """The first DNS name that is not a wildcard.

        :raises PairError: the certificate has no such name
        """
        for name in self.names:
            if not name.startswith("*.") and valid_dns_name(name):
                return name
        raise PairError(f"{self.cert_path}: the certificate has no usable DNS name in "
                        "subjectAltName (request it for the server's name)")

    def check_order(self) -> None:
        """The chain is the leaf, then each issuer.

        :raises PairError: it is not
        """
        for child, parent in zip(self.chain, self.chain[1:]):
            if child.issuer != parent.subject:
                raise PairError(f"{self.cert_path}: the chain is out of order (put the server "
                                "certificate first, then each issuer: use fullchain.pem)")

    def check(self, hostname: str, now: Optional[datetime.datetime] = None) -> None:
        """Everything the services will need from this pair, checked before any change.

        :raises PairError: key mismatch, not valid now, name not covered, chain out of order
            or not trusted by the system trust store
        """
        now = now or datetime.datetime.now(datetime.timezone.utc)
        if not valid_dns_name(hostname) or hostname.startswith("*."):
            raise PairError(f"{self.cert_path}: {hostname!r} is not a DNS name the services can "
                            "use (give one with --wazo-hostname)")
        self.check_order()
        key = load_key(self.key_pem, self.key_path)
        if public_key_der(key.public_key()) != public_key_der(self.leaf.public_key()):
            raise PairError(f"{self.key_path}: the private key does not match the certificate "
                            f"{self.cert_path} (give the key issued with it)")
        if now < not_before(self.leaf):
            raise PairError(f"{self.cert_path}: the certificate is not valid before "
                            f"{not_before(self.leaf):%Y-%m-%d %H:%M} UTC (check the clock)")
        if now >= not_after(self.leaf):
            raise PairError(f"{self.cert_path}: the certificate expired on "
                            f"{not_after(self.leaf):%Y-%m-%d %H:%M} UTC (renew it)")
        self.check_usable()
        if not any(name_matches(hostname, pattern) for pattern in self.names):
            shown = ", ".join(self.names) or "none"
            raise PairError(f"{self.cert_path}: the certificate is not valid for {hostname} "
                            f"(its names: {shown}; pick one with --wazo-hostname or request "
                            "the certificate for this name)")
        try:
            tls.verify_pair(self.cert_path, self.key_path, hostname)
        except tls.HandshakeError as exc:
            raise PairError(self._trust_problem(str(exc.args[0]))) from None

    def check_usable(self) -> None:
        """What Wazo's clients (phones, browsers, softphones) accept: an RSA key of 2048 bits or
        more, or an ECDSA one (Ed25519/Ed448 certificates are rejected by browsers and SIP
        phones), and a certificate that may serve TLS (serverAuth when it restricts its use).

        :raises PairError: the certificate would be installed and then refused by the clients
        """
        key = self.leaf.public_key()
        if isinstance(key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
            raise PairError(f"{self.cert_path}: an EdDSA certificate, which browsers and SIP "
                            "phones refuse (request an ECDSA or RSA one, e.g. certbot "
                            "--key-type ecdsa)")
        if isinstance(key, rsa.RSAPublicKey) and key.key_size < 2048:
            raise PairError(f"{self.cert_path}: an RSA key of {key.key_size} bits, which TLS "
                            "clients refuse (request one of 2048 bits or more)")
        try:
            usage = self.leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        except x509.ExtensionNotFound:
            return
        if ExtendedKeyUsageOID.SERVER_AUTH not in usage:
            raise PairError(f"{self.cert_path}: the certificate may not serve TLS (its extended "
                            "key usage lacks serverAuth; request a server certificate)")

    def _trust_problem(self, reason: str) -> str:
        where = f"{self.cert_path}: the chain does not verify for the system trust store"
        if self.leaf.issuer == self.leaf.subject:
            return (f"{where}: it is self-signed (use a certificate from a trusted CA such "
                    "as Let's Encrypt)")
        if "issuer" not in reason:
            return f"{where} ({reason}; check the pair and the system clock)"
        if len(self.chain) == 1:
            return (f"{where}: it holds only the server certificate (give the full chain "
                    "with its intermediates: fullchain.pem, not cert.pem)")
        return (f"{where}: its root is not trusted ({reason}; add the root to the system "
                "store with update-ca-certificates, or set SSL_CERT_FILE)")


# A full chain is a few KiB: anything larger is not one (and /dev/zero never ends).
MAX_PEM_BYTES = 1024 * 1024


def _read(path: Path, what: str) -> bytes:
    """The file's bytes, read once, bounded; a device or socket is refused unread, a named pipe
    without a writer reads as empty instead of blocking."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except FileNotFoundError:
        raise PairError(f"{path}: {what} file not found (check the path)") from None
    except OSError as exc:
        raise PairError(f"{path}: {what} file cannot be read ({exc.strerror})") from None
    try:
        mode = os.fstat(fd).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode)):
            raise PairError(f"{path}: not a regular file (give the {what} PEM file itself)")
        os.set_blocking(fd, True)
        with os.fdopen(fd, "rb", closefd=False) as stream:
            data = stream.read(MAX_PEM_BYTES + 1)
    except OSError as exc:
        raise PairError(f"{path}: {what} file cannot be read ({exc.strerror})") from None
    finally:
        os.close(fd)
    if len(data) > MAX_PEM_BYTES:
        raise PairError(f"{path}: larger than {MAX_PEM_BYTES // 1024} KiB, not a {what} (give "
                        "the PEM file certbot wrote)")
    if not data.strip():
        raise PairError(f"{path}: {what} file is empty (give the PEM file certbot wrote)")
    return data


def read_regular(path: Path, limit: int = MAX_PEM_BYTES) -> bytes:
    """A certbot lineage's PEM file, read without ever blocking or reading without bound: only a
    regular file (a FIFO, a device or a socket is refused unopened for reading), at most limit
    bytes (a larger one is refused before any byte is read).

    :raises PairError: not a regular file, too large, or unreadable; the message says which
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise PairError(f"{path}: cannot be read ({exc.strerror})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise PairError(f"{path}: not a regular file (certbot writes PEM files there: "
                            "remove it, or run certbot renew)")
        if info.st_size > limit:
            raise PairError(f"{path}: larger than {limit // 1024} KiB, not a certificate "
                            "(remove it, or run certbot renew)")
        data = os.read(fd, limit + 1)
    except OSError as exc:
        raise PairError(f"{path}: cannot be read ({exc.strerror})") from None
    finally:
        os.close(fd)
    if len(data) > limit:  # grew since fstat
        raise PairError(f"{path}: larger than {limit // 1024} KiB, not a certificate "
                        "(remove it, or run certbot renew)")
    return data
