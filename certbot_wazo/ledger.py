"""The controller's own record of each remote host: which pair it deployed there, for which names.

A host's own records (its failed.json, its undo log) are written by whoever runs there and can
be rewritten by whoever owns it. In remote mode they never choose a file of the controller:
`retry --ssh`, `repair --ssh` and the `--lineage` that `status --ssh` suggests come from this
ledger, kept on the controller and keyed by the SSH destination and root, and checked against
the host key ssh verified for this connection.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Optional

from certbot_wazo import files
from certbot_wazo.errors import HostError
from certbot_wazo.records import Failure, RecordError

VERSION = 1
# Where the ledger lives: this variable, else /var/lib/certbot-wazo-controller for root, else
# $XDG_STATE_HOME/certbot-wazo-controller (~/.local/state by default).
ENVIRONMENT = "CERTBOT_WAZO_CONTROLLER_DIR"
ROOT_DIR = Path("/var/lib/certbot-wazo-controller")
# A ledger entry is a few hundred bytes; anything larger is not one.
MAX_ENTRY = 256 * 1024


def default_dir() -> Path:
    """Where this controller keeps its ledger."""
    configured = os.environ.get(ENVIRONMENT)
    if configured:
        return Path(configured)
    if os.geteuid() == 0:
        return ROOT_DIR
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "certbot-wazo-controller"


@dataclasses.dataclass(frozen=True)
class Entry:
    """What this controller did on one host."""

    destination: str
    root: str
    host_key: str = ""                 # as ssh verified it ("ED25519 SHA256:…"), "" unknown
    names: tuple[str, ...] = ()        # the names of every pair this controller deployed there
    cert: str = ""                     # the controller's files of the last pair deployed
    key: str = ""
    failure: Optional[Failure] = None  # the last deployment that failed, until one succeeds

    def to_json(self) -> dict[str, Any]:
        """The JSON object stored in the entry's file."""
        return {"version": VERSION, "destination": self.destination, "root": self.root,
                "host_key": self.host_key, "names": list(self.names), "cert": self.cert,
                "key": self.key,
                "failure": None if self.failure is None else self.failure.to_json()}


class Ledger:
    """The ledger entry of one host (destination and root) on this controller."""

    def __init__(self, directory: Path, destination: str, root: Path, host_key: str) -> None:
        self.directory = directory
        self.destination = destination
        self.root = str(root)
        self.host_key = host_key
        digest = hashlib.sha256(f"{destination}\0{self.root}".encode()).hexdigest()[:32]
        self.path = directory / f"{digest}.json"

    def read(self) -> Optional[Entry]:
        """This host's entry, None when this controller never deployed there.

        :raises RecordError: the entry is damaged or too new
        """
        try:
            data = _load(self.path)
        except FileNotFoundError:
            return None
        if not isinstance(data, dict) or not isinstance(data.get("version", VERSION), int) \
                or data.get("version", VERSION) > VERSION:
            raise RecordError(f"{self.path}: not a ledger entry certbot-wazo {VERSION} can read "
                              "(remove it, then deploy to the host again)")
        try:
            failure = data.get("failure")
            entry = Entry(destination=str(data["destination"]), root=str(data["root"]),
                          host_key=str(data.get("host_key", "")),
                          names=tuple(str(n) for n in data.get("names", [])),
                          cert=str(data.get("cert", "")), key=str(data.get("key", "")),
                          failure=None if failure is None
                          else Failure.from_json(failure, self.path))
        except (KeyError, TypeError, AttributeError) as exc:
            raise RecordError(f"{self.path}: a damaged ledger entry ({exc}; remove it, then "
                              "deploy to the host again)") from None
        if (entry.destination, entry.root) != (self.destination, self.root):
            raise RecordError(f"{self.path}: the ledger entry of {entry.destination}, not of "
                              f"{self.destination} (remove it, then deploy to the host again)")
        return entry

    def trusted(self) -> Optional[Entry]:
        """read(), refused when the host answering now is not the one deployed to.

        :raises HostError: ssh verified another host key than the one recorded
        :raises RecordError: the entry is damaged
        """
        entry = self.read()
        if entry is not None and entry.host_key and self.host_key \
                and entry.host_key != self.host_key:
            raise HostError(f"{self.destination}: answers with the SSH host key {self.host_key}, "
                            f"not {entry.host_key} that this controller deployed to "
                            f"({self.path}; if the host was reinstalled, deploy to it again)")
        return entry

    def deployed(self, cert: Path, key: Path, names: list[str]) -> None:
        """The pair cert/key, for names, is deployed on the host (or already was)."""
        entry = self._current()
        self._write(dataclasses.replace(
            entry, host_key=self.host_key or entry.host_key,
            names=tuple(dict.fromkeys([*entry.names, *names])),
            cert=str(cert.absolute()), key=str(key.absolute()), failure=None))

    def failed(self, failure: Failure, names: list[str]) -> None:
        """A deployment of failure's pair, for names, failed on the host."""
        entry = self._current()
        self._write(dataclasses.replace(
            entry, host_key=self.host_key or entry.host_key,
            names=tuple(dict.fromkeys([*entry.names, *names])), failure=failure))

    def _current(self) -> Entry:
        try:
            entry = self.read()
        except RecordError:
            entry = None  # rewritten whole by what this controller does now
        return entry or Entry(self.destination, self.root)

    def _write(self, entry: Entry) -> None:
        """:raises HostError: the ledger cannot be written"""
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            files.apply_state(self.path, files.FileState.file(
                json.dumps(entry.to_json(), indent=1).encode(), 0o600,
                os.geteuid(), os.getegid()))
        except OSError as exc:
            raise HostError(f"{self.path}: this controller's ledger cannot be written "
                            f"({exc.strerror}; set {ENVIRONMENT} to a writable directory)") \
                from None


def _load(path: Path) -> object:
    """:raises FileNotFoundError: absent; :raises RecordError: unreadable or not JSON"""
    try:
        with open(path, "rb") as stream:
            raw = stream.read(MAX_ENTRY + 1)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise RecordError(f"{path}: this controller's ledger entry cannot be read "
                          f"({exc.strerror}; fix its permissions)") from None
    try:
        if len(raw) > MAX_ENTRY:
            raise ValueError("too large")
        return json.loads(raw.decode("utf-8"))
    except ValueError as exc:
        raise RecordError(f"{path}: a damaged ledger entry ({exc}; remove it, then deploy to "
                          "the host again)") from None
