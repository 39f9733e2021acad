"""Remote targets (tests/sandbox/remote.py) need root and a private network namespace: the
controller's, under which each target gets one of its own (`make remote` runs unshare --net)."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.pki import CA  # noqa: E402
from tests.sandbox.remote import Targets, unavailable  # noqa: E402
from tests.sandbox.requirements import mark_items  # noqa: E402


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Where targets cannot be made these tests are skipped, or are an error when
    CERTBOT_WAZO_REQUIRE names netns (`make test` runs them under unshare --net)."""
    mark_items(items, "tests/remote/test_", "netns",
               unavailable, ": run 'make remote'")


@pytest.fixture(scope="module")
def targets(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Targets]:
    """The module's targets: add() them (built under a directory of the module's own); all are
    stopped, and their links gone, when the module's tests are done."""
    with Targets(tmp_path_factory.mktemp("targets")) as made:
        yield made


@pytest.fixture(scope="module")
def ca(request: pytest.FixtureRequest) -> CA:
    """The module's test CA (its name says which module issued a certificate)."""
    return CA(request.module.__name__.rsplit(".", 1)[-1])


@pytest.fixture(scope="module")
def trust(ca: CA, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The module's CA as a trust bundle (SSL_CERT_FILE)."""
    return ca.trust_bundle(tmp_path_factory.mktemp("trust") / "trust.pem")
