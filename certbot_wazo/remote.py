"""SshAccess: a Wazo host reached over OpenSSH and changed with POSIX sh and coreutils only.

The host's files that certbot-wazo reads (host.MIRRORED) are fetched into a private local
mirror, so the whole host model (configurations, nginx, the undo log) reads them as it reads a
local root. Every change is made on the host first, by a short sh script over one multiplexed
connection, with the same guarantees as files.apply_state (a temporary file created with
O_EXCL, given its owner and final mode before any byte, fsynced, renamed over the path; no
symlink on the way followed), then on the mirror. The undo log and the lock live on the host:
whoever runs next, from wherever, finds them there.

Nothing runs on the host but sh and coreutils (stat, base64, head, cat, mv, ln, chown, chmod,
mkdir, rm, sync, sha256sum, timeout, nohup, mktemp, cut, touch, dirname, basename, readlink),
plus Wazo's own commands.
"""
from __future__ import annotations

import atexit
import base64
import binascii
import contextlib
import ctypes
import hashlib
import logging
import os
import posixpath
import secrets
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator, Optional, Sequence

from certbot_wazo import failpoints, files, ledger
from certbot_wazo.access import LocalAccess, Notify, Secret, spawn
from certbot_wazo.errors import (
    CommandError,
    ConnectionLostError,
    HostError,
    LockBusyError,
    OutputLimitError,
)
from certbot_wazo.files import ABSENT, DIR, FILE, LINK, FileState
from certbot_wazo.ledger import Ledger
from certbot_wazo.listeners import Listener, parse_report

logger = logging.getLogger(__name__)

# What is read from the host, relative to its root: (depth, shell pattern); depth 0 is the
# entry itself, "x" an executable whose presence only matters. Whatever host.Host reads must
# be here (tests/unit/test_remote.py checks every path the sandbox host reads).
MIRRORED: tuple[tuple[str, str], ...] = (
    ("8", "etc/xivo"), ("8", "etc/xivo-*"), ("8", "etc/wazo-*"), ("8", "etc/nginx"),
    ("8", "etc/asterisk/http.conf"), ("8", "etc/asterisk/http.d"),
    ("8", "etc/consul"), ("8", "etc/consul.d"),
    ("0", "etc/group"), ("0", "etc/hosts"), ("0", "etc/hostname"),
    ("8", "usr/share/xivo-certs"), ("8", "usr/share/wazo-certs"),
    ("0", "usr/share/xivo-config/templates/system/etc/hosts"),
    ("0", "usr/share/wazo/WAZO-VERSION"), ("0", "usr/share/xivo/XIVO-VERSION"),
    ("8", "var/lib/certbot-wazo"),
    ("0", "var/lib/dpkg/info/xivo*.list"), ("0", "var/lib/dpkg/info/wazo*.list"),
    *(("x", f"{directory}/{name}") for directory in ("usr/sbin", "usr/bin", "sbin", "bin")
      for name in ("xivo-update-config", "wazo-service", "xivo-service", "systemctl",
                   "asterisk", "psql", "nginx", "sendmail", "sh")),
)
STATE = "var/lib/certbot-wazo"
# What a host may send when its files are read (base64 included), per file (a Wazo
# configuration file is a few KiB; a PEM chain a few), and how many entries and seconds a read
# may take: a host that exceeds one is refused with one line, whatever it sends.
MAX_FETCH = 64 * 1024 * 1024
MAX_FILE = 1024 * 1024
MAX_ENTRIES = 20_000
FETCH_TIMEOUT = 60.0
# What a host's listener report may be (its socket tables and the processes holding them).
MAX_LISTENERS = 16 * 1024 * 1024
# The sessions after the master: through it, or not at all.
SESSION = ("-q", "-o", "ControlMaster=no", "-o", "ProxyCommand=false")
# Seconds ssh gets on top of a remote command's own timeout before the connection is deemed dead.
SLACK = 30.0

# Reads the host: one line per entry ("D|F|L|O|X mode uid gid mtime base64(path)
# [base64(data or link target)]").
FETCH = r"""
exec 2>/dev/null
echo "CWBEGIN"
cd -- "$1" || { echo "NOROOT"; exit 0; }
shift
b() { printf '%s' "$1" | base64 -w0; }
walk() {
    if [ -L "$1" ]; then
        t=$(readlink -- "$1"); printf 'L 0 0 0 0 %s %s\n' "$(b "$1")" "$(b "$t")"
    elif [ -d "$1" ]; then
        printf 'D %s %s\n' "$(stat -c '%a %u %g %Y' -- "$1")" "$(b "$1")"
        if [ "$2" -gt 0 ]; then
            for c in "$1"/* "$1"/.[!.]* "$1"/..?*; do
                if [ -e "$c" ] || [ -L "$c" ]; then walk "$c" $(($2 - 1)); fi
            done
        fi
    elif [ -f "$1" ]; then
        printf 'F %s %s ' "$(stat -c '%a %u %g %Y' -- "$1")" "$(b "$1")"
        head -c 1048577 -- "$1" | base64 -w0; echo
    elif [ -e "$1" ]; then
        printf 'O 0 0 0 0 %s\n' "$(b "$1")"
    fi
}
while [ $# -gt 1 ]; do
    depth=$1 pattern=$2; shift 2
    for p in $pattern; do
        if [ "$depth" = x ]; then
            if [ -f "$p" ] && [ -x "$p" ]; then printf 'X 755 0 0 0 %s\n' "$(b "$p")"; fi
        elif [ "$depth" = p ]; then
            p=$(printf '%s' "$pattern" | base64 -d); depth=8
            if [ -e "$p" ] || [ -L "$p" ]; then walk "$p" 8; fi
            break
        elif [ -e "$p" ] || [ -L "$p" ]; then
            walk "$p" "$depth"
        fi
    done
done
echo "END"
"""

# Changes the host: OP ARGS...; prints "OK [sha256]" or "ERR CODE message". Paths are relative
# to the root; no symlink above them is followed.
CHANGE = r"""
cd -- "$1" 2>/dev/null || { echo "ERR NOROOT cannot enter the root"; exit 0; }
op=$2; shift 2
fail() { echo "ERR $*"; exit 0; }
real() {
    p=. ifs=$IFS; IFS=/; set -f
    for part in $1; do
        p=$p/$part
        if [ -L "$p" ]; then IFS=$ifs; set +f; fail SYMLINK "$p"; fi
        if [ ! -e "$p" ]; then break; fi
    done
    IFS=$ifs; set +f
}
case $op in
put|link)
    rel=$1 d=$(dirname -- "$1") n=$(basename -- "$1")
    real "$d"
    if [ ! -d "$d" ]; then mkdir -p -m 755 -- "$d" 2>/dev/null || fail WRITE "cannot create $d"; fi
    if [ -d "$rel" ] && [ ! -L "$rel" ]; then fail ISDIR; fi
    tmp="$d/.$n.certbot-wazo-$2.tmp"
    if [ "$op" = link ]; then
        ln -s -- "$3" "$tmp" 2>/dev/null || fail WRITE "$(ln -s -- "$3" "$tmp" 2>&1)"
    else
        (umask 077; set -C; : > "$tmp") 2>/dev/null || fail WRITE "cannot create $tmp"
        if ! { chown -h -- "$4:$5" "$tmp" && chmod -- "$3" "$tmp" && cat >> "$tmp" &&
               sync -- "$tmp"; } 2>/dev/null; then
            rm -f -- "$tmp"; fail WRITE "no space left or I/O error"
        fi
        if [ "$(sha256sum < "$tmp" | cut -d' ' -f1)" != "$6" ]; then  # a transfer cut short
            rm -f -- "$tmp"; fail WRITE "the transfer was cut short"
        fi
    fi
    mv -fT -- "$tmp" "$rel" 2>/dev/null || { rm -f -- "$tmp"; fail WRITE "cannot rename"; }
    sync -- "$d" 2>/dev/null
    if [ "$op" = put ]; then echo "OK $(sha256sum < "$rel" | cut -d' ' -f1)"; else echo OK; fi
    ;;
mkdir)
    real "$1"
    mkdir -m 700 -- "$1" 2>/dev/null
    if [ -L "$1" ] || [ ! -d "$1" ]; then fail WRITE "cannot create $1"; fi
    chown -h -- "$3:$4" "$1" && chmod -- "$2" "$1" || fail WRITE "cannot set owner and mode"
    sync -- "$(dirname -- "$1")" 2>/dev/null; echo OK
    ;;
remove)
    real "$(dirname -- "$1")"
    if [ -d "$1" ] && [ ! -L "$1" ]; then rmdir -- "$1" 2>/dev/null
    elif [ -e "$1" ] || [ -L "$1" ]; then rm -f -- "$1" || fail WRITE "cannot remove $1"; fi
    echo OK
    ;;
rename)
    real "$(dirname -- "$1")"; real "$(dirname -- "$2")"
    mv -fT -- "$1" "$2" 2>/dev/null || fail WRITE "cannot rename $1"
    sync -- "$(dirname -- "$2")" 2>/dev/null; echo OK
    ;;
rmtree)
    real "$(dirname -- "$1")"; rm -rf -- "$1" || fail WRITE "cannot remove $1"; echo OK
    ;;
privdir)
    real "$1"
    mkdir -p -m 755 -- "$(dirname -- "$1")" 2>/dev/null
    if [ -L "$1" ]; then fail SYMLINK "$1"; fi
    mkdir -m 700 -- "$1" 2>/dev/null
    chmod 700 -- "$1" 2>/dev/null || fail WRITE "cannot create $1"; echo OK
    ;;
touch)
    real "$(dirname -- "$1")"
    if [ -f "$1" ] && [ ! -L "$1" ]; then touch -c -- "$1"; fi; echo OK
    ;;
drop)  # tests only (failpoint NAME:drop-server): the sshd process of this session dies
    p=$$
    while [ "$p" -gt 1 ]; do
        if [ "$(cat "/proc/$p/comm")" = sshd ]; then kill -KILL "$p"; break; fi
        p=$(cut -d' ' -f4 "/proc/$p/stat")
    done
    ;;
esac
"""

# Runs a command of the host so that it survives a dropped connection (nohup, output in a
# file) and cannot run forever (timeout); its pid is kept in the lock while it runs, so a run
# that takes over after a drop waits for it. Prints "RC n" then its output.
RUN = r"""
cd -- "$1" 2>/dev/null || { echo "CWRC 125"; exit 0; }
lock=$2 holder=$3 limit=$4 secret=$5; shift 5
out=$(mktemp) || { echo "CWRC 125"; exit 0; }
if [ "$secret" = - ]; then
    nohup timeout -k 10 "$limit" "$@" > "$out" 2>&1 < /dev/null &
else  # the secret from stdin into a file only root reads (mktemp: 0600), removed when the
    # command ends, or by this session if it is cut before the command starts
    file=
    trap 'rm -f -- "$file" "$out"; exit 1' HUP INT TERM
    file=$(mktemp) && cat > "$file" || { rm -f -- "$out" "$file"; echo "CWRC 125"; exit 0; }
    nohup sh -c 'v=$1 f=$2 l=$3; shift 3; export "$v=$f"; timeout -k 10 "$l" "$@"; rc=$?
        rm -f -- "$f"; exit $rc' sh "$secret" "$file" "$limit" "$@" > "$out" 2>&1 < /dev/null &
    trap - HUP INT TERM
fi
pid=$!
mine=
if [ "$holder" != - ] && read -r opid ostart owho < "$lock/owner" 2>/dev/null &&
        [ "$opid $ostart" = "$holder" ]; then
    mine=yes  # only the lock's holder records its command (a status run must not)
    echo "$pid $(cut -d' ' -f22 "/proc/$pid/stat" 2>/dev/null)" > "$lock/command" 2>/dev/null
fi
wait "$pid"; rc=$?
if [ -n "$mine" ]; then rm -f -- "$lock/command" 2>/dev/null; fi
echo "CWRC $rc"; head -c 1048576 -- "$out"; rm -f -- "$out"
"""

# The lock: a directory created by an atomic rename with its owner inside ("pid starttime
# who"); the owner is a process of the holder's SSH session, so the lock is stale as soon as
# that connection ends, unless a command it started still runs. Prints OK or "HELD who".
LOCK = r"""
cd -- "$1" 2>/dev/null || { echo "ERR cannot enter the root"; exit 0; }
state=$2 me=$3
lock=$state/lock.d
alive() {
    [ -f "$1" ] || return 1
    read -r pid start who < "$1" 2>/dev/null || return 1
    [ -n "$pid" ] && [ "$(cut -d' ' -f22 "/proc/$pid/stat" 2>/dev/null)" = "$start" ]
}
take() {
    tmp=$state/.lock.d.$$
    rm -rf -- "$tmp"
    if ! mkdir -m 700 -- "$tmp" 2>/dev/null || ! printf '%s\n' "$me" > "$tmp/owner"; then
        rm -rf -- "$tmp"; echo "ERR cannot create $tmp (free space or fix the file system)"
        exit 0
    fi
    mv -T -- "$tmp" "$lock" 2>/dev/null && return 0
    rm -rf -- "$tmp"; return 1
}
mywho=${me##* }
# A local certbot-wazo holds an flock on $state/lock (access.LocalAccess): each side takes its
# own lock, then looks at the other's.
local_holder() {
    ino=$(stat -c %i -- "$state/lock" 2>/dev/null) || return 1
    while read -r n kind adv mode pid dev rest; do
        case $kind:$dev in FLOCK:*:"$ino") echo "$pid"; return 0 ;; esac
    done < /proc/locks
    return 1
}
if take; then
    if holder=$(local_holder); then
        rm -rf -- "$lock"; echo "HELD a local certbot-wazo, pid $holder"; exit 0
    fi
    echo OK; exit 0
fi
read -r opid ostart owho < "$lock/owner" 2>/dev/null
if alive "$lock/command"; then echo "HELD ${owho:-another run} (its command still runs)"; exit 0; fi
if alive "$lock/owner" && [ "$owho" != "$mywho" ]; then echo "HELD $owho"; exit 0; fi
# its owner is gone, or is this same run's lost connection (a session sshd has not noticed
# is dead yet): stale
dead=$state/.lock.d.dead.$$
if mv -T -- "$lock" "$dead" 2>/dev/null; then
    read -r dpid dstart dwho < "$dead/owner" 2>/dev/null
    if alive "$dead/owner" && [ "$dwho" != "$mywho" ]; then  # another run took it meanwhile
        mv -T -- "$dead" "$lock" 2>/dev/null; echo "HELD a run that just started"; exit 0
    fi
    rm -rf -- "$dead"
fi
if take; then
    if holder=$(local_holder); then
        rm -rf -- "$lock"; echo "HELD a local certbot-wazo, pid $holder"; exit 0
    fi
    echo OK
else
    echo "HELD a run that just started"
fi
"""

# Prints the host's listening TCP sockets and who holds them, for listeners.parse_report: each
# line of /proc/net/tcp and tcp6 ("T4 "/"T6 "), then for every process holding one of their
# listening inodes "O PID INODE", its control group ("C PID LINE") and name ("N PID COMM"). One
# `ls` lists every descriptor; the shell's own `case` picks the sockets (no process per fd).
LISTENERS = r"""
exec 2>/dev/null
echo CWBEGIN
inodes=" "
for v in 4 6; do
    f=/proc/net/tcp; [ $v = 6 ] && f=/proc/net/tcp6
    [ -r $f ] || continue
    while read -r sl local remote st rest; do
        echo "T$v $sl $local $remote $st $rest"
        if [ "$st" = 0A ]; then set -- $rest; inodes="$inodes$6 "; fi
    done < $f
done
pid=
ls -l /proc/[0-9]*/fd | while IFS= read -r line; do
    case $line in
    /proc/*/fd*:) pid=${line#/proc/}; pid=${pid%%/*} ;;
    *"socket:["*)
        ino=${line##*socket:[}; ino=${ino%]}
        case $inodes in *" $ino "*)
            echo "O $pid $ino"
            while IFS= read -r c; do echo "C $pid $c"; done < /proc/$pid/cgroup
            echo "N $pid $(cat /proc/$pid/comm)" ;;
        esac ;;
    esac
done
echo END
"""

UNLOCK = r"""
cd -- "$1" 2>/dev/null || exit 0
read -r pid start who < "$2/lock.d/owner" 2>/dev/null && [ "$pid $start" = "$3" ] &&
    rm -rf -- "$2/lock.d"
echo OK
"""

# The lock's owner: this session's shell, replaced by cat, which lives until the connection
# ends or certbot-wazo closes its input.
KEEPER = r"""echo "$$ $(cut -d' ' -f22 /proc/$$/stat)"; exec cat > /dev/null"""


class SshAccess:
    """One host over one multiplexed OpenSSH connection (the system's ssh client: the admin's
    ~/.ssh/config, agent and known_hosts apply; host keys are checked as configured)."""

    def __init__(self, destination: str, root: Path, ssh_config: Optional[Path] = None,
                 command_timeout: float = 300.0, sudo: bool = False) -> None:
        self.destination = destination
        # the host's shell as root: itself (root login), or through sudo -n (never prompts)
        self._shell = "sudo -n -- sh" if sudo else "sh"
        self.root = Path("/") / root
        self.ssh_config = ssh_config
        self.command_timeout = command_timeout
        self._dir = Path(tempfile.mkdtemp(prefix="cw-"))  # 0700: the mirror holds keys
        self._base = self._dir / "m"
        self._control = self._dir / "c"
        self._master: Optional[subprocess.Popen[bytes]] = None
        self._keeper: Optional[subprocess.Popen[bytes]] = None
        self._me: Optional[str] = None  # "pid starttime" of the lock's owner, while held
        self._forwards: list[subprocess.Popen[bytes]] = []
        self._closed = False
        self._mirror = LocalAccess()
        self.ledger: Optional[Ledger] = None  # once connected: the host key is known then
        atexit.register(self.close)
        failpoints.on_drop(self.drop)

    @classmethod
    def open(cls, destination: str, root: Path, ssh_config: Optional[Path] = None,
             command_timeout: float = 300.0, sudo: bool = False) -> SshAccess:
        """Connect to destination and read the host's files under root.

        :raises HostError: the host cannot be reached, or its root is not there
        """
        access = cls(destination, root, ssh_config, command_timeout, sudo)
        try:
            access.connect_master()
            access.ledger = Ledger(ledger.default_dir(), access.destination, access.root,
                                   access.host_key())
            access.fetch()
        except BaseException:
            access.close()
            raise
        return access

    # -- names --------------------------------------------------------------------------------
    def local_root(self, root: Path) -> Path:
        """The mirror of the host's root."""
        return self._base / str(self.root).lstrip("/")

    def describe(self, text: str) -> str:
        """Mirror paths named as DESTINATION:PATH (scp's notation)."""
        return text.replace(str(self._base) + "/", f"{self.destination}:/") \
            .replace(str(self._base), f"{self.destination}:/")

    def host_argv(self, argv: Sequence[str]) -> list[str]:
        """Mirror paths in a command as the host's paths."""
        base = str(self._base)
        return ["/" + str(Path(a).relative_to(base)) if a.startswith(base + "/") else a
                for a in argv]

    def local_argv(self, argv: Sequence[str]) -> list[str]:
        """The host's paths under its root (the commands the undo log names) as mirror paths."""
        root = str(self.root).rstrip("/") + "/"
        return [str(self._base) + a if a.startswith(root) else a for a in argv]

    def _remote(self, path: Path) -> str:
        """A mirror path as a path relative to the host's root.

        :raises HostError: path is not under the mirror's root
        """
        try:
            return str(path.relative_to(self.local_root(self.root))) or "."
        except ValueError:
            raise HostError(f"{path}: not under the host's root {self.root}") from None

    # -- the connection -----------------------------------------------------------------------
    def _ssh(self, *options: str) -> list[str]:
        """ssh with the admin's configuration and this run's control socket. The sessions
        after the master also get ProxyCommand=false: if the master is gone, they fail instead
        of opening a second connection behind the lock's back."""
        argv = ["ssh"]
        if self.ssh_config is not None:
            argv += ["-F", str(self.ssh_config)]
        if not sys.stdin.isatty():
            argv += ["-o", "BatchMode=yes"]  # a timer: nobody can type a password
        return [*argv, "-o", f"ControlPath={self._control}", *options]

    def connect_master(self) -> None:
        """Open the one connection of this run (ssh -M); every command shares it.

        :raises HostError: ssh cannot connect (the message is ssh's own)
        """
        log = self._dir / "master.log"
        with open(log, "wb") as stream:
            self._master = subprocess.Popen(  # -v: the host key ssh verified, in the log
                self._ssh("-M", "-N", "-v", "-o", "ControlPersist=no", "-o", "ServerAliveInterval=10",
                          "-o", "ServerAliveCountMax=3", self.destination),
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stream,
                preexec_fn=_die_with_parent, start_new_session=True)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self._master.poll() is not None:
                break
            check = subprocess.run(self._ssh("-O", "check", self.destination),
                                   capture_output=True, check=False)
            if check.returncode == 0:
                logger.debug("ssh: connected to %s (control %s)", self.destination,
                             self._control)
                return
            time.sleep(0.05)
        reason = _last_line(_not_debug(log.read_text(errors="replace"))) or \
            "no answer within 60 s"
        raise HostError(f"{self.destination}: cannot connect over SSH ({reason}) (check that "
                        f"'ssh {self.destination} true' works as this user, host key "
                        "included)")

    def host_key(self) -> str:
        """The host key ssh verified when it connected ("ED25519 SHA256:…"), "" if unknown."""
        try:
            with open(self._dir / "master.log", "rb") as log:
                head = log.read(256 * 1024).decode(errors="replace")
        except OSError:
            return ""
        for line in head.splitlines():
            if line.startswith("debug1: Server host key: "):
                words = line.split()
                return " ".join(words[4:6]) if len(words) >= 6 else ""
        return ""

    def _exec(self, script: str, args: Sequence[str], stdin: Optional[bytes] = None,
              timeout: float = 60.0, limit: int = 1024 * 1024) -> str:
        """Run a sh script of ours on the host with args.

        :returns: its standard output and error
        :raises ConnectionLostError: the connection is gone
        """
        if self._closed or self._master is None or self._master.poll() is not None:
            # never a second connection behind the lock's back: ssh would open one when the
            # master's socket is gone
            raise ConnectionLostError(f"{self.destination}: the SSH connection was lost")
        command = " ".join([self._shell, "-c", shlex.quote(script), "sh",
                            *map(shlex.quote, args)])
        try:
            returncode, output = spawn([*self._ssh(*SESSION),
                                        self.destination, command],
                                       timeout + SLACK, stdin=stdin, log=False, limit=limit,
                                       stop_at_limit=True)
        except OutputLimitError:
            raise HostError(f"{self.destination}: the host sent more than {limit // 1024} KiB "
                            "in answer to one request and was cut off (certbot-wazo bounds what "
                            "a host may send; check the host)") from None
        except CommandError as exc:
            raise ConnectionLostError(f"{self.destination}: the SSH connection stopped answering "
                                 f"({exc})") from None
        if returncode == 255:
            raise ConnectionLostError(f"{self.destination}: the SSH connection was lost "
                                 f"({_last_line(output) or 'ssh exited with status 255'})")
        refused = _sudo_refusal(output) if self._shell != "sh" and returncode else ""
        if refused:
            raise HostError(f"{self.destination}: sudo refused to run certbot-wazo's commands "
                            f"({refused}; give the account the README's sudoers line: "
                            f"{self.destination.split('@')[0] if '@' in self.destination else 'USER'}"
                            " ALL=(root) NOPASSWD: /bin/sh)")
        return output

    # -- reading: the mirror ------------------------------------------------------------------
    def fetch(self) -> None:
        """Read the host's files (MIRRORED, then what their symlinks and nginx's certificates
        point to) into the mirror.

        :raises HostError: the root is missing on the host
        """
        shutil.rmtree(self._base, ignore_errors=True)
        files.forget_host_views(self._base)
        self._base.mkdir(mode=0o700)
        self._fetch_specs([item for spec in MIRRORED for item in spec])
        for _ in range(4):  # symlinks to files outside the mirrored trees, and what nginx serves
            wanted = [rel for rel in self._outside_links() + self._nginx_files()
                      if not os.path.lexists(self.local_root(self.root) / rel)]
            if not wanted:
                break
            self._fetch_specs([item for rel in sorted(set(wanted)) for item in
                               ("p", base64.b64encode(rel.encode()).decode())])

    def _fetch_specs(self, specs: list[str]) -> None:
        output = self._exec(FETCH, [str(self.root), *specs], timeout=FETCH_TIMEOUT,
                            limit=MAX_FETCH)
        lines = output.splitlines()
        lines = lines[lines.index("CWBEGIN") + 1:] if "CWBEGIN" in lines else []
        if lines and lines[0] == "NOROOT":
            raise HostError(f"{self.destination}:{self.root}: no such directory on the host, "
                            "or the account cannot enter it (check --root; a host that refuses "
                            "root logins needs --sudo)")
        if not lines or lines[-1] != "END":
            raise ConnectionLostError(f"{self.destination}: reading the host's files stopped "
                                 f"halfway ({_last_line(output) or 'no answer'})")
        root = self.local_root(self.root)
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        if len(lines) - 1 > MAX_ENTRIES:
            raise HostError(f"{self.destination}:{self.root}: more than {MAX_ENTRIES} files where "
                            "certbot-wazo reads Wazo's configuration (not a Wazo host as "
                            "shipped; check the host)")
        for line in lines[:-1]:
            try:
                ok = _mirror_entry(root, line)
            except HostError as exc:
                raise HostError(self.describe(str(exc))) from None
            if not ok:
                raise ConnectionLostError(f"{self.destination}: an unreadable answer while "
                                          "reading the host's files (run again)")

    def _outside_links(self) -> list[str]:
        """Targets of mirrored symlinks (relative to the root) that were not fetched."""
        root = self.local_root(self.root)
        found = []
        for directory, dirs, names in os.walk(root):
            for name in dirs + names:
                path = Path(directory) / name
                if path.is_symlink():  # confined: relative, and under the root
                    joined = os.path.normpath(os.path.join(directory, os.readlink(path)))
                    with contextlib.suppress(ValueError):
                        found.append(str(Path(joined).relative_to(root)))
        return [f for f in found if f not in ("", ".")]

    def _nginx_files(self) -> list[str]:
        """The certificates nginx names (a certbot --nginx lineage, say), relative to the root."""
        from certbot_wazo.host import Host  # host imports access; no cycle at import time
        try:
            servers = Host(self.local_root(self.root), self).nginx_servers()
        except Exception as exc:  # a broken nginx configuration is reported by the host model
            logger.debug("nginx not read for the mirror: %s", exc)
            return []
        return [c.lstrip("/") for s in servers for c in s.certificates if c.startswith("/")]

    def listeners(self) -> list[Listener]:
        """The host's listening TCP sockets and their owners (its /proc, read by sh).

        :raises ConnectionLostError: the connection is gone
        """
        output = self._exec(LISTENERS, [], timeout=30, limit=MAX_LISTENERS)
        begin, end = output.find("CWBEGIN\n"), output.rfind("\nEND")
        if begin < 0 or end < begin:
            logger.debug("%s: no listener report (%s)", self.destination, _last_line(output))
            return []
        return parse_report(output[begin + len("CWBEGIN\n"):end])

    def refresh(self) -> bool:
        """Read the host's files again."""
        self.fetch()
        return True

    # -- changing: the host first, then the mirror --------------------------------------------
    def _change(self, op: str, *args: str, stdin: Optional[bytes] = None) -> str:
        """Run one CHANGE operation; its answer after OK.

        :raises HostError: the host refused it
        """
        output = self._exec(CHANGE, [str(self.root), op, *args], stdin=stdin)
        lines = [line for line in output.splitlines() if line.startswith(("OK", "ERR"))]
        answer = lines[-1] if lines else ""
        if answer.startswith("OK"):
            return answer[3:]
        words = answer.split(" ", 2)
        code = words[1] if len(words) > 1 else "?"
        detail = words[2] if len(words) > 2 else _last_line(output)
        path = self.local_root(self.root) / args[0]
        if code == "SYMLINK":
            raise HostError(f"{self.local_root(self.root) / detail.lstrip('./')}: is a symlink "
                            f"on the way to {path} (certbot-wazo does not write through "
                            "symlinks: make it a real directory)")
        if code == "ISDIR":
            raise HostError(f"{path}: is a directory (move it away)")
        raise HostError(f"{path}: cannot be written ({detail or 'no answer'}; free space or fix "
                        "the file system, nothing was changed)")

    def apply_state(self, path: Path, state: FileState) -> None:
        """files.apply_state on the host, then on the mirror."""
        rel = self._remote(path)
        logger.debug("%s:%s/%s: %s", self.destination, self.root, rel, state.kind)
        with self._resynced(path):
            if state.kind == FILE:
                expected = hashlib.sha256(state.data).hexdigest()
                digest = self._change("put", rel, secrets.token_hex(6), f"{state.mode:o}",
                                      str(state.uid), str(state.gid), expected,
                                      stdin=state.data)
                if digest.strip() != expected:
                    raise HostError(f"{path}: what the host holds now differs from what was "
                                    "sent (check its disk; run again)")
            elif state.kind == LINK:
                self._change("link", rel, secrets.token_hex(6), state.target)
            elif state.kind == DIR:
                self._change("mkdir", rel, f"{state.mode:o}", str(state.uid), str(state.gid))
            elif state.kind == ABSENT:
                self._change("remove", rel)
        mirror_state(self.local_root(self.root), path, state)

    def rename(self, source: Path, target: Path) -> None:
        """mv -T on the host, then on the mirror."""
        with self._resynced(source, target):
            self._change("rename", self._remote(source), self._remote(target))
        self._mirror.rename(source, target)
        files.move_host_views(source, target)

    def remove_tree(self, path: Path) -> None:
        """rm -rf of certbot-wazo's own state on the host, then on the mirror."""
        rel = self._remote(path)
        if not (rel == STATE or rel.startswith(STATE + "/")):
            raise HostError(f"{path}: not certbot-wazo's state; not removed")
        with self._resynced(path):
            self._change("rmtree", rel)
        self._mirror.remove_tree(path)
        files.forget_host_views(path)

    @contextlib.contextmanager
    def _resynced(self, *paths: Path) -> Iterator[None]:
        """A change that fails or is interrupted may still have happened on the host (the
        answer was lost, a signal came while ssh ran it): read those paths again, so that the
        undo that follows compares with what the host holds. When that fails too, the
        connection is gone and the next run reads everything again."""
        try:
            yield
        except BaseException:
            for path in paths:
                try:
                    if path.is_dir() and not path.is_symlink():
                        self._mirror.remove_tree(path)
                    else:
                        self._mirror.apply_state(path, FileState.absent())
                    files.forget_host_views(path)
                    self._fetch_specs(["p", base64.b64encode(self._remote(path).encode())
                                       .decode()])
                except (OSError, HostError) as exc:
                    logger.debug("%s: not read again after a failed change: %s", path, exc)
            raise

    def private_dir(self, path: Path) -> Path:
        """files.ensure_private_dir on the host, then on the mirror."""
        self._change("privdir", self._remote(path))
        made = self._mirror.private_dir(path)
        files.keep_host_meta(path, 0o700, 0, 0)  # root's, on the host
        return made

    def touch(self, path: Path) -> None:
        """touch -c on the host (not through a symlink)."""
        self._change("touch", self._remote(path))

    # -- commands -----------------------------------------------------------------------------
    def run(self, argv: Sequence[str], timeout: float, secret: Optional[Secret] = None) -> str:
        """Run a command of the host (paths of the mirror become the host's), immune to a
        dropped connection; then read the host's /etc/hosts again (xivo-update-config renders
        it). A secret travels on the session's standard input, never on a command line.

        :raises CommandError: it failed, could not start or timed out
        """
        remote = self.host_argv(argv)
        output = self._exec(RUN, [str(self.root), f"{self.root}/{STATE}/lock.d",
                                  self._me or "-", f"{timeout:g}",
                                  secret.variable if secret is not None else "-", *remote],
                            stdin=secret.data if secret is not None else None,
                            timeout=timeout + 15)
        # after what the account's login scripts may print: the tagged status line
        marker = output.find("CWRC ")
        header, _, text = output[marker if marker >= 0 else len(output):].partition("\n")
        words = header.split()
        status = int(words[1]) if len(words) == 2 and words[1].isdigit() else 125
        logger.debug("ran on %s: %s: exit status %s; output:%s", self.destination,
                     " ".join(remote), status, "\n" + text.rstrip("\n") if text.strip()
                     else " none")
        if status == 124:
            raise CommandError(f"{self.destination}:{remote[0]}: '{' '.join(remote[1:])}' did "
                               f"not finish within {timeout:g} s and was stopped (check the "
                               "services' logs)")
        if status in (125, 126, 127):
            raise CommandError(f"{self.destination}:{remote[0]}: cannot be run (exit status "
                               f"{status}: {_last_line(text) or 'not found'}; reinstall it)")
        if status != 0:
            raise CommandError(f"{self.destination}:{remote[0]}: '{' '.join(remote[1:])}' "
                               f"exited with status {status}: {_last_line(text) or 'no message'}"
                               " (run it by hand to see why, fix that, then run again)",
                               output=text)
        self._fetch_specs(["0", "etc/hosts"])
        return text

    def connect(self, address: str, port: int, timeout: float) -> socket.socket:
        """A stream to address:port as the host reaches it (ssh -W over the connection).

        :raises ConnectionLostError: the connection is gone
        """
        if self._master is None or self._master.poll() is not None:
            # not an OSError: a probe must not keep retrying a connection that is gone
            raise ConnectionLostError(f"{self.destination}: the SSH connection was lost")
        self._forwards = [p for p in self._forwards if p.poll() is None]
        ours, theirs = socket.socketpair()
        host = f"[{address}]" if ":" in address else address
        try:
            proc = subprocess.Popen(
                self._ssh(*SESSION, "-W", f"{host}:{port}",
                          self.destination),
                stdin=theirs.fileno(), stdout=theirs.fileno(), stderr=subprocess.DEVNULL,
                start_new_session=True)
        except OSError:
            ours.close()
            raise
        finally:
            theirs.close()
        self._forwards.append(proc)
        ours.settimeout(timeout)
        return ours

    # -- the lock -----------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self, path: Path, timeout: float, notify: Notify) -> Iterator[None]:
        """The host's lock (STATE/lock.d), owned by a process of this connection: a dropped
        connection or a killed certbot-wazo frees it, once a command it started has ended.

        :raises LockBusyError: still held after timeout
        """
        state = self._remote(path.parent)
        keeper = subprocess.Popen(
            [*self._ssh(*SESSION), self.destination,
             f"{self._shell} -c {shlex.quote(KEEPER)}"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, start_new_session=True)
        me = ""
        for _ in range(100):  # past what the account's login scripts may print
            line = keeper.stdout.readline().decode(errors="replace") if keeper.stdout else ""
            words = line.split()
            if not line or (len(words) == 2 and all(w.isdigit() for w in words)):
                me = " ".join(words)
                break
        if len(me.split()) != 2:
            _end(keeper)
            raise ConnectionLostError(f"{self.destination}: the SSH connection was lost (taking "
                                 "the lock)")
        who = f"{socket.gethostname()}-pid-{os.getpid()}"
        deadline = time.monotonic() + timeout
        told = False
        while True:
            answer = _last_line(self._exec(LOCK, [str(self.root), state, f"{me} {who}"]))
            if answer == "OK":
                break
            if not answer.startswith("HELD "):
                _end(keeper)
                raise HostError(f"{self.local_root(self.root) / state / 'lock.d'}: the lock "
                                f"cannot be taken ({answer.removeprefix('ERR ') or 'no answer'})")
            holder = answer[5:]
            where = f"{self.local_root(self.root) / state / 'lock.d'}"
            if time.monotonic() >= deadline:
                _end(keeper)
                raise LockBusyError(f"{where}: another certbot-wazo deployment is still running "
                                    f"({holder}) (wait for it to finish, then run again)")
            if not told:
                notify(f"{where}: another certbot-wazo deployment is running ({holder}); "
                       f"waiting up to {timeout:g} s")
                told = True
            time.sleep(0.5)
        self._keeper, self._me = keeper, me
        try:
            yield
        finally:
            self._me = None
            with contextlib.suppress(ConnectionLostError):
                self._exec(UNLOCK, [str(self.root), state, me])
            _end(keeper)
            self._keeper = None

    # -- tests --------------------------------------------------------------------------------
    def drop(self, server: bool = False) -> None:
        """Lose the connection now: the client dies (kill -9 of ssh), or the server ends the
        session (failpoints NAME:drop and NAME:drop-server)."""
        if server:
            with contextlib.suppress(ConnectionLostError):
                self._exec(CHANGE, [str(self.root), "drop"], timeout=5)
        elif self._master is not None:
            self._master.kill()
        time.sleep(0.5)

    def close(self) -> None:
        """End the connection and remove the mirror (it holds private keys)."""
        if self._closed:
            return
        self._closed = True
        for proc in [*self._forwards, *([self._keeper] if self._keeper else [])]:
            _end(proc)
        if self._master is not None:
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                subprocess.run(self._ssh("-O", "exit", self.destination), capture_output=True,
                               timeout=5, check=False)
            _end(self._master)
        shutil.rmtree(self._dir, ignore_errors=True)
        files.forget_host_views(self._dir)
        atexit.unregister(self.close)
        failpoints.off_drop(self.drop)


def _mirror_entry(root: Path, line: str) -> bool:
    """One line of FETCH as an entry of the mirror (owner and mode as on the host, kept as
    data: see mirror_state).

    The mirror is data the host describes, never a tree the host shapes: an entry with a
    symlink (or anything but a directory) above it inside the mirror is refused, as is a
    special file or a file larger than MAX_FILE; no owner or mode is ever set through a link.

    :returns: False when the line is not one FETCH writes (the mirror would be wrong)
    :raises HostError: the host describes something certbot-wazo refuses to hold
    """
    try:
        _mirror_one(root, line)
    except (ValueError, binascii.Error, IndexError):
        logger.debug("malformed line while mirroring: %s", line[:200])
        return False
    except OSError as exc:  # the host model reports what is missing
        logger.debug("not mirrored: %s (%s)", line[:200], exc)
    return True


def _real_dir_above(root: Path, path: Path) -> None:
    """Create the directories between root and path (0700), each checked to be a real
    directory, never a symlink the host described.

    :raises HostError: a component above path is a symlink or not a directory
    """
    current = root
    for part in path.relative_to(root).parts[:-1]:
        current = current / part
        try:
            os.mkdir(current, 0o700)
        except FileExistsError:
            pass
        info = os.lstat(current)
        if not stat.S_ISDIR(info.st_mode):
            raise HostError(f"{root / path.relative_to(root)}: has a symlink or a file above it "
                            f"({current}) on the host; certbot-wazo reads nothing through it")


def _mirror_one(root: Path, line: str) -> None:
    words = line.split(" ")
    if len(words) < 6 or words[0] not in ("D", "F", "L", "O", "X"):
        raise ValueError(line[:80])
    kind, mode, uid, gid = words[0], int(words[1], 8) & 0o7777, int(words[2]), int(words[3])
    mtime = int(words[4])
    rel = base64.b64decode(words[5], validate=True).decode("utf-8", "surrogateescape")
    rel = os.path.normpath(rel)
    if rel.startswith("..") or os.path.isabs(rel):
        return
    path = root / rel if rel != "." else root
    if path != root:
        _real_dir_above(root, path)
    if kind == "O":
        raise HostError(f"{path}: a FIFO, device or socket on the host where a configuration "
                        "file belongs (certbot-wazo never opens one: remove it)")
    if os.path.islink(path):  # described twice (a later fetch): replaced, never followed
        os.unlink(path)
    if kind == "D":
        if not os.path.lexists(path):
            os.mkdir(path, 0o700)
        if not stat.S_ISDIR(os.lstat(path).st_mode):
            raise HostError(f"{path}: described both as a file and as a directory by the host")
        files.keep_host_meta(path, mode & 0o777, uid, gid)
    elif kind == "L":
        target = base64.b64decode(words[6], validate=True).decode("utf-8", "surrogateescape")
        if os.path.lexists(path) and stat.S_ISDIR(os.lstat(path).st_mode):
            raise HostError(f"{path}: described both as a directory and as a link by the host")
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        mirror_state(root, path, FileState.link(target))
    else:
        data = base64.b64decode(words[6], validate=True) if kind == "F" and len(words) > 6 \
            else b""
        if len(data) > MAX_FILE:
            raise HostError(f"{path}: larger than {MAX_FILE // 1024} KiB on the host (not a Wazo "
                            "configuration or certificate file; move it away)")
        mirror_state(root, path, FileState.file(data, mode & 0o777, uid, gid))
        if mtime:  # when it was last written (status: the last deployment's time)
            os.utime(path, (mtime, mtime), follow_symlinks=False)


def mirror_state(root: Path, path: Path, state: FileState) -> None:
    """files.apply_state in the mirror of the host's root, whoever runs certbot-wazo: the
    host's owner and mode are kept as data (files.keep_host_meta); on disk the mirror's files
    belong to this machine's user, 0600 (0700 for an executable, which only needs to be found),
    its directories 0700: no chown, and nothing the host sets decides who reads them here. A
    link is written confined (see confined()); read_state still gives the host's text."""
    if state.kind == LINK:
        on_disk = confined(root, path, state.target)
        files.apply_state(path, FileState.link(on_disk))
        files.keep_host_text(path, on_disk, state.target)
    elif state.kind == FILE:
        files.apply_state(path, FileState.file(state.data, 0o700 if state.mode & 0o111 else 0o600,
                                               os.geteuid(), os.getegid()))
        files.keep_host_meta(path, state.mode, state.uid, state.gid)
    elif state.kind == DIR:
        files.apply_state(path, FileState.directory(0o700, os.geteuid(), os.getegid()))
        files.keep_host_meta(path, state.mode, state.uid, state.gid)
    else:
        files.forget_host_views(path)
        files.apply_state(path, state)


def confined(root: Path, link: Path, target: str) -> str:
    """A host's symlink target as the mirror writes it: resolved as the host resolves it with
    its root as `/` (an absolute target names a path under the root; `..` stops at the root),
    then written relative to the link. Every `..` of it comes first and climbs only real
    directories of the mirror, and every link it crosses is written the same way, so following
    it on this machine never leaves the mirror, whatever the host wrote."""
    above = link.parent.relative_to(root).as_posix()
    where = "/" if above == "." else "/" + above
    inside = "/" + posixpath.normpath(posixpath.join(where, target)).lstrip("/")
    return os.path.relpath(root / inside.lstrip("/"), link.parent)


def _sudo_refusal(output: str) -> str:
    """sudo's own complaint when it ran nothing (no sudoers line, a password asked), else ""."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    return lines[-1][:200] if lines and lines[-1].startswith("sudo: ") \
        and "CWBEGIN" not in output and "CWRC" not in output else ""


def _not_debug(text: str) -> str:
    """ssh's messages without its -v lines."""
    return "\n".join(line for line in text.splitlines() if not line.startswith("debug"))


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _end(proc: subprocess.Popen[bytes]) -> None:
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()
    if proc.poll() is None:
        with contextlib.suppress(OSError):
            proc.terminate()
        try:
            proc.wait(2)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _die_with_parent() -> None:
    """In the ssh master: end when certbot-wazo ends, however it ends (the host's lock then
    becomes free)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG

