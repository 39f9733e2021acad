"""Fault-injection points at the deployment's step boundaries, armed by tests through the environment."""
from __future__ import annotations

import os
import signal

ENV = "CERTBOT_WAZO_FAILPOINT"


def hit(name: str) -> None:
    """Die at once, like a power cut, when CERTBOT_WAZO_FAILPOINT names this point; with
    NAME:SIGTERM (or another signal's name), receive that signal there instead."""
    point, _, signame = os.environ.get(ENV, "").partition(":")
    if point == name:
        os.kill(os.getpid(), getattr(signal, signame, signal.SIGKILL) if signame
                else signal.SIGKILL)
