"""A throwaway CA (root and intermediate) issuing test certificates of every shape the product must judge."""
from __future__ import annotations

import datetime
from pathlib import Path
from typing import Optional, Sequence

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NOW = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
DAY = datetime.timedelta(days=1)


def _key(kind: str = "ec") -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey:
    if kind.startswith("rsa"):
        return rsa.generate_private_key(public_exponent=65537, key_size=int(kind[3:] or 2048))
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    return ec.generate_private_key(ec.SECP256R1())


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key: object, password: Optional[bytes] = None) -> bytes:
    """PEM PKCS#8, encrypted when password is given."""
    algorithm = (serialization.BestAvailableEncryption(password) if password
                 else serialization.NoEncryption())
    return key.private_bytes(serialization.Encoding.PEM,  # type: ignore[attr-defined, no-any-return]
                             serialization.PrivateFormat.PKCS8, algorithm)


class CA:
    """A root and an intermediate; the root is what the test's "system trust store" holds."""

    def __init__(self, label: str = "Test") -> None:
        self.root_key = _key()
        self.root = self._sign(_name(f"{label} Root"), self.root_key.public_key(), self.root_key,
                               _name(f"{label} Root"), ca=True)
        self.inter_key = _key()
        self.inter = self._sign(_name(f"{label} Intermediate"), self.inter_key.public_key(),
                                self.root_key, self.root.subject, ca=True)

    @staticmethod
    def _sign(subject: x509.Name, public_key: object, signer: object, issuer: x509.Name,
              ca: bool = False, names: Sequence[str] = (), not_before: datetime.datetime = NOW - DAY,
              not_after: datetime.datetime = NOW + 90 * DAY,
              usage: x509.ObjectIdentifier = ExtendedKeyUsageOID.SERVER_AUTH) -> x509.Certificate:
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
                   .public_key(public_key)  # type: ignore[arg-type]
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(not_before).not_valid_after(not_after)
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if names:  # critical when the subject is empty (RFC 5280 4.2.1.6; Python 3.13 checks it)
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.DNSName(n) for n in names]),
                critical=len(subject) == 0)
        if not ca:
            builder = builder.add_extension(
                x509.ExtendedKeyUsage([usage]), critical=False)
        # What Python 3.13's default context requires (VERIFY_X509_STRICT, Debian 13): key
        # identifiers, the authority's in every certificate a CA issued, a CA's key usage.
        builder = builder.add_extension(
            x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)  # type: ignore[arg-type]
        if subject != issuer or not ca:
            builder = builder.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                signer.public_key()), critical=False)  # type: ignore[attr-defined]
        if ca:
            builder = builder.add_extension(x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False), critical=True)
        return builder.sign(signer, hashes.SHA256())  # type: ignore[arg-type]

    def trust_bundle(self, path: Path) -> Path:
        """Write the root as a trust store file (for SSL_CERT_FILE)."""
        path.write_bytes(_pem(self.root))
        return path

    def issue(self, directory: Path, names: Sequence[str] = ("wazo.example.test",),
              cn: Optional[str] = "first", key_type: str = "ec",
              not_before: datetime.datetime = NOW - DAY, not_after: datetime.datetime = NOW + 90 * DAY,
              chain: str = "full", password: Optional[bytes] = None,
              usage: x509.ObjectIdentifier = ExtendedKeyUsageOID.SERVER_AUTH) -> tuple[Path, Path]:
        """Issue a leaf and write fullchain.pem and privkey.pem into directory.

        :param cn: "first" (the first name), None (no CN, SANs only) or a literal CN
        :param chain: "full" (leaf, intermediate), "leaf" (leaf only), "reversed", "self-signed"
        """
        directory.mkdir(parents=True, exist_ok=True)
        key = _key(key_type)
        subject = x509.Name([]) if cn is None else _name(names[0] if cn == "first" else cn)
        if chain == "self-signed":
            leaf = self._sign(subject, key.public_key(), key, subject, names=names,
                              not_before=not_before, not_after=not_after)
            certs = [leaf]
        else:
            leaf = self._sign(subject, key.public_key(), self.inter_key, self.inter.subject,
                              names=names, not_before=not_before, not_after=not_after,
                              usage=usage)
            certs = {"full": [leaf, self.inter], "leaf": [leaf],
                     "reversed": [self.inter, leaf]}[chain]
        fullchain = directory / "fullchain.pem"
        privkey = directory / "privkey.pem"
        fullchain.write_bytes(b"".join(_pem(c) for c in certs))
        privkey.write_bytes(key_pem(key, password))
        privkey.chmod(0o600)
        return fullchain, privkey
