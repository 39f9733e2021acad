"""The on-disk undo log: what a deployment replaces, what was there first, and the lock."""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, Optional

from certbot_wazo import records
from certbot_wazo.access import Access, LocalAccess
from certbot_wazo.files import FILE, FileState, read_state
from certbot_wazo.records import Failure, Original, Phase, RecordError, Transaction

logger = logging.getLogger(__name__)

TRANSACTION = "transaction"
PREVIOUS = "previous"
ORIGINAL = "original"
MANIFEST = "manifest.json"

Entries = list[tuple[str, FileState]]


class Snapshot:
    """A directory (root-only, 0700) holding FileStates of Wazo paths plus a JSON manifest."""

    def __init__(self, path: Path, access: Optional[Access] = None) -> None:
        self.path = path
        self.access: Access = access or LocalAccess()

    def exists(self) -> bool:
        """Whether the snapshot was completely written."""
        self._recover_aside()
        return (self.path / MANIFEST).is_file()

    def _recover_aside(self) -> None:
        """A crash between the two renames of write() left only the old copy aside: use it."""
        aside = self._aside()
        if not os.path.lexists(self.path) and (aside / MANIFEST).is_file():
            self.access.rename(aside, self.path)

    def read(self) -> tuple[Entries, dict[str, Any]]:
        """The saved entries (in saving order) and the record kept with them.

        :raises HostError: the manifest is unreadable
        """
        self._recover_aside()
        entries, meta = records.load_manifest(self.path / MANIFEST,
                                              lambda blob: (self.path / blob).read_bytes())
        return [(e.path, e.state) for e in entries], meta

    def write(self, entries: Entries, meta: dict[str, Any]) -> None:
        """Write the snapshot atomically: into a fresh directory, then renamed into place.

        Blobs are written 0600 in a 0700 directory: a saved key is as protected as the key.

        :raises HostError: the state directory cannot be written (disk full, I/O error)
        """
        access = self.access
        parent = access.private_dir(self.path.parent)
        staging = parent / f".{self.path.name}.new"
        access.remove_tree(staging)
        access.private_dir(staging)
        items = []
        for index, (path, state) in enumerate(entries):
            blob = f"{index}.blob"
            if state.kind == FILE:
                access.apply_state(staging / blob, FileState.file(state.data, 0o600))
            items.append(records.Entry(path, blob, state))
        access.apply_state(staging / MANIFEST,
                           FileState.file(records.dump_manifest(items, meta), 0o600))
        # Old one aside, new one in, old one gone: at every instant one complete copy exists
        # (read() falls back to the copy aside).
        aside = self._aside()
        access.remove_tree(aside)
        if os.path.lexists(self.path):
            access.rename(self.path, aside)
        access.rename(staging, self.path)
        access.remove_tree(aside)

    def _aside(self) -> Path:
        return self.path.parent / f".{self.path.name}.old"

    def update_meta(self, **changes: Any) -> None:
        """Change the record in place (atomic rewrite of the manifest; the blobs stay)."""
        entries, meta = records.load_manifest(self.path / MANIFEST, lambda blob: b"")
        self.access.apply_state(self.path / MANIFEST, FileState.file(
            records.dump_manifest(entries, dict(meta, **changes)), 0o600))

    def remove(self) -> None:
        """Delete the snapshot (first renamed away, so a half-deleted one is never read)."""
        if os.path.lexists(self.path):
            trash = self.path.parent / f".{self.path.name}.trash"
            self.access.remove_tree(trash)
            self.access.rename(self.path, trash)
            self.access.remove_tree(trash)


class Journal:
    """certbot-wazo's state under ROOT/var/lib/certbot-wazo: transaction, previous, original, lock."""

    def __init__(self, state_dir: Path, resolve: Callable[[str], Path],
                 access: Optional[Access] = None) -> None:
        self.state_dir = state_dir
        self.resolve = resolve
        self.access: Access = access or LocalAccess()
        self.transaction = Snapshot(state_dir / TRANSACTION, self.access)
        self.previous = Snapshot(state_dir / PREVIOUS, self.access)
        self.original = Snapshot(state_dir / ORIGINAL, self.access)

    def capture(self, paths: list[str]) -> Entries:
        """The current state of each Wazo path."""
        return [(p, read_state(self.resolve(p))) for p in paths]

    def begin(self, paths: list[str], record: Transaction) -> None:
        """Save what paths hold now, before any of them changes; also keep, once, what they held
        before the first deployment (the original, e.g. Wazo's self-signed pair)."""
        entries = self.capture(paths)
        if self.original.exists():
            original, meta = self.original.read()
            saved = records.Original.from_json(meta, self.original.path / MANIFEST)
        else:
            original, saved = [], Original(time.time(), record.generation)
        known = {p for p, _ in original}
        missing = [(p, s) for p, s in entries if p not in known]
        columns = {(c["table"], c["key"], c["column"]) for c in saved.database}
        first = [c for c in record.database if (c["table"], c["key"], c["column"]) not in columns]
        if missing or first or not self.original.exists():
            saved = dataclasses.replace(saved, database=saved.database + first)
            self.original.write(original + missing, saved.to_json())
        self.transaction.write(entries, dataclasses.replace(record, phase=Phase.INSTALLING)
                               .to_json())
        logger.debug("%s: phase installing; saved %s", self.transaction.path,  # pragma: no mutate block
                     ", ".join(paths) or "nothing")

    def open_transaction(self) -> Optional[Transaction]:
        """The open transaction's record (None when no deployment is open).

        :raises RecordError: the undo log is damaged or too new
        """
        if not self.transaction.exists():
            return None
        _, meta = self.transaction.read()
        return Transaction.from_json(meta, self.transaction.path)

    def last_deployment(self) -> Transaction:
        """The record of the last committed transaction (kept as `previous`).

        :raises HostError: none, or damaged
        """
        _, meta = self.previous.read()
        return Transaction.from_json(meta, self.previous.path)

    def original_record(self) -> Original:
        """The record kept with the state before the first deployment.

        :raises HostError: nothing was saved, or it is damaged
        """
        _, meta = self.original.read()
        return Original.from_json(meta, self.original.path / MANIFEST)

    def saved_generation(self, snapshot: Snapshot) -> Optional[str]:
        """The generation (legacy, modern) the host had when snapshot was saved.

        :raises RecordError: its record is damaged or too new
        """
        _, meta = snapshot.read()
        where = snapshot.path / MANIFEST
        if snapshot.path == self.original.path:
            return Original.from_json(meta, where).generation
        return Transaction.from_json(meta, where).generation or None

    def phase(self, phase: Phase) -> None:
        """Record how far the open transaction went."""
        logger.debug("%s: phase %s", self.transaction.path, phase.value)  # pragma: no mutate block
        self.transaction.update_meta(phase=phase.value)

    def restore(self, snapshot: Snapshot) -> list[str]:
        """Put every saved path back as it was, in reverse order; the paths restored."""
        entries, _ = snapshot.read()
        for path, state in reversed(entries):
            target = self.resolve(path)
            if read_state(target) != state:
                self.access.apply_state(target, state)
        return [p for p, _ in entries]

    def commit(self) -> None:
        """The transaction succeeded: its undo log becomes the previous state, and what it wrote
        is remembered (so that revert can tell an admin's later edit from its own)."""
        record = self.open_transaction()
        if record is not None:
            if record.database and self.original.exists():
                self._remember_written_columns(record)
            if record.written:
                try:
                    known = self.written()
                except RecordError:
                    known = {}  # damaged: what this deployment wrote is what is known now
                self.access.apply_state(self.written_path, FileState.file(
                    records.dump_written(dict(known, **record.written)), 0o600))
            self.previous.remove()
            self.access.rename(self.transaction.path, self.previous.path)
            logger.debug(  # pragma: no mutate block
                "%s: committed, kept as %s", self.transaction.path, self.previous.path)

    def _remember_written_columns(self, record: Transaction) -> None:
        """What this deployment wrote into each directory definition's column becomes what
        revert expects to find there (the original value stays the one from before the first
        deployment)."""
        _, meta = self.original.read()
        saved = Original.from_json(meta, self.original.path / MANIFEST)
        latest = {(c["table"], c["key"], c["column"]): c["new"] for c in record.database}
        database = [dict(c, new=latest.get((c["table"], c["key"], c["column"]), c["new"]))
                    for c in saved.database]
        if database != saved.database:
            self.original.update_meta(database=database)

    @property
    def written_path(self) -> Path:
        """What certbot-wazo last wrote at each path (digests), kept until revert."""
        return self.state_dir / "written.json"

    def written(self) -> dict[str, str]:
        """Path -> digest of what certbot-wazo last wrote there ({} when nothing is recorded).

        :raises RecordError: written.json is unreadable, damaged or too new
        """
        try:
            data = records.load(self.written_path)
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise RecordError(f"{self.written_path}: unreadable ({exc.strerror})") from None
        return records.written_digests(data, self.written_path)

    @property
    def failure_path(self) -> Path:
        """Where a failed deployment is remembered until it is retried."""
        return self.state_dir / "failed.json"

    def failure(self) -> Optional[Failure]:
        """The remembered failed deployment, if any.

        :raises RecordError: failed.json is damaged or too new
        """
        try:
            data = records.load(self.failure_path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise records.RecordError(f"{self.failure_path}: unreadable ({exc.strerror}; remove "
                                      "it)") from None
        return Failure.from_json(data, self.failure_path)

    def record_failure(self, record: Failure) -> None:
        """Remember a failed deployment so that `certbot-wazo retry` deploys it later."""
        self.access.private_dir(self.state_dir)
        self.access.apply_state(self.failure_path, FileState.file(records.dump(record), 0o600))

    def clear_failure(self) -> None:
        """Forget the failed deployment (it was deployed since)."""
        self.access.apply_state(self.failure_path, FileState.absent())

    def lock(self, timeout: float,
             notify: Callable[[str], None]) -> contextlib.AbstractContextManager[None]:
        """Hold the host's deployment lock; wait up to timeout seconds for another holder.

        :raises LockBusyError: still held by another process after timeout
        """
        self.access.private_dir(self.state_dir)
        return self.access.lock(self.state_dir / "lock", timeout, notify)


def digest(state: FileState) -> str:
    """A short identity of a path's state (content for files, target for links)."""
    if state.kind == FILE:
        return "file:" + hashlib.sha256(state.data).hexdigest()
    return f"{state.kind}:{state.target or ''}"
