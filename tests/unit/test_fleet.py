"""Several hosts in one run: one transaction each, and which host ended where."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, ClassVar, Optional

import pytest

from certbot_wazo import fleet
from certbot_wazo.access import LocalAccess
from certbot_wazo.deployment import Settings
from certbot_wazo.errors import HostError, RolledBackError

CERT, KEY = Path("/le/fullchain.pem"), Path("/le/privkey.pem")


class FakeDeployment:
    """One host's deployment: records what is done to it; `fails` names the step that fails."""

    fails: ClassVar[dict[str, str]] = {}
    log: ClassVar[list[str]] = []

    def __init__(self, settings: Settings, notify: Callable[[str], None]) -> None:
        self.name = str(settings.ssh)
        self.plan: Optional[object] = None
        self.access = LocalAccess()
        self.journal = type("J", (), {"previous": "previous"})()

    def _step(self, step: str) -> None:
        self.log.append(f"{step} {self.name}")
        if self.fails.get(self.name) == step:
            raise (RolledBackError if step == "activate" else HostError)(f"{self.name}: {step} "
                                                                         "failed")

    def install(self, cert: Path, key: Path, remember: bool = False) -> bool:
        self._step("install")
        self.plan = object()
        return True

    def run(self, cert: Path, key: Path, remember: bool = False) -> bool:
        self.install(cert, key)
        self.activate()
        return True

    def activate(self) -> None:
        self.plan = None
        self._step("activate")

    def abort(self) -> None:
        self.plan = None
        self.log.append(f"abort {self.name}")

    def restore(self, snapshot: object, label: str) -> bool:
        self.log.append(f"restore {self.name}")
        return True

    def close(self) -> None:
        self.log.append(f"close {self.name}")


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> type[FakeDeployment]:
    monkeypatch.setattr(fleet, "open_deployment", FakeDeployment)
    FakeDeployment.fails, FakeDeployment.log = {}, []
    return FakeDeployment


def deploy(all_or_nothing: bool) -> list[str]:
    return [str(o) for o in fleet.deploy(["a", "b", "c"], Settings(), CERT, KEY, False,
                                         all_or_nothing, lambda _: None)]


def test_a_failed_host_is_alone_by_default(fake: type[FakeDeployment]) -> None:
    fake.fails = {"b": "activate"}
    assert deploy(False) == ["a: deployed", "b: failed: activate failed", "c: deployed"]


def test_all_or_nothing_restarts_nobody_when_an_install_fails(
        fake: type[FakeDeployment]) -> None:
    fake.fails = {"b": "install"}
    assert deploy(True) == ["a: rolled back: nothing was restarted (--all-or-nothing)",
                            "b: failed: install failed",
                            "c: not attempted: another host failed first (--all-or-nothing)"]
    assert not [line for line in fake.log if line.startswith("activate")]
    assert "abort a" in fake.log


def test_all_or_nothing_puts_switched_hosts_back_when_one_fails_after_its_restart(
        fake: type[FakeDeployment]) -> None:
    fake.fails = {"b": "activate"}
    assert deploy(True) == ["a: rolled back: the previous pair is back (--all-or-nothing)",
                            "b: failed: activate failed",
                            "c: rolled back: nothing was restarted (--all-or-nothing)"]
    assert fake.log.index("restore a") > fake.log.index("activate b")
    assert "abort c" in fake.log and "activate c" not in fake.log


def test_a_destination_may_carry_its_own_root() -> None:
    assert fleet.at(Settings(root=Path("/")), "root@b:/srv/w") == \
        Settings(root=Path("/srv/w"), ssh="root@b")
