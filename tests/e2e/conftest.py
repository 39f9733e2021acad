"""End-to-end fixtures: a session-wide Pebble, started sandbox hosts, certbot runners."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Iterator

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.pki import CA  # noqa: E402
from tests.sandbox.acme import Pebble  # noqa: E402
from tests.sandbox.certbot import Certbot, CertbotFactory, certbot_variants  # noqa: E402
from tests.sandbox.host import SandboxHost, build_host, keep_pristine, restore_pristine  # noqa: E402


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Parametrize tests taking `certbot_variant` over every available certbot;
    CERTBOT_WAZO_REQUIRE=pypi,debian (set by `make test`) makes a missing one an error."""
    if "certbot_variant" in metafunc.fixturenames:
        variants = certbot_variants()
        required = [v for v in os.environ.get("CERTBOT_WAZO_REQUIRE", "").split(",") if v]
        missing = [v for v in required if v not in variants]
        if missing:
            raise pytest.UsageError(f"certbot {', '.join(missing)} unavailable (run "
                                    ".ci/bootstrap)")
        metafunc.parametrize("certbot_variant", sorted(variants))


@pytest.fixture(scope="session")
def pebble(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pebble]:
    """A running Pebble for the whole session (fails when pebble is not installed)."""
    with Pebble() as server:
        server.start(tmp_path_factory.mktemp("pebble"))
        yield server


def _started_host(root: Path, generation: str) -> Iterator[SandboxHost]:
    host = build_host(root, generation)
    try:
        host.start()
        yield host
    finally:
        host.stop()


@pytest.fixture
def legacy_host(tmp_path: Path) -> Iterator[SandboxHost]:
    """A started legacy (XiVO 15.12 - Wazo 18.03) sandbox host, always stopped afterwards."""
    yield from _started_host(tmp_path / "legacy-root", "legacy")


@pytest.fixture
def modern_host(tmp_path: Path) -> Iterator[SandboxHost]:
    """A started modern (Wazo 24.01+) sandbox host, always stopped afterwards."""
    yield from _started_host(tmp_path / "modern-root", "modern")


@pytest.fixture
def certbot(pebble: Pebble, tmp_path: Path) -> CertbotFactory:
    """Factory: certbot(variant=None: first available) -> Certbot bound to the session Pebble."""
    def make(variant: str | None = None) -> Certbot:
        variants = certbot_variants()
        variant = variant or min(variants, default="none")
        if variant not in variants:
            raise LookupError(f"certbot variant {variant!r} unavailable (have {sorted(variants)})")
        return Certbot(variants[variant], pebble, tmp_path / f"certbot-{variant}")
    return make


# -- a test CA as "the system trust store" ------------------------------------------------------
@pytest.fixture(scope="session")
def ca() -> CA:
    """A root and an intermediate issuing the tests' certificates."""
    return CA("E2E")


@pytest.fixture(scope="session")
def bundle(ca: CA, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test CA's root as a trust store file."""
    return ca.trust_bundle(tmp_path_factory.mktemp("trust") / "trust.pem")


@pytest.fixture
def trust(bundle: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The test CA is the system trust store (OpenSSL honours SSL_CERT_FILE)."""
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    return bundle


# -- one started legacy sandbox per module, put back before each test ----------------------------
@pytest.fixture(scope="module")
def shared_legacy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SandboxHost, Path]]:
    """A started legacy sandbox and a pristine copy of its Wazo files."""
    base = tmp_path_factory.mktemp("shared")
    host = build_host(base / "legacy-root", "legacy")
    pristine = base / "pristine"
    keep_pristine(host.root, pristine)
    try:
        host.start()
        yield host, pristine
    finally:
        host.stop()


@pytest.fixture
def reset_legacy(shared_legacy: tuple[SandboxHost, Path], trust: Path) -> SandboxHost:
    """The shared sandbox with Wazo's original files, no certbot-wazo state and no fault armed
    (services keep running: what they serve is not compared before a deployment)."""
    host, pristine = shared_legacy
    restore_pristine(host.root, pristine)
    return host
