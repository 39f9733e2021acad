"""For every test: the working tree's certbot_wazo is the one imported, here and in subprocesses.

A venv that sees Debian's site-packages (Debian's certbot 2.1) would otherwise import an
installed python3-certbot-wazo before the editable install of the code under test.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(REPO), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))])


@pytest.fixture(autouse=True)
def _controller_ledger(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test's own controller ledger (remote mode), never the machine's."""
    directory = tmp_path / "controller-ledger"
    monkeypatch.setenv("CERTBOT_WAZO_CONTROLLER_DIR", str(directory))
    return directory
