"""One command over several hosts (an HA pair, a fleet): each host its own transaction, and
which host ended where."""
from __future__ import annotations

import dataclasses
import functools
import time
from pathlib import Path
from typing import Callable, Optional, TypeVar

from certbot_wazo.deployment import Deployment, Notify, Settings
from certbot_wazo.errors import ConnectionLostError, HostError, WazoError
from certbot_wazo.remote import SshAccess

T = TypeVar("T")

DEPLOYED = "deployed"
UNCHANGED = "unchanged"
FAILED = "failed"
ROLLED_BACK = "rolled back"
SKIPPED = "not attempted"
# How often a run that lost its connection reconnects and runs again (the host's undo log and
# lock tell the new run what the old one left).
RECONNECTS = 2
RECONNECT_PAUSE = 3.0


@dataclasses.dataclass
class Outcome:
    """Where one host ended."""

    destination: str
    state: str
    message: str = ""

    def __str__(self) -> str:
        message = self.message
        if message.startswith(f"{self.destination}: "):
            message = message[len(self.destination) + 2:]
        return f"{self.destination}: {self.state}" + (f": {message}" if message else "")


def at(settings: Settings, destination: str) -> Settings:
    """The settings for one destination, [USER@]HOST or [USER@]HOST:/ROOT (its own root)."""
    host, sep, root = destination.partition(":/")
    return dataclasses.replace(settings, ssh=host, root=Path("/" + root) if sep
                               else settings.root)


def open_deployment(settings: Settings, notify: Notify) -> Deployment:
    """A deployment on the host settings name: this machine, or a remote one whose SSH
    connection is opened here (and its files read).

    :raises WazoError: the remote host cannot be reached
    """
    if not settings.ssh:
        return Deployment(settings, notify)
    access = SshAccess.open(settings.ssh, settings.root, settings.ssh_config,
                            settings.command_timeout, settings.sudo)
    try:
        return Deployment(settings, notify, access=access)
    except BaseException:
        access.close()
        raise


def on_host(settings: Settings, notify: Notify, action: Callable[[Deployment], T]) -> T:
    """Run action on one host (remote or local); a remote run whose connection drops
    reconnects and runs again, which first finishes or undoes what the lost run left.

    :raises WazoError: the action failed (on the last connection)
    """
    attempt = 0
    while True:
        deployment: Optional[Deployment] = None
        try:
            deployment = open_deployment(settings, notify)
            return action(deployment)
        except ConnectionLostError as exc:
            lost = _described(exc, deployment)
            if not settings.ssh or attempt >= RECONNECTS:
                raise lost from None
            attempt += 1
            notify(f"{lost}; reconnecting to finish or undo what was started "
                   f"(attempt {attempt} of {RECONNECTS})")
            time.sleep(RECONNECT_PAUSE)
        except WazoError as exc:
            raise _described(exc, deployment) from None
        except OSError as exc:  # ssh missing, no temporary directory: one line, no traceback
            raise HostError(f"{settings.ssh or settings.root}: {exc.strerror or exc} (fix it, "
                            "then run again)") from None
        finally:
            if deployment is not None:
                deployment.plan = None  # an abandoned plan must not keep the connection
                deployment.close()


def deploy(destinations: list[str], settings: Settings, cert: Path, key: Path, remember: bool,
           all_or_nothing: bool, notify: Notify) -> list[Outcome]:
    """Deploy one pair to every destination, one transaction per host.

    Without all_or_nothing, a host that fails is rolled back alone (its own transaction) and
    the others keep the new pair. With it, every host is installed and probed before any
    restart; if one fails, nothing is restarted anywhere, and if one fails after its restart,
    the hosts already switched go back to their previous state.
    """
    if not all_or_nothing:
        outcomes = []
        for destination in destinations:
            one = at(settings, destination)
            try:
                changed = on_host(one, _prefixed(notify, destination),
                                  lambda d: d.run(cert, key, remember=remember))
                outcomes.append(Outcome(destination, DEPLOYED if changed else UNCHANGED))
            except WazoError as exc:
                outcomes.append(Outcome(destination, FAILED, str(exc)))
        return outcomes
    return _all_or_nothing(destinations, settings, cert, key, notify)


def _all_or_nothing(destinations: list[str], settings: Settings, cert: Path, key: Path,
                    notify: Notify) -> list[Outcome]:
    pending: list[tuple[str, Deployment]] = []
    outcomes: dict[str, Outcome] = {}
    try:
        for destination in destinations:  # install and probe everywhere, restart nowhere
            try:
                deployment = open_deployment(at(settings, destination),
                                        _prefixed(notify, destination))
            except WazoError as exc:
                outcomes[destination] = Outcome(destination, FAILED, str(exc))
                break
            try:
                if deployment.install(cert, key):
                    pending.append((destination, deployment))
                else:
                    outcomes[destination] = Outcome(destination, UNCHANGED)
                    deployment.close()
            except WazoError as exc:
                outcomes[destination] = Outcome(destination, FAILED,
                                                str(_described(exc, deployment)))
                deployment.close()
                break
        if any(o.state == FAILED for o in outcomes.values()):
            for destination, deployment in pending:
                _attempt(deployment.abort)
                outcomes[destination] = Outcome(destination, ROLLED_BACK, "nothing was "
                                                "restarted (--all-or-nothing)")
            return _in_order(destinations, outcomes)
        activated: list[tuple[str, Deployment]] = []
        for destination, deployment in pending:
            try:
                deployment.activate()
                activated.append((destination, deployment))
                outcomes[destination] = Outcome(destination, DEPLOYED)
            except WazoError as exc:
                outcomes[destination] = Outcome(destination, FAILED,
                                                str(_described(exc, deployment)))
                break
        if len(activated) < len(pending):
            for destination, deployment in pending[len(activated) + 1:]:
                _attempt(deployment.abort)
                outcomes[destination] = Outcome(destination, ROLLED_BACK, "nothing was "
                                                "restarted (--all-or-nothing)")
            for destination, deployment in activated:
                failure = _attempt(functools.partial(
                    deployment.restore, deployment.journal.previous,
                    "Rolled back (--all-or-nothing)"), deployment)
                outcomes[destination] = Outcome(
                    destination, FAILED if failure else ROLLED_BACK,
                    failure or "the previous pair is back (--all-or-nothing)")
        return _in_order(destinations, outcomes)
    except Exception as exc:  # not a WazoError: abort every pending host before anything
        for _, deployment in pending:
            _attempt(deployment.abort, deployment)
        raise HostError(f"{exc} (every host not yet restarted was put back)") from None
    finally:
        for _, deployment in pending:
            deployment.plan = None
            deployment.close()


def _described(exc: WazoError, deployment: Optional[Deployment]) -> WazoError:
    """The error naming the host's paths as the admin knows them (never a local mirror's)."""
    if deployment is None:
        return exc
    described = type(exc)(deployment.access.describe(str(exc)))
    return described


def _attempt(action: Callable[[], object], deployment: Optional[Deployment] = None) -> str:
    """Run action; what went wrong ("" when it worked)."""
    try:
        action()
    except WazoError as exc:
        return str(_described(exc, deployment))
    return ""


def _in_order(destinations: list[str], outcomes: dict[str, Outcome]) -> list[Outcome]:
    return [outcomes.get(d) or Outcome(d, SKIPPED, "another host failed first "
                                       "(--all-or-nothing)") for d in destinations]


def _prefixed(notify: Notify, destination: str) -> Notify:
    return lambda message: notify(message if message.startswith(destination)
                                  else f"{destination}: {message}")
