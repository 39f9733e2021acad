"""A real PostgreSQL (Debian's) for the directory definitions of issue 15: one private cluster per
session (tests/sandbox/database.py), skipped where the server is not installed, or an error when
CERTBOT_WAZO_REQUIRE names postgres."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.sandbox.database import Postgres, unavailable  # noqa: E402
from tests.sandbox.requirements import mark_items  # noqa: E402


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Where no cluster can be made these tests are skipped, or are an error when
    CERTBOT_WAZO_REQUIRE names postgres."""
    mark_items(items, "tests/database/test_", "postgres",
               unavailable)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """The session's cluster (its own directory under /tmp, removed when stopped); each test
    recreates the asterisk database with create_asterisk(release)."""
    with Postgres() as cluster:
        yield cluster
