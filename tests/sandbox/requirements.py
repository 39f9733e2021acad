"""What a test module needs of this machine (a private network namespace, Debian's PostgreSQL):
skipped where it is missing, an error where CERTBOT_WAZO_REQUIRE names it (`make test`)."""
from __future__ import annotations

import os
from typing import Callable, Optional

import pytest


def required(requirement: str) -> bool:
    """Whether CERTBOT_WAZO_REQUIRE (comma-separated) names requirement."""
    return requirement in os.environ.get("CERTBOT_WAZO_REQUIRE", "").split(",")


def mark_items(items: list[pytest.Item], under: str, requirement: str,
               missing: Callable[[], Optional[str]], hint: str = "") -> None:
    """At collection: the test items whose path contains `under` are skipped when missing()
    (asked only when there are such items) says what is missing, or the run stops when the
    requirement is required."""
    ours = [item for item in items if under in str(item.fspath)]
    reason = missing() if ours else None
    if reason is None:
        return
    if required(requirement):
        raise pytest.UsageError(f"{under}: {reason}{hint}")
    skip = pytest.mark.skip(reason=f"{requirement}: {reason}")
    for item in ours:
        item.add_marker(skip)


def need(requirement: str, reason: Optional[str]) -> None:
    """In a fixture or test: skip (or stop the run, when required) if reason is given."""
    if reason is None:
        return
    if required(requirement):
        raise pytest.UsageError(reason)
    pytest.skip(reason)
