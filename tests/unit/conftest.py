"""Fixtures for unit tests: a test CA as the system trust store, and Wazo trees copied from testdata."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.pki import CA

TESTDATA = Path(__file__).parent / "testdata"


@pytest.fixture(scope="session")
def ca() -> CA:
    """A root and an intermediate CA."""
    return CA()


@pytest.fixture(autouse=True)
def trust_store(ca: CA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The test CA is the only root of the "system trust store" (OpenSSL honours SSL_CERT_FILE)."""
    bundle = ca.trust_bundle(tmp_path / "trust.pem")
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    return bundle


@pytest.fixture(scope="session")
def self_signed(ca: CA, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Wazo's self-signed RSA pair, made once (an RSA key costs up to 0.2 s, every tree has one)."""
    return ca.issue(tmp_path_factory.mktemp("self-signed"), names=["localhost"],
                    chain="self-signed", key_type="rsa")


def _tree(tmp_path: Path, pair: tuple[Path, Path], generation: str) -> Path:
    root = tmp_path / generation
    shutil.copytree(TESTDATA / generation, root, symlinks=True)
    for keep in root.rglob(".gitkeep"):
        keep.unlink()
    certs = root / "usr/share" / ("xivo-certs" if generation == "legacy" else "wazo-certs")
    crt, key = pair
    shutil.copy(crt, certs / "server.crt")
    shutil.copy(key, certs / "server.key")
    for name, mode in (("server.crt", 0o640 if generation == "legacy" else 0o644),
                       ("server.key", 0o640)):
        if os.geteuid() == 0:  # as Wazo ships them; a test run as another user keeps its own
            os.chown(certs / name, 0, 33)
        os.chmod(certs / name, mode)
    return root


@pytest.fixture
def legacy_root(tmp_path: Path, self_signed: tuple[Path, Path]) -> Path:
    """A legacy (XiVO 15.12 - Wazo 18.03) layout with Wazo's self-signed pair; no services."""
    return _tree(tmp_path, self_signed, "legacy")


@pytest.fixture
def modern_root(tmp_path: Path, self_signed: tuple[Path, Path]) -> Path:
    """A modern (nginx-fronted) layout with Wazo's self-signed pair; no services."""
    return _tree(tmp_path, self_signed, "modern")
