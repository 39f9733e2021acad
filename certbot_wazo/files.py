"""Atomic, permission-safe file operations that never follow a planted symlink."""
from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import logging
import os
import secrets
import stat
from pathlib import Path
from typing import Iterator, Optional, TypeVar

from certbot_wazo.errors import HostError

ABSENT = "absent"
FILE = "file"
LINK = "link"
DIR = "dir"


logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class FileState:
    """What one path holds: nothing, a regular file (bytes, mode, owner) or a symlink."""

    kind: str
    data: bytes = b""
    mode: int = 0
    uid: int = 0
    gid: int = 0
    target: str = ""

    @classmethod
    def file(cls, data: bytes, mode: int, uid: int = 0, gid: int = 0) -> FileState:
        """A regular file with exactly these bytes, permission bits and owner."""
        return cls(FILE, data=data, mode=mode, uid=uid, gid=gid)

    @classmethod
    def link(cls, target: str) -> FileState:
        """A symbolic link to target."""
        return cls(LINK, target=target)

    @classmethod
    def directory(cls, mode: int = 0o755, uid: int = 0, gid: int = 0) -> FileState:
        """A directory (its content is not part of the state)."""
        return cls(DIR, mode=mode, uid=uid, gid=gid)

    @classmethod
    def absent(cls) -> FileState:
        """No file at all."""
        return cls(ABSENT)


@contextlib.contextmanager
def open_dir(path: Path, create_mode: Optional[int] = None) -> Iterator[int]:
    """Open a directory without following a symlink in its last component.

    :param create_mode: create the directory (and missing parents, 0755) with this mode
    :raises HostError: the directory is missing, is a symlink or is not a directory
    """
    _refuse_symlinked_ancestors(path)
    if create_mode is not None and not os.path.lexists(path):
        if not os.path.lexists(path.parent):
            path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, create_mode)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise HostError(f"{path}: directory is missing (check --wazo-root)") from None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise HostError(f"{path}: is a symlink or not a directory (replace it with a "
                            "real directory)") from None
        raise HostError(f"{path}: cannot open directory ({exc.strerror})") from None
    try:
        yield fd
    finally:
        os.close(fd)


def _refuse_symlinked_ancestors(path: Path) -> None:
    """The directories above path must be real: a planted symlink higher up would redirect
    the write outside the Wazo tree.

    :raises HostError: one of them is a symlink
    """
    absolute = Path(os.path.abspath(path))
    for ancestor in [*reversed(absolute.parents), absolute]:
        if os.path.islink(ancestor):
            raise HostError(f"{ancestor}: is a symlink on the way to {path} (certbot-wazo "
                            "does not write through symlinks: make it a real directory)")
        if not os.path.lexists(ancestor):
            return


# The files certbot-wazo manages are a few KiB; anything this large is not one of them.
MAX_FILE_BYTES = 16 * 1024 * 1024

# What a remote host's mirror (remote.py) holds as data rather than on this machine's disk,
# by path: a symlink's target as the host wrote it (the mirror writes it confined: path ->
# (target on disk, target on the host)), and the mode and owner of a file or directory (the
# mirror's own are this machine's user's, 0600 and 0700). read_state gives what the host holds,
# so that records and comparisons see the host, whoever runs certbot-wazo here.
_HOST_TEXT: dict[str, tuple[str, str]] = {}
_HOST_META: dict[str, tuple[int, int, int]] = {}


def keep_host_text(path: Path, on_disk: str, on_host: str) -> None:
    """Remember that the symlink path, written as on_disk here, holds on_host on its host."""
    _HOST_META.pop(str(path), None)
    if on_disk == on_host:
        _HOST_TEXT.pop(str(path), None)
    else:
        _HOST_TEXT[str(path)] = (on_disk, on_host)


def keep_host_meta(path: Path, mode: int, uid: int, gid: int) -> None:
    """Remember the mode and owner path has on its host (the mirror's copy has its own)."""
    _HOST_TEXT.pop(str(path), None)
    _HOST_META[str(path)] = (mode, uid, gid)


def forget_host_views(path: Path) -> None:
    """path and everything under it no longer mirror a host."""
    prefix = str(path) + "/"
    for key in [k for k in _HOST_TEXT if k == str(path) or k.startswith(prefix)]:
        del _HOST_TEXT[key]
    for key in [k for k in _HOST_META if k == str(path) or k.startswith(prefix)]:
        del _HOST_META[key]


def move_host_views(source: Path, target: Path) -> None:
    """What was kept for source (and under it) is now target's."""
    forget_host_views(target)
    _move(_HOST_TEXT, str(source), str(target))
    _move(_HOST_META, str(source), str(target))


V = TypeVar("V")


def _move(views: dict[str, V], source: str, target: str) -> None:
    for key in [k for k in views if k == source or k.startswith(source + "/")]:
        views[target + key[len(source):]] = views.pop(key)


def host_meta(path: Path, st: os.stat_result) -> tuple[int, int, int]:
    """The mode (permission bits), owner and group path has on its host: as kept for a mirror,
    else as on this machine's disk."""
    kept = _HOST_META.get(str(path))
    return kept if kept is not None else (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)


def read_state(path: Path) -> FileState:
    """Read what a path holds, without following a final symlink.

    :raises HostError: the path is a directory or another special file, or cannot be read
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return FileState.absent()
    except NotADirectoryError:
        raise HostError(f"{path.parent}: is a file, not a directory (move it away)") from None
    if stat.S_ISLNK(st.st_mode):
        target = os.readlink(path)
        kept = _HOST_TEXT.get(str(path))
        return FileState.link(kept[1] if kept is not None and kept[0] == target else target)
    if stat.S_ISDIR(st.st_mode):
        return FileState.directory(*host_meta(path, st))
    if not stat.S_ISREG(st.st_mode):
        raise HostError(f"{path}: is not a regular file (move it away)")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise HostError(f"{path}: cannot be read ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as handle:
        data = handle.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise HostError(f"{path}: larger than {MAX_FILE_BYTES // 1024 // 1024} MiB, not one of "
                        "the files certbot-wazo manages (move it away)")
    return FileState.file(data, *host_meta(path, st))


def apply_state(path: Path, state: FileState) -> None:
    """Make path hold state, atomically (a reader sees the old or the new content, never a mix).

    A regular file is created under a random temporary name with O_EXCL|O_NOFOLLOW, given its
    owner and final mode while still empty, written, fsynced and renamed over path; its bytes
    are therefore never readable by anyone the final mode excludes.

    :raises HostError: the directory is unusable or the write failed (disk full, I/O error);
        path is then left as it was
    """
    logger.debug("%s: %s", path, _summary(state))  # pragma: no mutate block
    if state.kind == ABSENT:
        _remove(path)
        return
    if state.kind == DIR:
        _make_dir(path, state)
        return
    with open_dir(path.parent, create_mode=0o755) as dir_fd:
        tmp = f".{path.name}.certbot-wazo-{secrets.token_hex(6)}.tmp"
        try:
            if state.kind == LINK:
                os.symlink(state.target, tmp, dir_fd=dir_fd)
            else:
                _write_new(dir_fd, tmp, state)
            os.rename(tmp, path.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            os.fsync(dir_fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dir_fd)
            if exc.errno == errno.EISDIR:
                raise HostError(f"{path}: is a directory (move it away)") from None
            raise HostError(f"{path}: cannot be written ({exc.strerror}; free space or fix "
                            "the file system, nothing was changed)") from None


def _summary(state: FileState) -> str:  # pragma: no mutate function
    """What a write does, for the debug log (never the bytes: they may be a private key)."""
    if state.kind == ABSENT:
        return "removed"
    if state.kind == LINK:
        return f"symlink to {state.target}"
    owner = f"mode {state.mode:04o}, owner {state.uid}:{state.gid}"
    if state.kind == DIR:
        return f"directory, {owner}"
    return f"written, {len(state.data)} bytes (sha256 " \
           f"{hashlib.sha256(state.data).hexdigest()[:16]}…), {owner}"


def _remove(path: Path) -> None:
    if not os.path.lexists(path):
        return
    with open_dir(path.parent) as dir_fd:
        try:
            if os.path.isdir(path) and not os.path.islink(path):
                os.rmdir(path.name, dir_fd=dir_fd)
            else:
                os.unlink(path.name, dir_fd=dir_fd)
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno != errno.ENOTEMPTY:
                raise HostError(f"{path}: cannot be removed ({exc.strerror})") from None
            return  # somebody else's files are in it now: keep it
        os.fsync(dir_fd)


def _make_dir(path: Path, state: FileState) -> None:
    with open_dir(path.parent) as dir_fd:
        try:
            os.mkdir(path.name, 0o700, dir_fd=dir_fd)
        except FileExistsError:
            pass
        except OSError as exc:
            raise HostError(f"{path}: cannot be created ({exc.strerror})") from None
        os.chown(path.name, state.uid, state.gid, dir_fd=dir_fd, follow_symlinks=False)
        os.chmod(path.name, state.mode, dir_fd=dir_fd)
        os.fsync(dir_fd)


def _write_new(dir_fd: int, name: str, state: FileState) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(name, flags, 0o600, dir_fd=dir_fd)
    try:
        os.fchown(fd, state.uid, state.gid)
        os.fchmod(fd, state.mode)
        view = memoryview(state.data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    finally:
        os.close(fd)


def ensure_private_dir(path: Path) -> Path:
    """Create (or tighten) a root-only 0700 directory that is not a symlink.

    :raises HostError: path is a symlink or cannot be created
    """
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    if path.is_symlink():
        raise HostError(f"{path}: is a symlink (remove it; certbot-wazo keeps its state there)")
    try:
        path.mkdir(mode=0o700, exist_ok=True)
        os.chmod(path, 0o700)
    except OSError as exc:
        raise HostError(f"{path}: cannot be created ({exc.strerror})") from None
    return path
