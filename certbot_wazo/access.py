"""How certbot-wazo changes a host: file writes, its lock, its commands and TLS connections.

Every change the transaction makes goes through an Access; reads stay plain file reads under
the host's root. LocalAccess works on this machine; remote.SshAccess works on a host reached
over OpenSSH, reading a mirror of the host's files and writing through to the host.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Iterator, NamedTuple, Optional, Protocol, Sequence

from certbot_wazo import files, listeners
from certbot_wazo.errors import (
    CommandError,
    HostError,
    LockBusyError,
    OutputLimitError,
    SignalledError,
)
from certbot_wazo.files import FileState
from certbot_wazo.ledger import Ledger
from certbot_wazo.listeners import Listener

# What is kept of a command's output (for the error line and logs).
MAX_OUTPUT = 1024 * 1024

logger = logging.getLogger(__name__)

Notify = Callable[[str], None]


class Access(Protocol):
    """The verbs the transaction uses to change a host (paths are under the host's root)."""

    # What this machine itself recorded about the host, when the host is another machine
    # whose own records must not choose this machine's files (remote mode); else None.
    ledger: Optional[Ledger]

    def local_root(self, root: Path) -> Path:
        """Where this machine reads the files of the host's root."""

    def describe(self, text: str) -> str:
        """text with local paths of the host's files named as the admin knows them."""

    def host_argv(self, argv: Sequence[str]) -> list[str]:
        """A command as the host itself names it (for the undo log)."""

    def local_argv(self, argv: Sequence[str]) -> list[str]:
        """A command of the undo log as this run runs it."""

    def apply_state(self, path: Path, state: FileState) -> None:
        """files.apply_state on the host.

        :raises HostError: as files.apply_state
        """

    def rename(self, source: Path, target: Path) -> None:
        """Rename (atomically, replacing target), then make the directory durable."""

    def remove_tree(self, path: Path) -> None:
        """Remove a directory of certbot-wazo's own state, whatever it holds."""

    def private_dir(self, path: Path) -> Path:
        """files.ensure_private_dir on the host.

        :raises HostError: as files.ensure_private_dir
        """

    def lock(self, path: Path, timeout: float, notify: Notify) -> contextlib.AbstractContextManager[None]:
        """Hold the host's deployment lock at path; wait up to timeout seconds for a holder.

        :raises LockBusyError: still held after timeout
        """

    def run(self, argv: Sequence[str], timeout: float, secret: Optional[Secret] = None) -> str:
        """Run a command of the host (no shell) that survives certbot-wazo's interruption;
        secret, when given, is handed over in a private file (never in argv).

        :raises CommandError: it failed, could not start or timed out
        """

    def touch(self, path: Path) -> None:
        """Set a file's modification time to now (not through a symlink)."""

    def connect(self, address: str, port: int, timeout: float) -> socket.socket:
        """A stream connected to address:port as the host itself reaches it.

        :raises OSError: no connection
        """

    def listeners(self) -> list[Listener]:
        """Every listening TCP socket where connect() reaches, with the process and systemd
        unit holding it (listeners.observe)."""

    def refresh(self) -> bool:
        """Read the host's files again (another process may have changed them meanwhile).

        :returns: whether they were read again (a Host's caches are then stale)
        """

    def close(self) -> None:
        """Let go of what the access holds (connections); idempotent."""


class LocalAccess:
    """This machine's own files, commands and sockets."""

    ledger: Optional[Ledger] = None  # the host is this machine: its records are its own

    def local_root(self, root: Path) -> Path:
        """The root itself."""
        return root

    def describe(self, text: str) -> str:
        """Local paths are what the admin knows."""
        return text

    def host_argv(self, argv: Sequence[str]) -> list[str]:
        """The same command."""
        return list(argv)

    def local_argv(self, argv: Sequence[str]) -> list[str]:
        """The same command."""
        return list(argv)

    def apply_state(self, path: Path, state: FileState) -> None:
        """files.apply_state."""
        files.apply_state(path, state)

    def rename(self, source: Path, target: Path) -> None:
        """os.rename, then fsync of the directory."""
        os.rename(source, target)
        fsync_dir(target.parent)

    def remove_tree(self, path: Path) -> None:
        """shutil.rmtree, ignoring what is already gone."""
        shutil.rmtree(path, ignore_errors=True)

    def private_dir(self, path: Path) -> Path:
        """files.ensure_private_dir."""
        return files.ensure_private_dir(path)

    def listeners(self) -> list[Listener]:
        """This machine's listeners (its network namespace: where connect() reaches)."""
        return listeners.observe()

    @contextlib.contextmanager
    def lock(self, path: Path, timeout: float, notify: Notify) -> Iterator[None]:
        """An flock on path (released by the kernel when this process ends, however it ends)."""
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            what = "is a symlink: remove it" if exc.errno == errno.ELOOP else "fix the file system"
            raise HostError(f"{path}: the lock file cannot be opened ({exc.strerror}; "
                            f"{what})") from None
        try:
            if not self._take(fd, path):
                holder = _holder(path) or _remote_holder(path)
                notify(f"{path}: another certbot-wazo deployment is running{holder}; "
                       f"waiting up to {timeout:g} s")
                deadline = time.monotonic() + timeout
                while not self._take(fd, path):
                    if time.monotonic() >= deadline:
                        raise LockBusyError(f"{path}: another certbot-wazo deployment is still "
                                            f"running{holder} (wait for it to finish, then run "
                                            "again)")
                    time.sleep(0.2)
            try:  # the pid only informs whoever waits: the flock is the lock
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
            except OSError as exc:
                notify(f"{path}: could not record this process's pid ({exc.strerror})")
            yield
        finally:
            os.close(fd)

    @staticmethod
    def _take(fd: int, path: Path) -> bool:
        """The flock, unless a remote run (remote.SshAccess) holds the host's lock.d: each side
        takes its own, then looks at the other's."""
        if not _try_lock(fd):
            return False
        if _remote_holder(path):
            fcntl.flock(fd, fcntl.LOCK_UN)
            return False
        return True

    def run(self, argv: Sequence[str], timeout: float, secret: Optional[Secret] = None) -> str:
        """run()."""
        return run(argv, timeout, secret)

    def touch(self, path: Path) -> None:
        """os.utime, unless path is a symlink or missing."""
        if path.is_file() and not path.is_symlink():
            os.utime(path)

    def connect(self, address: str, port: int, timeout: float) -> socket.socket:
        """socket.create_connection."""
        return socket.create_connection((address, port), timeout=timeout)

    def refresh(self) -> bool:
        """Local files are always current."""
        return False

    def close(self) -> None:
        """Nothing is held."""


def fsync_dir(path: Path) -> None:
    """Make a directory's entries durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            return False
        raise


def _remote_holder(lock: Path) -> str:
    """" (a remote run from HOST)" while a live process holds lock.d next to lock (its SSH
    session's process, or a command it started), else ""."""
    for name in ("owner", "command"):
        try:
            words = (lock.parent / "lock.d" / name).read_text().split()
        except (OSError, UnicodeDecodeError):
            continue
        if len(words) >= 2 and words[0].isdigit() and _start_time(int(words[0])) == words[1]:
            who = words[2] if len(words) > 2 else "another machine"
            return f" (a remote run from {who})"
    return ""


def _start_time(pid: int) -> str:
    """Field 22 of /proc/PID/stat (the process's start time), "" when it is gone."""
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    fields = stat_line.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else ""


def _holder(path: Path) -> str:
    try:
        pid: Optional[str] = path.read_text().strip()
    except OSError:
        pid = None
    return f" (pid {pid})" if pid else ""


class Secret(NamedTuple):
    """What a command must read but nobody else may see (a password): written to a file only
    its owner can read, named by an environment variable of the command (PGPASSFILE), and
    removed when the command ends; never in argv, which every user of the host can read."""

    variable: str
    data: bytes


def run(argv: Sequence[str], timeout: float, secret: Optional[Secret] = None) -> str:
    """Run a command (no shell) in its own session, its output in a file: it never depends on
    certbot-wazo staying alive (no pipe to break, no signal of our terminal). When certbot-wazo
    is interrupted meanwhile, the command is left to finish what it started (a restart stopped
    halfway leaves the services down), then the interruption goes on. On timeout, the whole
    session is killed.

    :returns: what it printed (standard output and error)
    :raises CommandError: it failed, could not start or timed out
    """
    if secret is None:
        returncode, text = spawn(argv, timeout)
    else:
        fd, name = tempfile.mkstemp(prefix="cw-secret-")  # 0600 from the first instant
        try:
            with os.fdopen(fd, "wb") as stream:
                stream.write(secret.data)
            returncode, text = spawn(argv, timeout, env={**os.environ, secret.variable: name})
        finally:
            with contextlib.suppress(OSError):
                os.unlink(name)
    if returncode != 0:
        lines = text.strip().splitlines()
        reason = lines[-1] if lines else "no message"
        raise CommandError(f"{argv[0]}: '{' '.join(argv[1:])}' exited with status "
                           f"{returncode}: {reason} (run it by hand to see why, fix that, "
                           "then run again)", output=text)
    return text


def spawn(argv: Sequence[str], timeout: float, stdin: Optional[bytes] = None,
          log: bool = True, limit: Optional[int] = None,
          stop_at_limit: bool = False,
          env: Optional[dict[str, str]] = None) -> tuple[int, str]:
    """run() without judging the exit status; stdin, when given, is fed from a file.

    What the command prints is read as it comes and never kept beyond limit, so it can fill
    neither this machine's memory nor its disk: past it, the rest is read and dropped (a Wazo
    command is never stopped halfway through a restart), or, with stop_at_limit (what a remote
    host sends), the command is stopped and that is an error.

    :param limit: how much output is kept (default MAX_OUTPUT)
    :returns: the exit status and what the command printed (standard output and error)
    :raises CommandError: it could not start, timed out, or printed more than limit
    """
    limit = limit or MAX_OUTPUT
    with tempfile.TemporaryFile() as feed:
        if stdin is not None:
            feed.write(stdin)
            feed.seek(0)
        try:
            proc = subprocess.Popen(list(argv), stdin=feed if stdin is not None
                                    else subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, start_new_session=True, env=env)
        except OSError as exc:
            logger.debug("could not run %s: %s", " ".join(argv), exc)
            raise CommandError(f"{argv[0]}: cannot be run ({exc.strerror}; reinstall it)") \
                from None
        reader = _Reader(proc, limit, stop_at_limit)
        try:
            try:
                _wait(proc, argv, timeout)
            except SignalledError:
                _wait(proc, argv, timeout)
                raise
        except (CommandError, SignalledError) as exc:
            text = reader.finish()
            logger.debug("ran %s: %s; output:%s", " ".join(argv), exc,
                         "\n" + text.rstrip("\n") if text.strip() else " none")
            raise
        text = reader.finish()
    if reader.overflow:
        raise OutputLimitError(f"{argv[0]}: printed more than {limit // 1024} KiB and was "
                               "stopped (nothing it printed was kept past that)")
    if log:
        logger.debug("ran %s: exit status %s; output:%s", " ".join(argv), proc.returncode,
                     "\n" + text.rstrip("\n") if text.strip() else " none")
    return proc.returncode, text


class _Reader:
    """Reads a command's output as it comes, keeping at most limit bytes; past that the
    command's session is killed. A process the command left running with the pipe open (a
    daemon it started) does not keep the reading going once the command has ended."""

    def __init__(self, proc: subprocess.Popen[bytes], limit: int, stop: bool) -> None:
        self.proc, self.limit, self.stop = proc, limit, stop
        self.data = bytearray()
        self.overflow = False
        self._ended = False
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        stream = self.proc.stdout
        if stream is None:
            return
        fd = stream.fileno()
        while True:
            ready, _, _ = select.select([fd], [], [], 0.1)
            if not ready:
                if self._ended:
                    return
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                return
            self.data += chunk[:max(0, self.limit + 1 - len(self.data))]
            if len(self.data) > self.limit:
                del self.data[self.limit:]
                if self.stop:
                    self.overflow = True
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(self.proc.pid, signal.SIGKILL)  # the waiter reaps it
                    return

    def finish(self) -> str:
        """What was read, once the command has ended."""
        self._ended = True
        self._thread.join(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return bytes(self.data).decode(errors="replace")


def _wait(proc: subprocess.Popen[bytes], argv: Sequence[str], timeout: float) -> None:
    """Wait for the command's end, at once (a pidfd where the kernel has them: Popen.wait with
    a timeout polls, up to 50 ms late per command)."""
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        pidfd = -1
    try:
        if pidfd >= 0:
            try:
                ready, _, _ = select.select([pidfd], [], [], timeout)
            finally:
                os.close(pidfd)
            if not ready:
                raise subprocess.TimeoutExpired(list(argv), timeout)
            proc.wait()
        else:
            proc.wait(timeout)
    except subprocess.TimeoutExpired:
        _kill_session(proc)
        raise CommandError(f"{argv[0]}: '{' '.join(argv[1:])}' did not finish within "
                           f"{timeout:g} s and was stopped (check the services' logs)") from None


def _kill_session(proc: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


