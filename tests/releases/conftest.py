"""Release hosts use the real ports (443, 9497, ...): only inside a private network namespace."""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Iterator

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.sandbox.host import SandboxHost  # noqa: E402
from tests.sandbox.release import build_release  # noqa: E402


def private_network() -> bool:
    """Whether this process runs in a network namespace of its own (not the machine's)."""
    try:
        with open("/proc/self/net/dev", encoding="ascii") as stream:
            names = [line.split(":", 1)[0].strip() for line in stream.readlines()[2:]]
    except OSError:
        return False
    return names == ["lo"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Outside a private namespace these tests are skipped, or are an error when
    CERTBOT_WAZO_REQUIRE names netns (`make test` runs them under unshare --net)."""
    if private_network():
        return
    if "netns" in os.environ.get("CERTBOT_WAZO_REQUIRE", ""):
        raise pytest.UsageError("tests/releases needs a private network namespace: run "
                                "'make releases' (unshare --net)")
    skip = pytest.mark.skip(reason="needs a private network namespace (make releases)")
    for item in items:
        if "tests/releases/test_" in str(item.fspath):
            item.add_marker(skip)



@pytest.fixture
def host(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[SandboxHost]:
    """The release request.param (parametrize indirectly) built from the corpus and started;
    always stopped afterwards."""
    built = build_release(tmp_path / "root", request.param)
    try:
        built.start()
        yield built
    finally:
        built.stop()
