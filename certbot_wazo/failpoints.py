"""Fault-injection points at the deployment's step boundaries, armed by tests through the environment."""
from __future__ import annotations

import os
import signal

ENV = "CERTBOT_WAZO_FAILPOINT"


def hit(name: str) -> None:
    """Die at once, like a power cut, when CERTBOT_WAZO_FAILPOINT names this point."""
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
