"""Fault injection: a point named in CERTBOT_WAZO_FAILPOINT kills the process there like a power
cut (SIGKILL), or delivers the named signal; any other point, or none armed, does nothing."""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from certbot_wazo import failpoints

HIT = ("import sys; from certbot_wazo import failpoints; failpoints.hit(sys.argv[1]); "
       "print('passed')")


def hit(point: str, armed: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != failpoints.ENV}
    if armed is not None:
        env[failpoints.ENV] = armed
    return subprocess.run([sys.executable, "-c", HIT, point], capture_output=True, text=True,
                          timeout=30, env=env, check=False)


@pytest.mark.parametrize("armed", [None, "", "after-write-1", "after-backup:SIGTERM"])
def test_an_unarmed_point_does_nothing(armed: str | None) -> None:
    result = hit("after-backup-x", armed)
    assert (result.returncode, result.stdout) == (0, "passed\n")


def test_the_armed_point_dies_like_a_power_cut() -> None:
    result = hit("after-backup", "after-backup")
    assert result.returncode == -signal.SIGKILL and result.stdout == ""


def test_the_armed_point_can_deliver_a_signal_instead() -> None:
    result = hit("after-backup", "after-backup:SIGTERM")
    assert result.returncode == -signal.SIGTERM and result.stdout == ""


def test_an_unknown_signal_name_still_kills() -> None:
    result = hit("after-backup", "after-backup:SIGNOPE")
    assert result.returncode == -signal.SIGKILL
