"""Crash consistency and I/O errors: a deployment killed (SIGKILL) at any step boundary, or meeting a
full disk at any write, leaves a host that the next run brings back to all-old or all-new.

One legacy sandbox is started for the whole module; before each test its Wazo files (etc/, usr/) are
put back from a pristine copy taken at build time and certbot-wazo's state is removed, so every test
starts from Wazo's self-signed pair and the full first-deployment plan.
"""
from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Optional

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import Encoding

import certbot_wazo.files
from certbot_wazo import overrides
from certbot_wazo.deployment import Deployment, Settings
from certbot_wazo.errors import HostError, WazoError
from certbot_wazo.files import ABSENT, DIR, FILE, LINK
from certbot_wazo.host import CUSTOM_FILE, HOSTS_CUSTOM, LINK_NAME
from certbot_wazo.journal import Snapshot
from certbot_wazo.pair import Pair, load_chain
from certbot_wazo.wazoconfig import hosts_address
from tests.pki import CA
from tests.sandbox.host import SandboxHost, build_host
from tests.sandbox.procs import terminate, wait_until
from tests.sandbox.tree import Tree, differences, snapshot

CLI = Path(sys.executable).with_name("certbot-wazo")
STATE = "var/lib/certbot-wazo"
TMP_FILE = re.compile(r"^\..+\.certbot-wazo-[0-9a-f]+\.tmp$")


# -- the plan of a first deployment, computed once at collection (no service started) -----------
def _first_plan() -> list[str]:
    """Wazo paths a first deployment on a fresh legacy sandbox changes, in plan order."""
    try:
        with tempfile.TemporaryDirectory(prefix="certbot-wazo-plan.") as tmp:
            host = build_host(Path(tmp) / "root", "legacy")
            crt, key = CA("Plan").issue(Path(tmp) / "pair", names=[host.name])
            deployment = Deployment(Settings(root=host.root))
            plan = deployment._stage(Pair.load(crt, key), host.name)
            return [path for path, _ in plan.changes]
    except Exception:  # the plan cannot be computed: the tests below report why
        return [f"change-{i}" for i in range(17)]


PLAN = _first_plan()
CRASH_POINTS = (["after-backup"] + [f"after-write-{i}" for i in range(len(PLAN))]
                + ["after-update-config", "after-restart", "after-probe"])


def _crash_id(point: str) -> str:
    match = re.match(r"after-write-(\d+)$", point)
    return f"{point}={PLAN[int(match.group(1))]}" if match else point


# -- fixtures ------------------------------------------------------------------------------------
@pytest.fixture
def host(reset_legacy: SandboxHost) -> SandboxHost:
    return reset_legacy


# -- helpers -------------------------------------------------------------------------------------
def cli(host: SandboxHost, bundle: Path, crt: Path, key: Path, failpoint: Optional[str] = None,
        **popen: object) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SSL_CERT_FILE": str(bundle)}
    env.pop("CERTBOT_WAZO_FAILPOINT", None)
    if failpoint:
        env["CERTBOT_WAZO_FAILPOINT"] = failpoint
    return subprocess.run([str(CLI), "deploy", "--root", str(host.root), "--cert", str(crt),
                           "--key", str(key), "--probe-timeout", "15"],
                          env=env, capture_output=True, text=True, timeout=180, **popen)  # type: ignore[call-overload, no-any-return]


def leaf_der(crt: Path) -> bytes:
    return load_chain(crt.read_bytes(), crt)[0].public_bytes(Encoding.DER)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def state_after_recovery(root: Path) -> Tree:
    """What the Wazo files will be once the next run replays the undo log (if one is complete):
    the disk, overlaid with the saved states of an open transaction."""
    tree = snapshot(root)
    transaction = Snapshot(root / STATE / "transaction")
    if not transaction.exists():
        return tree
    entries, _ = transaction.read()
    for wazo_path, state in entries:
        rel = wazo_path.lstrip("/")
        if state.kind == ABSENT:
            tree = {p: v for p, v in tree.items() if p != rel and not p.startswith(rel + "/")}
        elif state.kind == FILE:
            tree[rel] = ("file", state.mode, state.uid, state.gid, _sha(state.data))
        elif state.kind == LINK:
            tree[rel] = ("link", 0o777, 0, 0, state.target)
        elif state.kind == DIR:
            tree[rel] = ("dir", state.mode, state.uid, state.gid, "")
    return tree


def classify(effective: Tree, before: Tree, host: SandboxHost, pair: Pair) -> str:
    """"old" (every Wazo file as before), "new" (the new pair and the whole configuration with it),
    else a description of the mix. /etc/hosts is derived: it is re-rendered from the template."""
    derived = ("etc/hosts",)
    if {p: v for p, v in effective.items() if p not in derived} == \
            {p: v for p, v in before.items() if p not in derived}:
        return "old"
    certs = os.path.relpath(host.certs_dir, host.root)
    links = [os.path.relpath(d / LINK_NAME, host.root) for d in (host.root / "etc").glob("*-*/conf.d")]
    wanted = {f"{certs}/server.key": _sha(pair.key_pem), f"{certs}/server.crt": _sha(pair.chain_pem)}
    missing = [p for p, digest in wanted.items() if effective.get(p, ("",) * 5)[4] != digest]
    missing += [p for p in [CUSTOM_FILE.lstrip("/"), HOSTS_CUSTOM.lstrip("/")] if p not in effective]
    missing += [p for p in links if effective.get(p, ("",))[0] != "link"]
    if not missing:
        return "new"
    return f"mixed: {differences(before, effective)} / not new: {missing}"


def problems_after_deploy(host: SandboxHost, crt: Path, key: Path) -> list[str]:
    """Everything that is not "this pair, fully deployed and served, no undo log left"."""
    problems = []
    leaf = leaf_der(crt)
    for unit in host.endpoints:
        try:
            if host.served_cert(unit) != leaf:
                problems.append(f"{unit} serves another certificate")
        except OSError as exc:
            problems.append(f"{unit}: {exc}")
    for certs in [host.root / "usr/share/xivo-certs", host.root / "usr/share/wazo-certs"]:
        if not certs.is_dir():
            continue
        key_bytes = (certs / "server.key").read_bytes()
        chain = load_chain((certs / "server.crt").read_bytes(), certs / "server.crt")
        public = serialization.load_pem_private_key(key_bytes, None).public_key()
        spki = serialization.PublicFormat.SubjectPublicKeyInfo
        if public.public_bytes(Encoding.DER, spki) != chain[0].public_key().public_bytes(Encoding.DER, spki):
            problems.append(f"{certs}: server.key does not match server.crt")
        if key_bytes != key.read_bytes() or chain[0].public_bytes(Encoding.DER) != leaf:
            problems.append(f"{certs}: not the deployed pair")
    custom = host.root / CUSTOM_FILE.lstrip("/")
    data = yaml.safe_load(custom.read_text()) if custom.is_file() else {}
    for section in overrides.SECTIONS:
        flag = "verify" if section == "consul" else "verify_certificate"
        entry = data.get(section) or {}
        if entry.get("host") != host.name or entry.get(flag) is not True:
            problems.append(f"{custom}: section {section} is {entry!r}")
    for conf_d in sorted((host.root / "etc").glob("*-*/conf.d")):
        link = conf_d / LINK_NAME
        if not link.is_symlink() or link.resolve() != custom:
            problems.append(f"{link}: not a link to {custom}")
    if not (host.root / HOSTS_CUSTOM.lstrip("/")).is_file():
        problems.append("no custom hosts template")
    if hosts_address((host.root / "etc/hosts").read_text(), host.name) != "127.0.0.1":
        problems.append(f"etc/hosts does not map {host.name} to 127.0.0.1")
    if os.path.lexists(host.root / STATE / "transaction"):
        problems.append("the undo log (transaction) is left")
    problems += [f"temporary file left: {p}" for p in host.root.rglob("*") if TMP_FILE.match(p.name)]
    return problems


# -- 1. SIGKILL at every step boundary -----------------------------------------------------------
def test_the_plan_enumerated_is_the_real_one() -> None:
    assert not PLAN[0].startswith("change-"), "the first-deployment plan could not be computed"
    assert "/usr/share/xivo-certs/server.key" in PLAN and HOSTS_CUSTOM in PLAN


@pytest.mark.parametrize("point", CRASH_POINTS, ids=_crash_id)
def test_killed_at_step_boundary(host: SandboxHost, ca: CA, bundle: Path, tmp_path: Path,
                                 point: str) -> None:
    crt, key = ca.issue(tmp_path / "le", names=[host.name])
    pair = Pair.load(crt, key)
    before = snapshot(host.root)

    crashed = cli(host, bundle, crt, key, failpoint=point)
    assert crashed.returncode == -signal.SIGKILL, (point, crashed.stdout, crashed.stderr)

    # What services would read once the next run has replayed the undo log: all old or all new.
    assert classify(state_after_recovery(host.root), before, host, pair) in ("old", "new")
    interrupted = (host.root / STATE / "transaction/manifest.json").exists()

    again = cli(host, bundle, crt, key)
    assert again.returncode == 0, again.stderr
    assert ("was interrupted" in again.stdout) == interrupted, again.stdout
    assert again.stderr == ""
    assert problems_after_deploy(host, crt, key) == []


# The point whose recovery differs from a first deployment's: the services were restarted by the
# gentle path (the other points leave the same kind of state as above).
RENEWAL_POINTS = ["after-restart"]


def test_killed_at_each_step_of_renewals(host: SandboxHost, ca: CA, bundle: Path,
                                         tmp_path: Path) -> None:
    """Renewals after the first deployment change only the pair (plan: server.key, server.crt;
    restart: the gentle path first); a renewal killed after that restart is undone (restarted
    back) by the next run, which then deploys it."""
    first = ca.issue(tmp_path / "first", names=[host.name])
    assert cli(host, bundle, *first).returncode == 0
    for point in RENEWAL_POINTS:
        crt, key = ca.issue(tmp_path / point, names=[host.name])
        before = snapshot(host.root)
        crashed = cli(host, bundle, crt, key, failpoint=point)
        assert crashed.returncode == -signal.SIGKILL, (point, crashed.stdout, crashed.stderr)
        outcome = classify(state_after_recovery(host.root), before, host, Pair.load(crt, key))
        assert outcome in ("old", "new"), (point, outcome)
        again = cli(host, bundle, crt, key)
        assert again.returncode == 0, (point, again.stderr)
        assert problems_after_deploy(host, crt, key) == [], point


def test_killed_while_the_restart_command_runs(host: SandboxHost, ca: CA, bundle: Path,
                                               tmp_path: Path) -> None:
    """Not at a failpoint: SIGKILL while `wazo-service restart all` hangs."""
    crt, key = ca.issue(tmp_path / "le", names=[host.name])
    pair = Pair.load(crt, key)
    before = snapshot(host.root)
    host.fault("restart-hangs")
    restarts = host.commands().count(["wazo-service", "restart", "all"])
    env = {**os.environ, "SSL_CERT_FILE": str(bundle)}
    proc = subprocess.Popen([str(CLI), "deploy", "--root", str(host.root), "--cert", str(crt),
                             "--key", str(key)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    restarting = wait_until(
        lambda: host.commands().count(["wazo-service", "restart", "all"]) > restarts, 30)
    proc.kill()
    proc.communicate()
    hung = [pid for pid in host.pids() if b"wazo-service" in _cmdline(pid)]
    for pid in hung:  # the restart runs in its own session: it outlives the killed deployment
        terminate(pid)
    host.fault("restart-hangs", on=False)
    assert restarting and proc.returncode == -signal.SIGKILL
    assert classify(state_after_recovery(host.root), before, host, pair) == "old"

    again = cli(host, bundle, crt, key)
    assert again.returncode == 0, again.stderr
    assert "was interrupted while restarting" in again.stdout
    assert problems_after_deploy(host, crt, key) == []


@pytest.mark.parametrize("point, command", [
    ("after-write-1", "status"),        # new key beside the old certificate on disk
    ("after-update-config", "revert"),  # /etc/hosts rendered from the new template
    ("after-restart", "status"),        # the services already run the new pair
])
def test_next_command_of_any_kind_recovers(host: SandboxHost, ca: CA, bundle: Path,
                                           tmp_path: Path, point: str, command: str) -> None:
    """Not only `deploy`: `status` and `revert` also finish an interrupted deployment, back to
    the old pair and configuration, served by every endpoint."""
    crt, key = ca.issue(tmp_path / "le", names=[host.name])
    before, events = snapshot(host.root), host.events()
    assert cli(host, bundle, crt, key, failpoint=point).returncode == -signal.SIGKILL
    env = {**os.environ, "SSL_CERT_FILE": str(bundle)}
    result = subprocess.run([str(CLI), command, "--root", str(host.root)], env=env,
                            capture_output=True, text=True, timeout=120)
    assert "was interrupted" in result.stdout, (result.stdout, result.stderr)
    if command == "revert":
        assert result.returncode == 0, result.stderr
    assert differences(before, snapshot(host.root)) == []
    assert not os.path.lexists(host.root / STATE / "transaction")
    if point == "after-restart":  # restarted with the new pair: restarted again with the old
        installed = leaf_der(host.certs_dir / "server.crt")
        assert all(host.served_cert(unit) == installed for unit in host.endpoints)
    else:                         # never restarted: nothing to restart back
        assert host.events() == events


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


# -- 2. disk full / I/O error at each write ------------------------------------------------------
class WriteFault:
    """os.write, failing with ENOSPC (or EIO) at the k-th write made by certbot_wazo inside the
    frames named in `within` (every later one too when sticky)."""

    def __init__(self, k: int, within: tuple[str, ...], code: int = errno.ENOSPC,
                 sticky: bool = False, holding: bytes = b"") -> None:
        self.k, self.within, self.code, self.sticky = k, within, code, sticky
        self.holding = holding  # count only writes of these bytes
        self.count = 0
        self.fired: Optional[str] = None  # the file being written when the fault fired
        self.real = os.write

    def __call__(self, fd: int, data: bytes) -> int:
        frame = sys._getframe(1)
        if frame.f_globals.get("__name__", "").startswith("certbot_wazo"):
            names = set()
            while frame is not None:
                names.add(frame.f_code.co_name)
                frame = frame.f_back  # type: ignore[assignment]
            if names & set(self.within) and self.holding in bytes(data):
                self.count += 1
                if self.count == self.k or (self.sticky and self.fired):
                    self.fired = self.fired or os.readlink(f"/proc/self/fd/{fd}")
                    raise OSError(self.code, os.strerror(self.code))
        return self.real(fd, data)


def _deploy_in_process(host: SandboxHost, crt: Path, key: Path) -> bool:
    return Deployment(Settings(root=host.root, probe_timeout=15.0, command_timeout=60.0)).run(crt, key)


def _tmp_target(tmp_file: str) -> str:
    """The file a temporary file of apply_state stands for."""
    path = Path(tmp_file)
    return str(path.parent / path.name[1:].rsplit(".certbot-wazo-", 1)[0])


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EIO], ids=["ENOSPC", "EIO"])
def test_write_error_at_each_write_leaves_the_host_unchanged(
        host: SandboxHost, ca: CA, tmp_path: Path,
        code: int) -> None:
    """Every write of the undo log and of the plan, in turn, fails once (the disk is full at that
    instant): one line naming the file, nothing changed, nothing restarted, no undo log left."""
    crt, key = ca.issue(tmp_path / "le", names=[host.name])
    before, events = snapshot(host.root), host.events()
    k, outcomes = 0, []
    while True:
        k += 1
        shutil.rmtree(host.root / STATE, ignore_errors=True)  # the same writes each time
        fault = WriteFault(k, within=("_begin", "_apply"), code=code)
        try:
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(certbot_wazo.files.os, "write", fault)
                _deploy_in_process(host, crt, key)
        except WazoError as exc:
            outcomes.append((k, fault.fired, exc))
        if fault.fired is None:
            break  # k is past the last write: that run deployed
        assert outcomes and outcomes[-1][0] == k, f"write {k} failed and nobody said so"
        error = outcomes[-1][2]
        message, target = str(error), _tmp_target(fault.fired)
        assert isinstance(error, HostError), message
        assert message.startswith(f"{target}: cannot be written ({os.strerror(code)}"), message
        assert "\n" not in message
        assert differences(before, snapshot(host.root)) == [], (k, target)
        assert host.events() == events, (k, target)
        assert not os.path.lexists(host.root / STATE / "transaction"), (k, target)
        assert not [p for p in host.root.rglob("*") if TMP_FILE.match(p.name)], (k, target)
    written = {_tmp_target(f) for _, f, _ in outcomes}
    assert str(host.certs_dir / "server.key") in written
    assert str(host.root / CUSTOM_FILE.lstrip("/")) in written
    assert any("/transaction/" in f or "/original/" in f or ".new/" in f for f in written)
    assert problems_after_deploy(host, crt, key) == []


def test_disk_full_from_a_write_on_is_recovered_once_space_is_freed(
        host: SandboxHost, ca: CA, tmp_path: Path) -> None:
    """The disk stays full from the certificate's write on (the key was already replaced): the
    undo cannot write either; the undo log stays, and the next run once space is freed restores
    then deploys."""
    crt, key = ca.issue(tmp_path / "le", names=[host.name])
    before = snapshot(host.root)
    plan_files = [p for p in PLAN if p.endswith(("server.key", "server.crt", ".yml", "/hosts"))]
    k = plan_files.index("/usr/share/xivo-certs/server.crt") + 1
    fault = WriteFault(k, within=("_apply", "restore", "update_meta"), sticky=True)
    with pytest.MonkeyPatch.context() as patch, pytest.raises(HostError) as err:
        patch.setattr(certbot_wazo.files.os, "write", fault)
        _deploy_in_process(host, crt, key)
    assert fault.fired and _tmp_target(fault.fired) == str(host.certs_dir / "server.crt")
    assert "\n" not in str(err.value) and str(err.value).startswith(f"{host.root}/")
    assert classify(state_after_recovery(host.root), before, host, Pair.load(crt, key)) == "old"
    assert _deploy_in_process(host, crt, key) is True
    assert problems_after_deploy(host, crt, key) == []


@pytest.mark.parametrize("phase", ["installed", "restarting"])
def test_disk_full_at_a_phase_record_leaves_the_host_unchanged(
        host: SandboxHost, ca: CA, tmp_path: Path, phase: str) -> None:
    """The undo log's record of how far the transaction went cannot be written (the manifest
    rewrite meets a full disk) right before the restart."""
    crt, key = ca.issue(tmp_path / "le", names=[host.name])
    before, events = snapshot(host.root), host.events()
    fault = WriteFault(1, within=("update_meta",), holding=f'"phase": "{phase}"'.encode())
    deployment = Deployment(Settings(root=host.root, probe_timeout=15.0, command_timeout=60.0))
    try:
        with pytest.MonkeyPatch.context() as patch, pytest.raises(WazoError) as err:
            patch.setattr(certbot_wazo.files.os, "write", fault)
            deployment.run(crt, key)
    finally:
        deployment.plan = None  # let the lock go even when the deployment kept it
        deployment.release()
    assert fault.fired and "\n" not in str(err.value)
    assert differences(before, snapshot(host.root)) == []
    assert not os.path.lexists(host.root / STATE / "transaction")
    assert host.events() == events  # failed before the restart: nothing restarted


def test_disk_full_at_the_lock_file_is_one_clear_line_or_harmless(
        host: SandboxHost, ca: CA, tmp_path: Path) -> None:
    """Writing the holder's pid into the lock file fails: either one line naming the lock file
    and nothing changed, or (the pid being informative, the flock being the lock) a deployment
    that goes on and succeeds; never a traceback."""
    crt, key = ca.issue(tmp_path / "le", names=[host.name])
    before, events = snapshot(host.root), host.events()
    fault = WriteFault(1, within=("lock",))
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(certbot_wazo.files.os, "write", fault)
            _deploy_in_process(host, crt, key)
    except WazoError as exc:
        assert str(exc).startswith(f"{host.root / STATE / 'lock'}: ") and "\n" not in str(exc)
        assert differences(before, snapshot(host.root)) == [] and host.events() == events
    else:
        assert problems_after_deploy(host, crt, key) == []
    assert fault.fired


# -- 3. a reboot right after the kill: the boot-time recovery runs before the services -----------
def test_boot_recovery_puts_the_old_files_back_before_the_services_start(
        host: SandboxHost, ca: CA, bundle: Path, tmp_path: Path) -> None:
    crt, key = ca.issue(tmp_path / "le", names=[host.name])
    before = snapshot(host.root)
    crashed = cli(host, bundle, crt, key, failpoint="after-write-0")  # new key, old certificate
    assert crashed.returncode == -signal.SIGKILL
    assert differences(before, snapshot(host.root)) != []
    events = host.events()

    boot = subprocess.run([str(CLI), "recover", "--boot", "--root", str(host.root)],
                          capture_output=True, text=True, timeout=60)
    assert boot.returncode == 0, boot.stderr
    assert "before the services start" in boot.stdout
    # The pair on disk is the old one again, and nothing was run (services are not up at boot).
    assert [d for d in differences(before, snapshot(host.root)) if "certs" in d] == []
    assert host.events() == events
    # The next regular run finishes the job: /etc/hosts re-rendered, undo log cleared.
    later = subprocess.run([str(CLI), "recover", "--root", str(host.root)],
                           capture_output=True, text=True, timeout=60)
    assert later.returncode == 0, later.stderr
    assert differences(before, snapshot(host.root)) == []
    assert not (host.root / STATE / "transaction").exists()


@pytest.mark.parametrize("point", ["after-restart", "after-probe"])
def test_interrupted_restart_of_the_same_pair_costs_no_more_restart(
        host: SandboxHost, ca: CA, bundle: Path, tmp_path: Path, point: str) -> None:
    """Killed after its restart, a deployment run again with the same pair is finished, not
    undone and redone: the services already serve it, so nothing is restarted again."""
    crt, key = ca.issue(tmp_path / "le", names=[host.name])
    assert cli(host, bundle, crt, key, failpoint=point).returncode == -signal.SIGKILL
    events = len(host.events())
    again = cli(host, bundle, crt, key)
    assert again.returncode == 0, again.stderr
    assert "was interrupted while" in again.stdout and "finishing it" in again.stdout
    assert "committed without a restart" in again.stdout
    assert [e for e in host.events()[events:] if e.startswith(("restart", "stop", "reload"))] == []
    assert problems_after_deploy(host, crt, key) == []


def test_interrupted_before_its_restart_costs_one_restart(host: SandboxHost, ca: CA,
                                                          bundle: Path, tmp_path: Path) -> None:
    """Killed after the files passed their probe but before any restart: the next run with
    the same pair restarts once (the documented way), not undo + redo."""
    crt, key = ca.issue(tmp_path / "le", names=[host.name])
    env = {**os.environ, "SSL_CERT_FILE": str(bundle)}
    restarts = host.commands().count(["wazo-service", "restart", "all"])
    host.fault("restart-hangs")
    proc = subprocess.Popen([str(CLI), "deploy", "--root", str(host.root), "--cert", str(crt),
                             "--key", str(key)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert wait_until(
        lambda: host.commands().count(["wazo-service", "restart", "all"]) > restarts, 30)
    proc.kill()
    proc.communicate()
    for pid in [pid for pid in host.pids() if b"wazo-service" in _cmdline(pid)]:
        terminate(pid)
    host.fault("restart-hangs", on=False)
    before = host.commands().count(["wazo-service", "restart", "all"])
    again = cli(host, bundle, crt, key)
    assert again.returncode == 0, again.stderr
    assert "finishing it" in again.stdout
    assert host.commands().count(["wazo-service", "restart", "all"]) - before <= 1
    assert problems_after_deploy(host, crt, key) == []


# -- 3. a signal at every step boundary ----------------------------------------------------------
@pytest.mark.parametrize("point", CRASH_POINTS, ids=_crash_id)
def test_signal_at_step_boundary(host: SandboxHost, ca: CA, bundle: Path, tmp_path: Path,
                                 point: str) -> None:
    """SIGTERM (an admin's kill, systemd stopping a unit) at each step: one line, exit 1, and
    the host is back as it was, every service serving the previous pair; nothing left to
    recover."""
    crt, key = ca.issue(tmp_path / "le", names=[host.name])
    before = snapshot(host.root)
    previous = leaf_der(host.certs_dir / "server.crt")
    result = cli(host, bundle, crt, key, failpoint=f"{point}:SIGTERM")
    assert result.returncode == 1, (point, result.stdout, result.stderr)
    assert "Traceback" not in result.stdout + result.stderr
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert "interrupted by SIGTERM" in result.stderr
    assert differences(before, snapshot(host.root)) == [], point
    assert not os.path.lexists(host.root / STATE / "transaction")
    if point in ("after-restart", "after-probe"):
        assert all(host.served_cert(unit) == previous for unit in host.endpoints)
