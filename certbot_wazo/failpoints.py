"""Fault-injection points at the deployment's step boundaries, armed by tests through the environment."""
from __future__ import annotations

import os
import signal
from typing import Callable

ENV = "CERTBOT_WAZO_FAILPOINT"
# Remote connections to drop at NAME:drop (the client's end) or NAME:drop-server.
_drops: list[Callable[[bool], None]] = []
_dropped: list[str] = []


def on_drop(drop: Callable[[bool], None]) -> None:
    """Register how to lose a connection (drop(server)) for NAME:drop and NAME:drop-server."""
    _drops.append(drop)


def off_drop(drop: Callable[[bool], None]) -> None:
    """Forget a connection (it is closed)."""
    if drop in _drops:
        _drops.remove(drop)


def hit(name: str) -> None:
    """Die at once, like a power cut, when CERTBOT_WAZO_FAILPOINT names this point; with
    NAME:SIGTERM (or another signal's name), receive that signal there instead; with NAME:drop
    or NAME:drop-server, lose the remote connections there (and go on)."""
    point, _, signame = os.environ.get(ENV, "").partition(":")
    if point == name and signame in ("drop", "drop-server"):
        if not _dropped:  # once: the run that reconnects must get through
            _dropped.append(name)
            for drop in _drops:
                drop(signame == "drop-server")
    elif point == name:
        os.kill(os.getpid(), getattr(signal, signame, signal.SIGKILL) if signame
                else signal.SIGKILL)
