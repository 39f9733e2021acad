"""Pair validation: every bad certificate is refused before anything is touched, with a line that says why."""
from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest
from cryptography.x509.oid import ExtendedKeyUsageOID

from certbot_wazo.errors import PairError
from certbot_wazo.pair import Pair
from tests.pki import CA, DAY, NOW

NAME = "wazo.example.test"


def check(crt: Path, key: Path, name: str = NAME) -> Pair:
    pair = Pair.load(crt, key)
    pair.check(name)
    return pair


@pytest.mark.parametrize("key_type", ["ec", "rsa"])
def test_valid_pair_passes(ca: CA, tmp_path: Path, key_type: str) -> None:
    pair = check(*ca.issue(tmp_path, key_type=key_type))
    assert pair.names == [NAME]
    assert len(pair.chain) == 2


def test_no_common_name_with_sans_works(ca: CA, tmp_path: Path) -> None:
    pair = check(*ca.issue(tmp_path, names=[NAME, "pbx.example.test"], cn=None))
    assert pair.default_hostname() == NAME


def test_wildcard_covers_one_label(ca: CA, tmp_path: Path) -> None:
    crt, key = ca.issue(tmp_path, names=["*.example.test"])
    check(crt, key, NAME)
    with pytest.raises(PairError, match="not valid for a.wazo.example.test"):
        check(crt, key, "a.wazo.example.test")


@pytest.mark.parametrize("kwargs, message", [
    ({"not_after": NOW - DAY, "not_before": NOW - 10 * DAY}, "expired on"),
    ({"not_before": NOW + DAY}, "not valid before"),
    ({"names": ["other.example.test"]}, f"not valid for {NAME}"),
    ({"chain": "leaf"}, "only the server certificate.*fullchain.pem"),
    ({"chain": "reversed"}, "out of order"),
    ({"chain": "self-signed"}, "self-signed"),
])
def test_bad_certificates_are_refused(ca: CA, tmp_path: Path, kwargs: dict[str, object],
                                      message: str) -> None:
    crt, key = ca.issue(tmp_path, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(PairError, match=message) as err:
        check(crt, key)
    assert str(err.value).startswith(str(crt.parent))
    assert "\n" not in str(err.value)


def test_untrusted_root(tmp_path: Path) -> None:
    with pytest.raises(PairError, match="root is not trusted.*SSL_CERT_FILE"):
        check(*CA("Elsewhere").issue(tmp_path))


def test_mismatched_key(ca: CA, tmp_path: Path) -> None:
    crt, _ = ca.issue(tmp_path / "a")
    _, other_key = ca.issue(tmp_path / "b")
    with pytest.raises(PairError, match=f"^{other_key}: the private key does not match"):
        check(crt, other_key)


def test_encrypted_key(ca: CA, tmp_path: Path) -> None:
    crt, key = ca.issue(tmp_path, password=b"secret")
    with pytest.raises(PairError, match=f"^{key}: the private key is encrypted"):
        check(crt, key)


@pytest.mark.parametrize("which, content, message", [
    ("cert", b"", "empty"), ("cert", b"\n  \n", "empty"), ("cert", b"garbage", "no PEM"),
    ("cert", b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "does not parse"),
    ("key", b"", "empty"), ("key", b"garbage", "no PEM private key"),
    ("key", b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "does not parse"),
])
def test_garbage_files(ca: CA, tmp_path: Path, which: str, content: bytes, message: str) -> None:
    crt, key = ca.issue(tmp_path)
    bad = crt if which == "cert" else key
    bad.write_bytes(content)
    with pytest.raises(PairError, match=f"^{bad}: .*{message}"):
        check(crt, key)


def test_missing_file(ca: CA, tmp_path: Path) -> None:
    crt, _key = ca.issue(tmp_path)
    with pytest.raises(PairError, match="not found"):
        Pair.load(crt, tmp_path / "nope.pem")


def test_a_device_is_refused_unread(ca: CA, tmp_path: Path) -> None:
    _, key = ca.issue(tmp_path)
    with pytest.raises(PairError, match="^/dev/zero: not a regular file"):
        Pair.load(Path("/dev/zero"), key)


def test_a_fifo_without_writer_is_empty_not_a_hang(ca: CA, tmp_path: Path) -> None:
    _, key = ca.issue(tmp_path)
    fifo = tmp_path / "fifo.pem"
    os.mkfifo(fifo)
    with pytest.raises(PairError, match="certificate file is empty"):
        Pair.load(fifo, key)


def test_a_pipe_is_read_once(ca: CA, tmp_path: Path) -> None:
    """`--cert <(cat fullchain.pem)`: a pipe with a writer, readable once."""
    crt, key = ca.issue(tmp_path)
    reader, writer = os.pipe()
    feeder = threading.Thread(target=lambda: (os.write(writer, crt.read_bytes()),
                                              os.close(writer)))
    feeder.start()
    try:
        pair = Pair.load(Path(f"/proc/self/fd/{reader}"), key)
    finally:
        feeder.join()
        os.close(reader)
    assert pair.names == [NAME]


def test_many_begin_lines_without_end_are_read_in_one_pass(tmp_path: Path, ca: CA) -> None:
    _, key = ca.issue(tmp_path)
    crt = tmp_path / "begins.pem"
    crt.write_bytes(b"-----BEGIN CERTIFICATE-----\n" * 30000)
    with pytest.raises(PairError, match="is truncated"):
        Pair.load(crt, key)


def test_a_huge_file_is_refused(tmp_path: Path, ca: CA) -> None:
    _, key = ca.issue(tmp_path)
    crt = tmp_path / "huge.pem"
    crt.write_bytes(b"x" * (2 * 1024 * 1024))
    with pytest.raises(PairError, match="larger than 1024 KiB"):
        Pair.load(crt, key)


@pytest.mark.parametrize("key_type, usage, message", [
    ("ed25519", None, "an EdDSA certificate, which browsers and SIP phones refuse"),
    ("rsa1024", None, "an RSA key of 1024 bits"),
    ("ec", "client", "the certificate may not serve TLS .its extended key usage lacks"),
])
def test_certificates_clients_would_refuse(ca: CA, tmp_path: Path, key_type: str,
                                          usage: str | None, message: str) -> None:
    oid = ExtendedKeyUsageOID.CLIENT_AUTH if usage else ExtendedKeyUsageOID.SERVER_AUTH
    crt, key = ca.issue(tmp_path, key_type=key_type, usage=oid)
    with pytest.raises(PairError, match=f"^{crt}: {message}"):
        check(crt, key)
