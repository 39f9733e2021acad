"""Security: the key is never readable by others, planted symlinks are never followed, backups are
root-only, no shell is ever used and names are validated before they reach a file or a command.

The deployments here run in-process on a sandbox tree that is built but not started: install()
(validate, stage, back up, write, xivo-update-config, loopback probe) then abort() (the undo) write
every file a deployment writes, without restarting anything.
"""
from __future__ import annotations

import ast
import itertools
import os
import re
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Optional

import pytest

import certbot_wazo
import certbot_wazo.files
from certbot_wazo.deployment import Deployment, Settings
from certbot_wazo.errors import HostError, WazoError
from certbot_wazo.files import FileState, apply_state
from certbot_wazo.host import CUSTOM_FILE, HOSTS_CUSTOM, LINK_NAME
from tests.pki import CA
from tests.sandbox.host import SandboxHost, build_host
from tests.sandbox.tree import differences, snapshot

CLI = Path(sys.executable).with_name("certbot-wazo")
STATE = "var/lib/certbot-wazo"
PACKAGE = Path(certbot_wazo.__file__).parent


@pytest.fixture
def host(tmp_path: Path) -> SandboxHost:
    """A legacy sandbox tree (services not started: nothing here restarts them)."""
    return build_host(tmp_path / "root", "legacy")


def deployment(host: SandboxHost) -> Deployment:
    return Deployment(Settings(root=host.root, probe_timeout=5.0, command_timeout=30.0,
                               lock_timeout=5.0))


def victim(tmp_path: Path, name: str = "victim") -> Path:
    """A file outside the root that a planted symlink points at; it must never be written."""
    path = tmp_path / name
    path.write_bytes(b"not yours\n")
    path.chmod(0o644)
    return path


def untouched(path: Path) -> bool:
    return path.read_bytes() == b"not yours\n" and stat.S_IMODE(path.stat().st_mode) == 0o644


# -- the key is never readable by others ---------------------------------------------------------
class Watcher(threading.Thread):
    """Polls, as fast as it can, every entry of the certificate directory and of certbot-wazo's
    state directory (temporary files included); records any key-holding entry readable by others."""

    def __init__(self, directories: list[Path]) -> None:
        super().__init__(daemon=True)
        self.directories = directories
        self.stop = threading.Event()
        self.violations: list[str] = []
        self.seen: set[str] = set()
        self.polls = 0

    def run(self) -> None:
        while not self.stop.is_set():
            self.polls += 1
            for directory in self.directories:
                for dirpath, _, names in os.walk(directory):
                    for name in names:
                        self._check(Path(dirpath) / name)

    def _check(self, path: Path) -> None:
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if not stat.S_ISREG(st.st_mode):
            return
        self.seen.add(path.name)
        mode = stat.S_IMODE(st.st_mode)
        keyish = "server.key" in path.name or path.name.endswith(".blob")
        if keyish and mode & 0o004:
            self.violations.append(f"{path}: mode {mode:o} (key file readable by others)")
        if mode & 0o007:
            try:
                data = path.read_bytes()
            except OSError:
                return
            if b"PRIVATE KEY" in data:
                self.violations.append(f"{path}: mode {mode:o} holds PRIVATE KEY bytes")


class SpyOs:
    """certbot_wazo.files' view of os: records, at each syscall on a file it creates, the file's
    mode and size and whether it was given private key bytes."""

    def __init__(self) -> None:
        self.histories: list[list[tuple[str, int, int, bool]]] = []
        self.names: list[str] = []
        self._current: dict[int, int] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def _record(self, fd: int, step: str, key: bool = False) -> None:
        st = os.fstat(fd)
        self.histories[self._current[fd]].append((step, stat.S_IMODE(st.st_mode), st.st_size, key))

    def open(self, path: Any, flags: int, mode: int = 0o777, *, dir_fd: Optional[int] = None) -> int:
        fd = os.open(path, flags, mode, dir_fd=dir_fd)
        if flags & os.O_CREAT and not flags & os.O_APPEND:
            self._current[fd] = len(self.histories)
            self.histories.append([])
            self.names.append(str(path))
            self._record(fd, "open")
        return fd

    def fchown(self, fd: int, uid: int, gid: int) -> None:
        os.fchown(fd, uid, gid)
        if fd in self._current:
            self._record(fd, "fchown")

    def fchmod(self, fd: int, mode: int) -> None:
        os.fchmod(fd, mode)
        if fd in self._current:
            self._record(fd, "fchmod")

    def write(self, fd: int, data: Any) -> int:
        written = os.write(fd, data)
        if fd in self._current:
            self._record(fd, "write", b"PRIVATE KEY" in bytes(data))
        return written

    def close(self, fd: int) -> None:
        self._current.pop(fd, None)
        os.close(fd)


@pytest.fixture
def fast_switching() -> Iterator[None]:
    """Let the watcher thread run between any two bytecodes of the deployment."""
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(interval)


def test_key_is_never_readable_by_others(host: SandboxHost, ca: CA, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch,
                                         fast_switching: None) -> None:
    spy = SpyOs()
    monkeypatch.setattr(certbot_wazo.files, "os", spy)
    watcher = Watcher([host.certs_dir, host.root / "var/lib"])
    watcher.start()
    try:
        for round_ in range(3):
            crt, key = ca.issue(tmp_path / f"le{round_}", names=[host.name],
                                key_type="rsa" if round_ % 2 else "ec")
            d = deployment(host)
            assert d.install(crt, key) is True          # writes the new key (and backs up the old)
            assert (host.certs_dir / "server.key").read_bytes() == key.read_bytes()
            d.abort()                                   # writes the old key back
    finally:
        watcher.stop.set()
        watcher.join(timeout=30)
    assert watcher.violations == []
    assert watcher.polls > 10  # (whether it catches a temporary file is down to scheduling:
    # the syscall spy below is the deterministic proof, test_watcher_catches_a_readable_key
    # proves the watcher itself)

    keyed = [(name, h) for name, h in zip(spy.names, spy.histories) if any(k for *_, k in h)]
    assert {Path(n).name.split(".certbot-wazo-")[0] for n, _ in keyed} >= {".server.key", ".0.blob"}
    for name, history in keyed:
        steps = [step for step, *_ in history]
        assert steps.index("fchmod") < steps.index("write"), (name, history)
        final = history[-1][1]
        for step, mode, size, _ in history:
            assert mode & 0o007 == 0, (name, step, oct(mode))          # never for others
            assert size == 0 or mode == final, (name, step, oct(mode))  # bytes only at final mode


TMP_KEY = re.compile(r"^\.server\.key\.certbot-wazo-[0-9a-f]{12}\.tmp$")


def test_backups_are_root_only(host: SandboxHost, ca: CA, tmp_path: Path) -> None:
    d = deployment(host)
    assert d.install(*ca.issue(tmp_path / "le", names=[host.name]))
    state = host.root / STATE
    blobs = list(state.rglob("*.blob"))
    assert blobs and any(b"PRIVATE KEY" in b.read_bytes() for b in blobs)
    for path in [state, *state.rglob("*")]:
        st = path.lstat()
        expected = 0o700 if stat.S_ISDIR(st.st_mode) else 0o600
        assert stat.S_IMODE(st.st_mode) == expected and st.st_uid == 0, (path, oct(st.st_mode))
    d.abort()


# -- planted symlinks are never followed ---------------------------------------------------------
@pytest.mark.parametrize("name", ["server.key", "server.crt"])
def test_symlink_at_the_pair_is_replaced_not_followed(host: SandboxHost, ca: CA, tmp_path: Path,
                                                      name: str) -> None:
    target = victim(tmp_path)
    planted = host.certs_dir / name
    planted.unlink()
    planted.symlink_to(target)
    d = deployment(host)
    assert d.install(*ca.issue(tmp_path / "le", names=[host.name]))
    assert untouched(target)
    assert not planted.is_symlink() and planted.is_file()
    d.abort()  # the undo puts the admin's link back, still without writing through it
    assert untouched(target)
    assert planted.is_symlink() and os.readlink(planted) == str(target)


@pytest.mark.parametrize("wazo_path", [CUSTOM_FILE, HOSTS_CUSTOM], ids=["custom-certificate.yml",
                                                                     "hosts-template"])
def test_symlinked_configuration_file_is_refused(host: SandboxHost, ca: CA, tmp_path: Path,
                                                 wazo_path: str) -> None:
    target = victim(tmp_path)
    planted = host.root / wazo_path.lstrip("/")
    planted.parent.mkdir(parents=True, exist_ok=True)
    planted.symlink_to(target)
    before = snapshot(host.root)
    with pytest.raises(HostError, match=f"^{re.escape(str(planted))}: is a symlink"):
        deployment(host).install(*ca.issue(tmp_path / "le", names=[host.name]))
    assert untouched(target)
    assert differences(before, snapshot(host.root)) == []


@pytest.mark.parametrize("wazo_dir", [
    "/usr/share/xivo-certs", "/etc/xivo/custom", "/etc/xivo/custom-templates/system/etc",
    "/etc/xivo-confd/conf.d", STATE,
], ids=["certs-dir", "custom-dir", "templates-dir", "conf.d", "state-dir"])
def test_symlinked_directory_is_never_written_through(host: SandboxHost, ca: CA, tmp_path: Path,
                                                      wazo_dir: str) -> None:
    """A planted directory symlink: the deployment fails with one line, and nothing in the
    directory it points at is created, changed or removed."""
    planted = host.root / wazo_dir.lstrip("/")
    elsewhere = tmp_path / "elsewhere"
    if planted.is_dir():
        subprocess.run(["cp", "-a", str(planted), str(elsewhere)], check=True)
        subprocess.run(["rm", "-rf", str(planted)], check=True)
    else:
        elsewhere.mkdir()
        (elsewhere / "hosts").write_text("127.0.0.1\tlocalhost\n")
    planted.parent.mkdir(parents=True, exist_ok=True)
    planted.symlink_to(elsewhere)
    before = snapshot(elsewhere)
    with pytest.raises(WazoError) as err:
        deployment(host).install(*ca.issue(tmp_path / "le", names=[host.name]))
    assert "\n" not in str(err.value) and str(err.value).startswith(str(host.root))
    assert differences(before, snapshot(elsewhere)) == []


def test_temporary_names_are_random_and_never_followed(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    directory = tmp_path / "certs"
    directory.mkdir()
    spy = SpyOs()
    monkeypatch.setattr(certbot_wazo.files, "os", spy)
    for _ in range(20):
        apply_state(directory / "server.key", FileState.file(b"-----PRIVATE KEY-----", 0o640))
    assert len(set(spy.names)) == 20 and all(TMP_KEY.match(n) for n in spy.names), spy.names
    monkeypatch.undo()

    # Even when the name is guessed (here: forced), O_EXCL|O_NOFOLLOW refuses the planted link.
    target = victim(tmp_path)
    (directory / ".server.key.certbot-wazo-000000000000.tmp").symlink_to(target)
    monkeypatch.setattr(certbot_wazo.files.secrets, "token_hex", lambda n: "0" * (2 * n))
    with pytest.raises(HostError, match="server.key: cannot be written"):
        apply_state(directory / "server.key", FileState.file(b"new", 0o640))
    assert untouched(target)
    assert (directory / "server.key").read_bytes() == b"-----PRIVATE KEY-----"


def test_symlinked_lock_file_is_one_clear_line(host: SandboxHost, ca: CA, tmp_path: Path,
                                               trust_store: Path) -> None:
    target = victim(tmp_path)
    state = host.root / STATE
    state.mkdir(mode=0o700, parents=True)
    (state / "lock").symlink_to(target)
    crt, key = ca.issue(tmp_path / "le", names=[host.name])
    result = subprocess.run([str(CLI), "deploy", "--root", str(host.root), "--cert", str(crt),
                             "--key", str(key)], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "SSL_CERT_FILE": str(trust_store)})
    assert untouched(target)
    assert result.returncode == 1
    assert result.stderr.splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith(f"{state / 'lock'}: ")


# -- no shell; names validated before they reach a file or a command -----------------------------
SHELL_CALLS = {("os", "system"), ("os", "popen"), ("subprocess", "getoutput"),
               ("subprocess", "getstatusoutput"), ("os", "execl"), ("os", "execlp"),
               ("os", "spawnl"), ("os", "spawnlp"), ("pty", "spawn")}
SUBPROCESS = {"run", "call", "check_call", "check_output", "Popen"}


def shell_uses(source: str, filename: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        dotted = (func.value.id, func.attr) if isinstance(func, ast.Attribute) and \
            isinstance(func.value, ast.Name) else None
        where = f"{filename}:{node.lineno}"
        if dotted in SHELL_CALLS:
            found.append(f"{where}: {'.'.join(dotted)}()")
        for keyword in node.keywords:
            if keyword.arg == "shell" and not (isinstance(keyword.value, ast.Constant)
                                               and keyword.value.value is False):
                found.append(f"{where}: shell={ast.unparse(keyword.value)}")
        if dotted and dotted[0] == "subprocess" and dotted[1] in SUBPROCESS and node.args and \
                isinstance(node.args[0], (ast.Constant, ast.JoinedStr, ast.BinOp)):
            found.append(f"{where}: a command line as one string")
    return found


def test_no_shell_is_ever_used() -> None:
    sources = sorted(PACKAGE.rglob("*.py"))
    assert len(sources) > 5
    assert [hit for path in sources for hit in shell_uses(path.read_text(), path.name)] == []
    # The check itself finds what it must.
    assert len(shell_uses("import os, subprocess\nos.system('x')\nsubprocess.run('ls', shell=True)"
                          "\nos.popen('y')\n", "t.py")) == 4


@pytest.mark.parametrize("name", ["a;rm -rf /", "$(reboot).example.test", "../../etc/passwd",
                                  "wazo.example.test\n192.0.2.1 evil", "-rf", "*.example.test",
                                  "wazo example.test"],
                         ids=["semicolon", "command-substitution", "path", "newline", "option",
                              "wildcard", "space"])
def test_bad_hostname_is_a_usage_error_and_touches_nothing(host: SandboxHost, ca: CA,
                                                           tmp_path: Path, trust_store: Path,
                                                           name: str) -> None:
    crt, key = ca.issue(tmp_path / "le", names=[host.name])
    before = snapshot(host.root, excluded=())
    result = subprocess.run([str(CLI), "deploy", "--root", str(host.root), "--hostname", name,
                             "--cert", str(crt), "--key", str(key)], capture_output=True,
                            text=True, timeout=60,
                            env={**os.environ, "SSL_CERT_FILE": str(trust_store)})
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "--hostname" in errors[0], result.stderr
    assert differences(before, snapshot(host.root, excluded=())) == []
    assert not (host.root / STATE).exists()


@pytest.mark.parametrize("san", ["a;b.example.test", "$(reboot).example.test",
                                 "evil\n192.0.2.1 victim.example.test", "x y.example.test"],
                         ids=["semicolon", "command-substitution", "newline", "space"])
def test_certificate_names_are_validated_before_use(host: SandboxHost, ca: CA, tmp_path: Path,
                                                    san: str) -> None:
    crt, key = ca.issue(tmp_path / "le", names=[san])
    before = snapshot(host.root, excluded=("var/log",))
    d = deployment(host)
    try:
        with pytest.raises(WazoError) as err:
            d.install(crt, key)
    finally:
        d.abort()
    assert str(err.value).startswith(f"{crt}: ") and "\n" not in str(err.value)
    assert host.commands() == [], "a command ran with the certificate's name"
    assert differences(before, snapshot(host.root, excluded=("var/log",))) == []


def test_links_created_are_relative_and_inside_the_root(host: SandboxHost, ca: CA,
                                                        tmp_path: Path) -> None:
    """The 010 links point at the overrides file by a relative path that stays under the root."""
    d = deployment(host)
    assert d.install(*ca.issue(tmp_path / "le", names=[host.name]))
    custom = host.root / CUSTOM_FILE.lstrip("/")
    links = sorted((host.root / "etc").glob(f"*-*/conf.d/{LINK_NAME}"))
    assert links
    for link in links:
        assert not os.readlink(link).startswith("/") and link.resolve() == custom
    d.abort()
    assert not list(itertools.islice((host.root / "etc").glob(f"*-*/conf.d/{LINK_NAME}"), 1))


def test_watcher_catches_a_readable_key(tmp_path: Path) -> None:
    """The watcher is not blind: a key file made o+r for an instant is reported."""
    watcher = Watcher([tmp_path])
    watcher.start()
    try:
        for _ in range(50):
            path = tmp_path / ".server.key.certbot-wazo-abcdefabcdef.tmp"
            path.write_bytes(b"-----BEGIN PRIVATE KEY-----\n")
            path.chmod(0o644)
            time.sleep(0.002)
            path.unlink()
    finally:
        watcher.stop.set()
        watcher.join(timeout=10)
    assert watcher.violations
