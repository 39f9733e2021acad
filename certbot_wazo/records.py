"""certbot-wazo's records on disk, typed and versioned: the only module that reads or writes them."""
from __future__ import annotations

import dataclasses
import enum
import json
from pathlib import Path
from typing import Any, Callable, Optional, TypeVar

from certbot_wazo.errors import HostError
from certbot_wazo.files import FILE, FileState
from certbot_wazo.tls import Endpoint

# The version written into every record. A record without one was written by certbot-wazo
# 0.1.0, whose records have the same fields. A newer version is refused, never guessed at.
VERSION = 1

Command = list[str]


class RecordError(HostError):
    """A record on disk cannot be read: damaged, or written by a newer certbot-wazo."""


class Phase(str, enum.Enum):
    """How far an open transaction went; deployment.py's docstring says what recovery does in
    each."""

    INSTALLING = "installing"  # the undo log is saved; files are being written
    INSTALLED = "installed"    # every file is written and passed the probe before any restart
    RESTARTING = "restarting"  # the services are restarting on the new files, or being probed

    @classmethod
    def parse(cls, value: object) -> Phase:
        """A phase as written; 0.1.0's "probing" (never written, once read) is RESTARTING.

        :raises ValueError: not a phase
        """
        if value == "probing":
            return cls.RESTARTING
        return cls(value)


@dataclasses.dataclass(frozen=True)
class Transaction:
    """The undo log's record: what recovery needs to finish or undo a deployment."""

    phase: Phase
    hostname: str
    generation: str
    update_config: bool
    restarts: list[Command]
    gentle: list[Command]
    endpoints: list[Endpoint]
    previous_leaf: bytes  # DER of the leaf served before: what the undo probes for
    new_leaf: bytes       # DER of the leaf being deployed: what rolling forward probes for
    label: str = ""
    verify: bool = True
    written: dict[str, str] = dataclasses.field(default_factory=dict)  # path -> digest
    # Directory definitions changed in the asterisk database (directories.Change as JSON).
    database: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The JSON object stored in the undo log's manifest."""
        return {"version": VERSION, "phase": self.phase.value, "hostname": self.hostname,
                "generation": self.generation, "update_config": self.update_config,
                "restarts": self.restarts, "gentle": self.gentle,
                "endpoints": [[e.address, e.port, e.unit] for e in self.endpoints],
                "previous_leaf": self.previous_leaf.hex(), "new_leaf": self.new_leaf.hex(),
                "label": self.label, "verify": self.verify, "written": self.written,
                "database": self.database}

    @classmethod
    def from_json(cls, data: object, where: Path) -> Transaction:
        """:raises RecordError: damaged or too new"""
        def build(d: dict[str, Any]) -> Transaction:
            return cls(phase=Phase.parse(d.get("phase", "installing")),
                       hostname=_str(d.get("hostname", "")),
                       generation=_str(d.get("generation", "")),
                       update_config=_bool(d.get("update_config", False)),
                       restarts=_commands(d.get("restarts", [])),
                       gentle=_commands(d.get("gentle", [])),
                       endpoints=[_endpoint(e) for e in _list(d.get("endpoints", []))],
                       previous_leaf=bytes.fromhex(_str(d.get("previous_leaf", ""))),
                       new_leaf=bytes.fromhex(_str(d.get("new_leaf", ""))),
                       label=_str(d.get("label", "")), verify=_bool(d.get("verify", True)),
                       written={_str(k): _str(v) for k, v in _dict(d.get("written", {})).items()},
                       database=[_row_change(c) for c in _list(d.get("database", []))])
        return _read(data, where, "undo log", build,
                     fix=f"put the previous certificate back by hand if needed (the saved files "
                         f"are in {where}), then remove {where}")


@dataclasses.dataclass(frozen=True)
class Original:
    """The record kept with the state before the first deployment."""

    saved: float
    generation: Optional[str]
    # The first change certbot-wazo made to each directory definition's column (its old value
    # is the original, put back by revert).
    database: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The JSON object stored in the original state's manifest."""
        return {"version": VERSION, "saved": self.saved, "generation": self.generation,
                "database": self.database}

    @classmethod
    def from_json(cls, data: object, where: Path) -> Original:
        """:raises RecordError: damaged or too new"""
        def build(d: dict[str, Any]) -> Original:
            generation = d.get("generation")
            return cls(saved=float(d.get("saved", 0.0)),
                       generation=None if generation is None else _str(generation),
                       database=[_row_change(c) for c in _list(d.get("database", []))])
        return _read(data, where, "saved original state", build)


@dataclasses.dataclass(frozen=True)
class SavedSettings:
    """The settings a failed deployment ran with, so that a retry uses them again."""

    profile: str = "auto"
    hostname: Optional[str] = None
    force_profile: bool = False
    probes: list[str] = dataclasses.field(default_factory=list)
    probe_timeout: Optional[float] = None

    def to_json(self) -> dict[str, Any]:
        """The JSON object stored in the failure record."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Failure:
    """A deployment that failed and is remembered until it is retried (failed.json)."""

    cert: str
    key: str
    error: str
    failed_at: str
    settings: SavedSettings = dataclasses.field(default_factory=SavedSettings)

    def to_json(self) -> dict[str, Any]:
        """The JSON object stored in failed.json."""
        return {"version": VERSION, "cert": self.cert, "key": self.key, "error": self.error,
                "failed_at": self.failed_at, "settings": self.settings.to_json()}

    @classmethod
    def from_json(cls, data: object, where: Path) -> Failure:
        """:raises RecordError: damaged or too new"""
        def build(d: dict[str, Any]) -> Failure:
            s = _dict(d.get("settings", {}))
            hostname = s.get("hostname")
            timeout = s.get("probe_timeout")
            settings = SavedSettings(
                profile=_str(s.get("profile", "auto")),
                hostname=None if hostname is None else _str(hostname),
                force_profile=s.get("force_profile") is True,
                probes=[_str(p) for p in _list(s.get("probes", []))],
                probe_timeout=None if timeout is None else _number(timeout))
            return cls(cert=_str(d["cert"]), key=_str(d["key"]),
                       error=str(d.get("error", "")), failed_at=str(d.get("failed_at", "?")),
                       settings=settings)
        return _read(data, where, "remembered failed deployment", build)


@dataclasses.dataclass(frozen=True)
class Entry:
    """One saved path of a snapshot: its state, the bytes kept apart in a blob file."""

    path: str
    blob: str
    state: FileState


def dump_manifest(entries: list[Entry], meta: dict[str, Any]) -> bytes:
    """A snapshot's manifest: its entries (without their bytes) and its record."""
    items = [{"path": e.path, "blob": e.blob, "kind": e.state.kind, "mode": e.state.mode,
              "uid": e.state.uid, "gid": e.state.gid, "target": e.state.target}
             for e in entries]
    return _encode({"version": VERSION, "entries": items, "meta": meta})


def load_manifest(path: Path, blob: Callable[[str], bytes]) -> tuple[list[Entry], dict[str, Any]]:
    """A snapshot's entries (bytes read with blob(name)) and its record, as dump_manifest wrote.

    :raises RecordError: damaged or too new
    """
    def build(d: dict[str, Any]) -> tuple[list[Entry], dict[str, Any]]:
        entries = []
        for item in _list(d["entries"]):
            # 0.1.0 kept the state's fields under "state"
            fields = _dict(item.get("state", item))
            kind = _str(fields["kind"])
            state = FileState(kind, blob(_str(item["blob"])) if kind == FILE else b"",
                              _int(fields["mode"]), _int(fields["uid"]), _int(fields["gid"]),
                              _str(fields["target"]))
            entries.append(Entry(_str(item["path"]), _str(item["blob"]), state))
        return entries, _dict(d.get("meta", {}))
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except OSError as exc:
        raise RecordError(f"{path}: certbot-wazo's saved state is damaged ({exc.strerror}; "
                          f"inspect it, then remove {path.parent})") from None
    except ValueError as exc:
        raise RecordError(f"{path}: certbot-wazo's saved state is damaged (not JSON: {exc}; "
                          f"inspect it, then remove {path.parent})") from None
    return _read(data, path, "saved state", build, remove=path.parent)


def dump(record: Transaction | Original | Failure) -> bytes:
    """A record as stored on disk."""
    return _encode(record.to_json())


def load(path: Path) -> object:
    """The JSON in a record file.

    :raises OSError: the file cannot be read (FileNotFoundError when absent)
    :raises RecordError: it is not JSON
    """
    raw = path.read_bytes()
    try:
        return json.loads(raw.decode("utf-8"))
    except ValueError as exc:
        raise RecordError(f"{path}: certbot-wazo's record is damaged (not JSON: {exc}; "
                          f"remove {path})") from None


def dump_written(digests: dict[str, str]) -> bytes:
    """written.json: path -> digest of what certbot-wazo last wrote there."""
    return _encode({"version": VERSION, "digests": digests})


def written_digests(data: object, where: Path) -> dict[str, str]:
    """What written.json holds (0.1.0 wrote the digests at the top level).

    :raises RecordError: damaged or too new
    """
    def build(d: dict[str, Any]) -> dict[str, str]:
        digests = _dict(d["digests"]) if "version" in d else d
        return {_str(k): _str(v) for k, v in digests.items()}
    return _read(data, where, "record of what it wrote", build)


def _encode(data: dict[str, Any]) -> bytes:
    """A record's bytes on disk (indented: an admin may have to read it)."""
    return json.dumps(data, indent=1).encode()


R = TypeVar("R")


def _read(data: object, where: Path, what: str, build: Callable[[dict[str, Any]], R],
          remove: Optional[Path] = None, fix: str = "") -> R:
    remove = remove or where
    fix = fix or f"inspect it, then remove {remove}"
    if not isinstance(data, dict):
        raise RecordError(f"{where}: certbot-wazo's {what} is damaged (not a JSON object; "
                          f"{fix})")
    version = data.get("version", VERSION)
    if not isinstance(version, int) or isinstance(version, bool) or version > VERSION:
        raise RecordError(f"{where}: certbot-wazo's {what} has version {version!r}, newer than "
                          f"this certbot-wazo reads ({VERSION}) (upgrade certbot-wazo, or "
                          f"remove {remove})")
    try:
        return build(data)
    except (OSError, KeyError, TypeError, ValueError) as exc:
        detail = exc.strerror if isinstance(exc, OSError) else f"{type(exc).__name__}: {exc}"
        raise RecordError(f"{where}: certbot-wazo's {what} is damaged ({detail}; {fix})") \
            from None


def _int(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, got {value!r}")
    return value


def _str(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {value!r}")
    return value


def _bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"expected true or false, got {value!r}")
    return value


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"expected a number, got {value!r}")
    return float(value)


def _list(value: object) -> list[Any]:
    if not isinstance(value, list):
        raise TypeError(f"expected a list, got {value!r}")
    return value


def _dict(value: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TypeError(f"expected an object, got {value!r}")
    return value


# The asterisk database's columns certbot-wazo may change (directories.py).
ROW_COLUMNS = ("uri", "xivo_verify_certificate", "xivo_custom_ca_path", "auth_host",
               "auth_verify_certificate", "auth_custom_ca_path", "extra_fields")


def _row_change(value: object) -> dict[str, Any]:
    """A directory definition's change (directories.Change.to_json())."""
    change = _dict(value)
    if _str(change["table"]) not in ("directories", "dird_source"):
        raise ValueError(f"unknown table {change['table']!r}")
    if _str(change["column"]) not in ROW_COLUMNS:
        raise ValueError(f"unknown column {change['column']!r}")
    for side in ("old", "new"):
        if change.get(side) is not None and not isinstance(change[side], (str, bool)):
            raise TypeError(f"expected a string, true, false or null, got {change[side]!r}")
    return {"table": change["table"], "key": _str(change["key"]),
            "column": _str(change["column"]), "old": change.get("old"),
            "new": change.get("new")}


def _commands(value: object) -> list[Command]:
    return [[_str(arg) for arg in _list(command)] for command in _list(value)]


def _endpoint(value: object) -> Endpoint:
    address, port, unit = _list(value)
    if isinstance(port, bool) or not isinstance(port, int):
        raise TypeError(f"expected a port number, got {port!r}")
    return Endpoint(_str(address), port, _str(unit))
