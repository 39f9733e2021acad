"""Remote targets: sandbox hosts reached over SSH, each in a network namespace of its own.

The product's remote mode deploys over SSH onto hosts that have only a POSIX shell, coreutils and
OpenSSH's server. A Target is such a host for the tests: a sandbox host (tests/sandbox/host.py)
whose services run in the target's own network namespace (its 127.0.0.1:443 is its own), and
Debian's real sshd listening on the target's address, every session of which runs the client's
command with /bin/sh on a PATH holding only sh and coreutils (no python, tar, find, flock).

The process using this module is the controller: it must already run in a private network
namespace (`unshare --net`, see `make remote`), never the machine's. Each target gets a veth pair
to it, 10.250.N.2/24 on the target's eth0 and 10.250.N.1/24 on the controller's tgtN, and a
default route back to the controller. The target's files are the controller's (same file
system): Target.root is also the sandbox's path as seen on the target.

    with Targets(tmp_path) as targets:
        target = targets.add("wazo1", functools.partial(build_host, generation="modern"))
        targets.ssh(target, "stat -c %s", f"{target.root}/etc/hostname")
        # ssh -F targets.ssh_config root@wazo1 ...   (host keys checked, BatchMode)
"""
from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
from types import TracebackType
from typing import Any, Callable, ClassVar, Iterator, Sequence

from .common import REPO
from .host import SandboxHost
from .procs import pid_alive, terminate, wait_until

SSHD = "/usr/sbin/sshd"
SSH = "/usr/bin/ssh"
SSH_KEYGEN = "/usr/bin/ssh-keygen"
NET_PREFIX = "10.250"  # target N: 10.250.N.2, the controller's end 10.250.N.1
LINK_PREFIX = "tgt"  # the controller's end of target N's veth pair: tgtN
LINK = re.compile(rf"^{LINK_PREFIX}[0-9]+$")
NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,30}$")
START_TIMEOUT = 60.0  # the sandbox's services (each waits up to 30 s, see systemctl.py)

# The holder of a target's namespaces (run by `unshare --net --mount`, private propagation, so
# nothing here reaches the machine's mount table): a /run of its own, where sshd finds its
# privilege separation directory /run/sshd (compiled in; the machine has no /run/sshd since its
# ssh service never ran, and a mount needs an existing mount point), and an empty /root/.bashrc
# (sshd runs the ForceCommand with root's login shell, bash, which would source the machine's).
# /root itself stays: a checkout under it (root's home, where a root admin clones) must remain
# reachable from the target. Then it watches the controller: should the controller die without
# stopping the target (SIGKILL), it kills every process of the namespace, so that nothing outlives
# both. Arguments: ready file, controller pid.
HOLDER = """set -e
mount -t tmpfs -o mode=0755,size=4m target-run /run
mkdir -m 0755 /run/sshd
if [ -f /root/.bashrc ]; then mount --bind /dev/null /root/.bashrc; fi
: > "$1"
set +e
while [ -d "/proc/$2" ]; do sleep 1; done
me=$(readlink "/proc/$$/ns/net")
for proc in /proc/[0-9]*; do
    if [ "${proc#/proc/}" != $$ ] && [ "$(readlink "$proc/ns/net" 2>/dev/null)" = "$me" ]; then
        kill -9 "${proc#/proc/}" 2>/dev/null
    fi
done
"""

# The ForceCommand of every session (POSIX sh): log the command line (base64, one line; dd
# appends it with one write(2) so concurrent sessions never interleave), then run it with sh on
# a PATH of sh and coreutils only. Never reads the session's standard input.
SESSION = """#!/bin/sh
# ForceCommand of target {name} (tests/sandbox/remote.py): a bare host's shell and coreutils.
PATH={path}
export PATH
if [ -z "${{SSH_ORIGINAL_COMMAND:-}}" ]; then
    echo "target {name}: interactive sessions are refused (give a command)" >&2
    exit 1
fi
printf '%s\\n' "$(printf '%s' "$SSH_ORIGINAL_COMMAND" | base64 -w 0)" |
    dd of={log} oflag=append conv=notrunc bs=4M iflag=fullblock status=none || exit 255
{run}
"""
# How a session runs the client's command: as given, or (a lying host) through a filter of its
# output, which runs with the session's PATH.
HONEST = 'exec /bin/sh -c "$SSH_ORIGINAL_COMMAND"'


SSHD_CONFIG = """# sshd of target {name} (tests/sandbox/remote.py), run as: sshd -D -e -f THIS_FILE
ListenAddress {address}:22
HostKey {host_key}
PidFile {pid_file}
AuthorizedKeysFile {authorized_keys}
PermitRootLogin {root_login}
PermitUserRC no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
# The files are under the test's temporary directory (/tmp is world-writable).
StrictModes no
AllowTcpForwarding yes
AllowAgentForwarding no
X11Forwarding no
PermitTunnel no
PrintMotd no
LogLevel VERBOSE
ForceCommand {session}
"""

# A target that refuses root logins (`PermitRootLogin no`): its admin logs in as ADMIN and runs
# everything through sudo, as the README asks. The account and the sudoers file exist only in
# the target's mount namespace (bind mounts over copies of the machine's /etc/passwd and
# /etc/group, and over /etc/sudoers): the machine's own are never touched.
ADMIN = "wazoadmin"
ADMIN_UID = 61500
RUN_DIR = "/run/target"  # the target's directory, as ADMIN reaches it (a bind mount)
RUN_BIN = "/run/target-bin"  # the sessions' PATH directory (sh and coreutils), likewise
SUDOERS = """# sudoers of target {name} (tests/sandbox/remote.py): the README's line, and nothing else
Defaults env_reset
Defaults !syslog
Defaults secure_path="{path}"
root ALL=(ALL:ALL) ALL
{admin} ALL=(root) NOPASSWD: /bin/sh
"""

# Start a built sandbox host's services; run inside the target's namespaces.
START_HOST = """import json, sys
from pathlib import Path
from tests.sandbox.host import SandboxHost
spec = json.loads(sys.argv[1])
SandboxHost(Path(spec["root"]), spec["generation"], spec["name"], spec["endpoints"]).start()
"""


def _run(argv: Sequence[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run argv; raise with its output when it fails."""
    result = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{shlex.join(argv)}: exit status {result.returncode}\n"
                           f"{result.stdout}{result.stderr}")
    return result


def _netns_id(pid: int | str) -> tuple[int, int]:
    """The identity (device, inode) of a process's network namespace."""
    info = os.stat(f"/proc/{pid}/ns/net")
    return info.st_dev, info.st_ino


def unavailable() -> str | None:
    """Why targets cannot be made from this process (None when they can): root, a private
    network namespace (not the machine's), sshd and the tools this module runs."""
    if os.geteuid() != 0:
        return "needs root"
    # The machine's namespace has its own interfaces (pid 1's namespace cannot be compared: a
    # container may deny reading /proc/1/ns); a private one has lo and the targets' links.
    try:
        foreign = sorted(n for n in _links() if n != "lo" and not LINK.match(n))
    except OSError as exc:
        return f"cannot list network interfaces ({exc.strerror})"
    if foreign:
        return (f"needs a private network namespace (make remote: unshare --net); this one has "
                f"{', '.join(foreign)}")
    missing = [tool for tool in (SSHD, SSH, SSH_KEYGEN) if not os.access(tool, os.X_OK)]
    missing += [tool for tool in ("unshare", "nsenter", "ip", "dpkg-query") if shutil.which(tool) is None]
    if missing:
        return f"needs {', '.join(missing)} (bash .ci/bootstrap installs openssh-server)"
    return None


def coreutils_programs() -> list[str]:
    """Every program of Debian's coreutils package in /bin and /usr/bin (absolute paths)."""
    listed = _run(["dpkg-query", "-L", "coreutils"]).stdout.splitlines()
    return sorted(path for path in listed
                  if os.path.dirname(path) in ("/bin", "/usr/bin") and os.path.isfile(path)
                  and os.access(path, os.X_OK))


def _links() -> set[str]:
    """The interface names of this process's network namespace."""
    with open("/proc/self/net/dev", encoding="ascii") as stream:
        return {line.split(":", 1)[0].strip() for line in stream.readlines()[2:]}


def _delete_link(name: str) -> None:
    """Delete a veth pair by its controller's end and wait until it is gone. The kernel also
    deletes it on its own once the peer's namespace dies, asynchronously: the link may vanish
    between a look and the delete, which is not an error."""
    if name in _links():
        result = subprocess.run(["ip", "link", "delete", name], capture_output=True, text=True,
                                timeout=30, check=False)
        if result.returncode != 0 and name in _links():
            raise RuntimeError(f"ip link delete {name}: exit status {result.returncode}\n"
                               f"{result.stdout}{result.stderr}")
    if not wait_until(lambda: name not in _links(), 5):
        raise RuntimeError(f"veth {name} is still there")


def _children() -> dict[int, list[int]]:
    """Every live process's children (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] not in ("Z", "X"):
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    return children


def _descendants(pid: int, children: dict[int, list[int]]) -> list[int]:
    """pid's descendants, parents before children."""
    found, queue = [], list(children.get(pid, []))
    while queue:
        child = queue.pop(0)
        found.append(child)
        queue.extend(children.get(child, []))
    return found


def _exe(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return ""


def _kill_all(pids: Sequence[int], timeout: float = 5.0) -> None:
    """SIGKILL every pid at once and wait until none is alive (zombies count as gone)."""
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    if not wait_until(lambda: not any(pid_alive(p) for p in pids), timeout):
        raise RuntimeError(f"still alive after SIGKILL: {[p for p in pids if pid_alive(p)]}")


class Target:
    """One remote host: a sandbox host in its own network namespace, with a real sshd.

    Made by Targets.add(); name is its Host alias in Targets.ssh_config and destination
    ("root@NAME") what ssh is given.
    """

    def __init__(self, name: str, index: int, directory: Path, host: SandboxHost,
                 bin_dir: Path, client_public_key: Path, sudo: bool = False,
                 lie: str = "") -> None:
        self.name = name
        self.lie = lie  # a sh filter every session's output goes through (a hostile host)
        self.sudo = sudo  # root logins refused: ADMIN logs in, and runs everything with sudo
        self.index = index
        self.directory = directory
        self.host = host
        self.address = f"{NET_PREFIX}.{index}.2"
        self.controller_address = f"{NET_PREFIX}.{index}.1"
        self.link = f"{LINK_PREFIX}{index}"
        self.destination = f"{ADMIN if sudo else 'root'}@{name}"
        self.host_key = directory / "ssh_host_ed25519_key"
        self.sshd_config = directory / "sshd_config"
        self.sshd_log = directory / "sshd.log"
        self.command_log = directory / "commands.log"
        self._bin_dir = bin_dir
        self._client_public_key = client_public_key
        self._holder: subprocess.Popen[bytes] | None = None
        self._sshd: subprocess.Popen[bytes] | None = None
        self._netns: tuple[int, int] | None = None
        self._link_made = False
        self.stopped = False

    def __repr__(self) -> str:
        return f"Target({self.name!r}, {self.address}, root={str(self.root)!r})"

    @property
    def root(self) -> Path:
        """The sandbox host's root: the same path on the controller and on the target."""
        return self.host.root

    @property
    def netns_pid(self) -> int:
        """The pid of the process holding the target's namespaces (/proc/PID/ns/net, .../mnt)."""
        if self._holder is None:
            raise RuntimeError(f"target {self.name} was not started")
        return self._holder.pid

    @property
    def netns(self) -> tuple[int, int]:
        """The identity (device, inode) of the target's network namespace; it outlives stop(),
        to check that nothing is left in the namespace."""
        if self._netns is None:
            raise RuntimeError(f"target {self.name} was not started")
        return self._netns

    @property
    def sshd_pid(self) -> int:
        """The listening sshd."""
        if self._sshd is None:
            raise RuntimeError(f"target {self.name} has no sshd")
        return self._sshd.pid

    def nsenter(self) -> list[str]:
        """The argv prefix entering the target's network and mount namespaces."""
        pid = self.netns_pid
        return ["nsenter", f"--net=/proc/{pid}/ns/net", f"--mount=/proc/{pid}/ns/mnt"]

    def in_netns(self, argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[Any]:
        """subprocess.run(argv, **kwargs) inside the target's namespaces, as a process of the
        target would run (the machine's programs, not the sessions' restricted PATH);
        capture_output, text and a 30 s timeout unless given."""
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        kwargs.setdefault("timeout", 30)
        kwargs.setdefault("check", False)
        return subprocess.run([*self.nsenter(), *argv], **kwargs)

    def port_open(self, port: int, address: str = "127.0.0.1") -> bool:
        """Whether address:port accepts a TCP connection from inside the target."""
        probe = ("import socket, sys\ntry:\n    socket.create_connection((sys.argv[1], int(sys.argv[2])), 1)"
                 "\nexcept OSError:\n    sys.exit(1)\n")
        return self.in_netns([sys.executable, "-I", "-c", probe, address, str(port)]).returncode == 0

    def commands(self) -> list[str]:
        """Every command line a client ran on the target, in order (the sessions' log)."""
        if not self.command_log.exists():
            return []
        return [base64.b64decode(line, validate=True).decode(errors="surrogateescape")
                for line in self.command_log.read_text(encoding="ascii").splitlines()]

    def session_pids(self) -> list[int]:
        """The sshd processes serving connections (the listening sshd's descendants)."""
        if self._sshd is None or self._sshd.poll() is not None:
            return []
        return [p for p in _descendants(self._sshd.pid, _children()) if _exe(p) == SSHD]

    def kill_sessions(self, *, commands: bool = False) -> list[int]:
        """Kill (SIGKILL) every sshd process serving a connection, not the listener: each
        client sees its connection closed by the remote host at once (ssh exits with 255), and
        new connections are accepted. As on a real host, the commands of those sessions live on
        (they meet EOF or EPIPE on their standard streams); with commands, they are killed too
        (what a crash of the host would do). Returns the pids killed."""
        if self._sshd is None or self._sshd.poll() is not None:
            return []
        tree = _descendants(self._sshd.pid, _children())
        victims = [p for p in tree if commands or _exe(p) == SSHD]
        _kill_all(victims)
        return victims

    def processes(self) -> list[int]:
        """Every live process in the target's network namespace but its holder."""
        if self._netns is None:
            return []
        found = []
        holder = self._holder.pid if self._holder is not None else -1
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and int(entry.name) != holder:
                try:
                    if _netns_id(entry.name) == self._netns and pid_alive(int(entry.name)):
                        found.append(int(entry.name))
                except OSError:
                    continue
        return found

    def start(self) -> None:
        """Namespaces, link, the sandbox's services inside, then sshd (Targets.add does it)."""
        self._start_holder()
        self._connect()
        self._start_host()
        if self.sudo:
            self._add_admin()
        self._start_sshd()

    def _add_admin(self) -> None:
        """ADMIN's account, home and sudoers line, in the target's mount namespace only. ADMIN
        cannot traverse the test's temporary directories (root's, 0700): the target's directory
        and the PATH directory are bound under the target's own /run for it."""
        self.directory.chmod(0o755)
        home = self.directory / "admin-home"
        home.mkdir(mode=0o755)
        os.chown(home, ADMIN_UID, ADMIN_UID)
        passwd, group = self.directory / "passwd", self.directory / "group"
        passwd.write_text(Path("/etc/passwd").read_text()
                          + f"{ADMIN}:x:{ADMIN_UID}:{ADMIN_UID}::{RUN_DIR}/admin-home:/bin/sh\n")
        group.write_text(Path("/etc/group").read_text() + f"{ADMIN}:x:{ADMIN_UID}:\n")
        shadow = self.directory / "shadow"  # sudo's PAM account check reads it
        shadow.write_text(Path("/etc/shadow").read_text() + f"{ADMIN}:*:19000:0:99999:7:::\n")
        shadow.chmod(0o640)
        shutil.copystat("/etc/shadow", shadow)
        os.chown(shadow, 0, os.stat("/etc/shadow").st_gid)
        sudo_bin = self.directory / "sudo-bin"
        sudo_bin.mkdir(mode=0o755)
        (sudo_bin / "sudo").symlink_to("/usr/bin/sudo")
        sudoers = self.directory / "sudoers"
        sudoers.write_text(SUDOERS.format(name=self.name, path=RUN_BIN, admin=ADMIN))
        sudoers.chmod(0o440)
        self.command_log.touch()
        self.command_log.chmod(0o666)
        inside = self.nsenter()
        _run([*inside, "mkdir", "-p", RUN_DIR, RUN_BIN])
        for source, mount_point in ((self.directory, RUN_DIR), (self._bin_dir, RUN_BIN),
                                    (passwd, "/etc/passwd"), (group, "/etc/group"),
                                    (shadow, "/etc/shadow"), (sudoers, "/etc/sudoers")):
            _run([*inside, "mount", "--bind", str(source), mount_point])

    def _start_holder(self) -> None:
        ready = self.directory / "holder.ready"
        with open(self.directory / "holder.log", "wb") as log:
            self._holder = subprocess.Popen(
                ["unshare", "--net", "--mount", "--propagation", "private", "/bin/sh", "-c", HOLDER,
                 "holder", str(ready), str(os.getpid())], stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        holder = self._holder
        if not wait_until(lambda: ready.exists() or holder.poll() is not None, 10) or not ready.exists():
            raise RuntimeError(f"target {self.name}: its namespaces could not be made:\n"
                               f"{(self.directory / 'holder.log').read_text()}")
        self._netns = _netns_id(holder.pid)

    def _connect(self) -> None:
        pid = str(self.netns_pid)
        _run(["ip", "link", "add", self.link, "type", "veth", "peer", "name", "eth0", "netns", pid])
        self._link_made = True
        _run(["ip", "address", "add", f"{self.controller_address}/24", "dev", self.link])
        _run(["ip", "link", "set", self.link, "up"])
        inside = self.nsenter()
        _run([*inside, "ip", "link", "set", "lo", "up"])
        _run([*inside, "ip", "address", "add", f"{self.address}/24", "dev", "eth0"])
        _run([*inside, "ip", "link", "set", "eth0", "up"])
        _run([*inside, "ip", "route", "add", "default", "via", self.controller_address])

    def _start_host(self) -> None:
        """SandboxHost.start() inside the namespaces: its services listen there, and its wait
        for their ports must run there too."""
        host = self.host
        spec = json.dumps({"root": str(host.root), "generation": host.generation, "name": host.name,
                           "endpoints": host.endpoints})
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(REPO), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))])}
        result = self.in_netns([sys.executable, "-c", START_HOST, spec], cwd=REPO, env=env,
                               timeout=START_TIMEOUT * 2)
        if result.returncode != 0:
            raise RuntimeError(f"target {self.name}: its sandbox host did not start (exit "
                               f"status {result.returncode}):\n"
                               f"{result.stdout}{result.stderr}")

    def _start_sshd(self) -> None:
        _run([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", f"root@{self.name} (test target)",
              "-f", str(self.host_key)])
        authorized = self.directory / "authorized_keys"
        shutil.copyfile(self._client_public_key, authorized)
        session = self.directory / "session"
        path, log = str(self._bin_dir), str(self.command_log)
        seen = {"authorized_keys": authorized, "session": session}
        if self.sudo:  # as ADMIN reaches them
            path, log = f"{RUN_BIN}:{RUN_DIR}/sudo-bin", f"{RUN_DIR}/{self.command_log.name}"
            seen = {"authorized_keys": Path(RUN_DIR, authorized.name),
                    "session": Path(RUN_DIR, session.name)}
        run = HONEST if not self.lie else \
            f'/bin/sh -c "$SSH_ORIGINAL_COMMAND" | {self.lie}'
        session.write_text(SESSION.format(name=self.name, path=shlex.quote(path), run=run,
                                          log=shlex.quote(log)))
        session.chmod(0o755)
        self.sshd_config.write_text(SSHD_CONFIG.format(
            name=self.name, address=self.address, host_key=self.host_key,
            pid_file=self.directory / "sshd.pid", **seen,
            root_login="no" if self.sudo else "prohibit-password"))
        _run([*self.nsenter(), SSHD, "-t", "-f", str(self.sshd_config)])
        with open(self.sshd_log, "ab") as log:
            self._sshd = subprocess.Popen(
                [*self.nsenter(), SSHD, "-D", "-e", "-f", str(self.sshd_config)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        sshd = self._sshd

        def listening() -> bool:
            return sshd.poll() is not None or "Server listening on" in self.sshd_log.read_text()

        if not wait_until(listening, 10) or sshd.poll() is not None:
            raise RuntimeError(f"target {self.name}: sshd did not start:\n{self.sshd_log.read_text()}")

    def stop(self) -> None:
        """Stop sshd, its sessions, the sandbox's services, anything else in the namespace,
        then the namespace's holder; the veth pair goes. Idempotent; raises (after doing all
        it can) when something would not stop."""
        errors: list[str] = []

        def attempt(what: str, action: Callable[[], object]) -> None:
            try:
                action()
            except Exception as exc:  # keep stopping the rest
                errors.append(f"{what}: {exc}")

        sshd = self._sshd
        if sshd is not None and sshd.poll() is None:  # (a reaped pid may be another process's)
            sessions = _descendants(sshd.pid, _children())
            attempt("sshd", lambda: terminate(sshd.pid, timeout=2))
            attempt("sessions", lambda: _kill_all(sessions))
        if sshd is not None:
            attempt("sshd wait", lambda: sshd.wait(5))
        attempt("sandbox host", self.host.stop)
        attempt("namespace", lambda: _kill_all(self.processes()))
        if self._link_made:
            attempt("veth", lambda: _delete_link(self.link))
        holder = self._holder
        if holder is not None and holder.poll() is None:
            attempt("holder", lambda: _kill_all([holder.pid]))
        if holder is not None:
            attempt("holder wait", lambda: holder.wait(5))
            attempt("namespace", lambda: _kill_all(self.processes()))  # the holder's last sleep
        self.stopped = True
        if errors:
            raise RuntimeError(f"target {self.name} did not stop cleanly: " + "; ".join(errors))


class Targets:
    """Targets made under base, reached with ssh -F ssh_config; a context manager whose exit
    stops every target (and every ssh -W tunnel) it made, whatever happened.

    One client key for every target (base/client_key); one known_hosts holding each target's
    host key under its name and address; a PATH directory (base/bin) of sh and coreutils.
    """

    _indexes_in_use: ClassVar[set[int]] = set()  # of every Targets alive in this process

    def __init__(self, base: Path) -> None:
        reason = unavailable()
        if reason:
            raise RuntimeError(f"remote targets cannot be made here: {reason}")
        self.base = Path(base).resolve()
        if any(c.isspace() for c in str(self.base)):
            raise ValueError(f"{self.base}: no white space, please (sshd_config, ForceCommand)")
        hidden = Path("/run")  # the targets have their own (HOLDER)
        if self.base == hidden or hidden in self.base.parents:
            raise ValueError(f"{self.base}: under {hidden}, which the targets do not see")
        self.base.mkdir(parents=True, exist_ok=True)
        self.client_key = self.base / "client_key"
        self.known_hosts = self.base / "known_hosts"
        self.ssh_config = self.base / "ssh_config"
        self.bin_dir = self.base / "bin"
        self._targets: dict[str, Target] = {}
        self._tunnels: list[subprocess.Popen[bytes]] = []
        for old in (self.client_key, self.client_key.with_suffix(".pub")):
            old.unlink(missing_ok=True)
        _run([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", "certbot-wazo tests (controller)",
              "-f", str(self.client_key)])
        shutil.rmtree(self.bin_dir, ignore_errors=True)
        self.bin_dir.mkdir()
        (self.bin_dir / "sh").symlink_to("/bin/sh")
        for program in coreutils_programs():
            link = self.bin_dir / os.path.basename(program)
            if not link.exists():
                link.symlink_to(program)
        self._write_client_files()

    def __enter__(self) -> Targets:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        try:
            self.stop()
        except RuntimeError as exc:
            if value is None:
                raise
            if hasattr(value, "add_note"):  # the original failure stays the one raised
                value.add_note(f"and stopping the targets failed: {exc}")

    def __iter__(self) -> Iterator[Target]:
        return iter(list(self._targets.values()))

    def __getitem__(self, name: str) -> Target:
        return self._targets[name]

    def add(self, name: str, build: Callable[[Path], SandboxHost], sudo: bool = False,
            lie: str = "") -> Target:
        """Build a sandbox host under base/NAME/root with build(root), then start it as a
        target: own namespaces, address, services, sshd. Stopped again when it fails. With
        sudo, the target refuses root logins: ADMIN logs in and uses sudo. With lie, a sh
        filter (sed …) that every session's output goes through: a host whose sh lies."""
        if not NAME.match(name) or name in self._targets:
            raise ValueError(f"target name {name!r}: lower-case letters, digits and dashes, unique")
        directory = self.base / name
        directory.mkdir()
        host = build(directory / "root")
        index = self._index()
        target = Target(name, index, directory, host, self.bin_dir, self.client_key.with_suffix(".pub"),
                        sudo, lie)
        self._targets[name] = target
        try:
            target.start()
        except BaseException:
            with contextlib.suppress(RuntimeError):
                target.stop()
            raise
        self._write_client_files()
        return target

    def _index(self) -> int:
        """The smallest N free in this process and in the controller's namespace, in this
        pytest worker's own range (pytest-xdist's workers share the namespace: gw0 from 1, gw1
        from 64, …)."""
        links = _links()
        worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
        first = 1 + 63 * (int(worker[2:]) % 4 if worker[2:].isdigit() else 0)
        for index in range(first, 255):
            if index not in Targets._indexes_in_use and f"{LINK_PREFIX}{index}" not in links:
                Targets._indexes_in_use.add(index)
                return index
        raise RuntimeError("no free 10.250.N.0/24 left for another target")

    def _write_client_files(self) -> None:
        """known_hosts (each target's host key under its name and its address) and
        ssh_config (a Host block per target)."""
        known, blocks = [], [f"# Targets under {self.base} (tests/sandbox/remote.py): ssh -F THIS_FILE\n"]
        for target in self._targets.values():
            if target.stopped or not target.host_key.with_suffix(".pub").exists():
                continue
            key_type, key = target.host_key.with_suffix(".pub").read_text().split()[:2]
            known.append(f"{target.name},{target.address} {key_type} {key}\n")
            blocks.append(f"""
Host {target.name}
    HostName {target.address}
    User {target.destination.split("@")[0]}
    IdentityFile {self.client_key}
    IdentitiesOnly yes
    UserKnownHostsFile {self.known_hosts}
    GlobalKnownHostsFile /dev/null
    StrictHostKeyChecking yes
    UpdateHostKeys no
    BatchMode yes
    ConnectTimeout 5
""")
        self.known_hosts.write_text("".join(known))
        self.ssh_config.write_text("".join(blocks))

    def _target(self, target: Target | str) -> Target:
        return self._targets[target] if isinstance(target, str) else target

    def ssh_argv(self, target: Target | str, *remote_words: str, options: Sequence[str] = ()) -> list[str]:
        """ssh -F ssh_config [options] root@NAME [words] (ssh joins the words with spaces and
        the target's sh parses them: quote them yourself, e.g. with shlex.join)."""
        found = self._target(target)
        if found.sudo and remote_words:  # as root, as the tests mean it
            remote_words = ("sudo", "-n", "--", "sh", "-c", shlex.quote(" ".join(remote_words)))
        return [SSH, "-F", str(self.ssh_config), *options, "--", found.destination,
                *remote_words]

    def ssh(self, target: Target | str, *remote_words: str, input: str | None = None,
            timeout: float = 30, options: Sequence[str] = ()) -> subprocess.CompletedProcess[str]:
        """Run a command on the target over SSH (see ssh_argv); never raises on its status."""
        return subprocess.run(self.ssh_argv(target, *remote_words, options=options), input=input,
                              capture_output=True, text=True, timeout=timeout, check=False,
                              stdin=None if input is not None else subprocess.DEVNULL)

    def tunnel(self, target: Target | str, port: int, address: str = "127.0.0.1") -> socket.socket:
        """A stream to address:port as the target reaches it (ssh -W: stdio forwarding, the
        target's loopback included). Its ssh ends when the socket is closed (or at stop())."""
        ours, theirs = socket.socketpair()
        with theirs, open(self.base / "tunnels.log", "ab") as log:
            self._tunnels.append(subprocess.Popen(
                self.ssh_argv(target, options=["-W", f"{address}:{port}"]), stdin=theirs.fileno(),
                stdout=theirs.fileno(), stderr=log))
        return ours

    def stop(self) -> None:
        """Stop every tunnel and target (all of them, even when one fails, then raise)."""
        errors = []
        for tunnel in self._tunnels:
            with contextlib.suppress(OSError):
                tunnel.kill()
            tunnel.wait()
        self._tunnels.clear()
        for target in self._targets.values():
            try:
                target.stop()
            except RuntimeError as exc:
                errors.append(str(exc))
            finally:
                Targets._indexes_in_use.discard(target.index)
        if errors:
            raise RuntimeError("; ".join(errors))

