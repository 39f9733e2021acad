"""Remote mode end to end: sandbox Wazo hosts behind real OpenSSH servers, each in its own network
namespace, whose sessions have only sh and coreutils on PATH (no Python): the migration, a renewal
through certbot, status and revert over SSH; a connection dropped at every step; several hosts."""
from __future__ import annotations

import email
import email.policy
import json
import os
import shutil
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from certbot_wazo.pair import load_chain
from tests.pki import CA
from tests.sandbox.acme import Pebble
from tests.sandbox.certbot import Certbot, certbot_variants, lineage
from tests.sandbox.host import SandboxHost, add_tls_daemon, build_host, keep_pristine, restore_pristine
from tests.sandbox.remote import Target, Targets
from tests.sandbox.tree import Tree, differences, snapshot

REPO = Path(__file__).resolve().parents[2]
STEPS = ("after-backup", "after-write-0", "after-write-3", "after-update-config",
         "after-restart", "after-probe")


def leaf_of(fullchain: Path) -> bytes:
    return load_chain(fullchain.read_bytes(), fullchain)[0].public_bytes(Encoding.DER)


def served(targets: Targets, target: Target, port: int) -> bytes:
    """The leaf the target serves on 127.0.0.1:port, as seen from the target itself."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    with targets.tunnel(target, port) as sock:
        sock.settimeout(10)
        with ctx.wrap_socket(sock, server_hostname=target.host.name) as tls:
            return tls.getpeercert(binary_form=True) or b""


def serves(targets: Targets, target: Target, leaf: bytes) -> bool:
    ports = {int(address.rsplit(":", 1)[1]) for address in target.host.endpoints.values()}
    return all(served(targets, target, port) == leaf for port in sorted(ports))


def cw(targets: Targets, *args: str, env: dict[str, str] | None = None,
       timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """certbot-wazo ARGS --ssh-config CONFIG, from the working tree."""
    return subprocess.run([sys.executable, "-m", "certbot_wazo.cli", *args,
                           "--ssh-config", str(targets.ssh_config)],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})


def remote_args(target: Target) -> list[str]:
    return ["--ssh", target.destination, "--root", str(target.root)]


class Legacy:
    """A legacy target with a pristine copy of its Wazo files, put back before each test."""

    def __init__(self, targets: Targets, target: Target, pristine: Path) -> None:
        self.targets, self.target, self.pristine = targets, target, pristine

    @property
    def root(self) -> Path:
        return self.target.root

    def reset(self) -> None:
        restore_pristine(self.root, self.pristine)
        result = self.targets.ssh(self.target, str(self.root / "usr/bin/wazo-service"),
                                  "restart", "all")
        assert result.returncode == 0, result.stdout + result.stderr

    def files(self) -> Tree:
        return snapshot(self.root)


@pytest.fixture(scope="module")
def legacy(targets: Targets, tmp_path_factory: pytest.TempPathFactory) -> Legacy:
    target = targets.add("pbx1", lambda root: build_host(root, "legacy"))
    pristine = tmp_path_factory.mktemp("pristine")
    keep_pristine(target.root, pristine)
    return Legacy(targets, target, pristine)


@pytest.fixture
def fresh(legacy: Legacy, trust: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Legacy]:
    """The legacy target as shipped, serving Wazo's self-signed pair; the test CA trusted."""
    monkeypatch.setenv("SSL_CERT_FILE", str(trust))
    legacy.reset()
    yield legacy


def test_deploy_status_and_revert_over_ssh_with_only_sh_and_coreutils(
        fresh: Legacy, ca: CA, tmp_path: Path) -> None:
    targets, target = fresh.targets, fresh.target
    before, earlier = fresh.files(), len(target.commands())
    fullchain, _ = ca.issue(tmp_path / "lineage")
    result = cw(targets, "deploy", *remote_args(target), "--lineage", str(tmp_path / "lineage"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{target.destination}: Deployed certificate" in result.stdout
    ours = target.commands()[earlier:]
    assert serves(targets, target, leaf_of(fullchain))
    # The undo log and the record of what was deployed live on the host.
    assert (target.root / "var/lib/certbot-wazo/previous/manifest.json").is_file()
    assert (target.root / "var/lib/certbot-wazo/original/manifest.json").is_file()
    key = target.root / "usr/share/xivo-certs/server.key"
    assert oct(key.stat().st_mode & 0o777) == "0o640"
    # Every session ran our sh scripts or Wazo's own commands; the targets' PATH has neither
    # python nor tar, so anything else would have failed the deployment.
    assert ours and all(c.startswith("sh -c ") for c in ours)

    status = cw(targets, "status", *remote_args(target), "--json")
    report = json.loads(status.stdout)
    assert status.returncode == 0 and report["healthy"], status.stdout + status.stderr
    assert f"{target.destination}:{target.root}" in json.dumps(report)  # its paths, not ours
    prom = tmp_path / "wazo.prom"
    nagios = cw(targets, "status", *remote_args(target), "--nagios", "--prometheus", str(prom))
    assert nagios.returncode == 0, nagios.stdout + nagios.stderr
    assert nagios.stdout.startswith(f"CERTBOT-WAZO OK - {target.destination}: ")
    assert f'certbot_wazo_healthy{{host="{target.destination}"}} 1' in prom.read_text()
    deployed_at = (target.root / "var/lib/certbot-wazo/previous/manifest.json").stat().st_mtime
    assert f'certbot_wazo_last_success_timestamp_seconds{{host="{target.destination}"}} ' \
        f"{int(deployed_at)}" in prom.read_text()  # the host's time (whole seconds), over SSH

    again = cw(targets, "deploy", *remote_args(target), "--lineage", str(tmp_path / "lineage"))
    assert again.returncode == 0 and "already deployed" in again.stdout

    revert = cw(targets, "revert", *remote_args(target))
    assert revert.returncode == 0, revert.stdout + revert.stderr
    assert differences(before, fresh.files()) == []
    assert not serves(targets, target, leaf_of(fullchain))


@pytest.mark.parametrize("how", ["drop", "drop-server"])
@pytest.mark.parametrize("step", STEPS)
def test_a_connection_dropped_at_any_step_ends_with_the_new_pair(
        fresh: Legacy, ca: CA, tmp_path: Path, step: str, how: str) -> None:
    """The client's ssh killed, or the server's session: the run reconnects; the host's undo
    log tells it what the lost run did; it ends with the new pair, every file consistent."""
    targets, target = fresh.targets, fresh.target
    fullchain, _ = ca.issue(tmp_path / "lineage")
    result = cw(targets, "deploy", *remote_args(target), "--lineage", str(tmp_path / "lineage"),
                env={"CERTBOT_WAZO_FAILPOINT": f"{step}:{how}"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "reconnecting" in result.stdout
    assert serves(targets, target, leaf_of(fullchain))
    assert not (target.root / "var/lib/certbot-wazo/transaction").exists()
    assert not (target.root / "var/lib/certbot-wazo/lock.d").exists()
    clean = cw(targets, "deploy", *remote_args(target), "--lineage", str(tmp_path / "lineage"))
    assert "already deployed" in clean.stdout, clean.stdout + clean.stderr


@pytest.mark.parametrize("step", STEPS)
def test_a_controller_killed_at_any_step_leaves_old_or_new(
        fresh: Legacy, ca: CA, tmp_path: Path, step: str) -> None:
    """certbot-wazo itself dies (power cut of the controller): its ssh ends with it, the
    host's lock frees itself, and the next run from anywhere finds the undo log: `recover`
    puts the host back exactly as it was."""
    targets, target = fresh.targets, fresh.target
    before = fresh.files()
    ca.issue(tmp_path / "lineage")
    killed = cw(targets, "deploy", *remote_args(target), "--lineage", str(tmp_path / "lineage"),
                env={"CERTBOT_WAZO_FAILPOINT": step})
    assert killed.returncode == -9
    recover = cw(targets, "recover", *remote_args(target))
    assert recover.returncode == 0, recover.stdout + recover.stderr
    assert "After restoring" not in recover.stdout, recover.stdout  # every endpoint came back
    assert differences(before, fresh.files()) == []
    status = cw(targets, "status", *remote_args(target), "--json")
    assert "self-signed" in status.stdout  # back to Wazo's own pair, and it says so


def test_several_hosts_each_its_own_transaction(
        targets: Targets, legacy: Legacy, trust: Path, ca: CA, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An HA pair plus one: the host whose services fail to restart is rolled back alone; the
    command says which host ended where and exits 1; with --all-or-nothing nobody keeps it."""
    monkeypatch.setenv("SSL_CERT_FILE", str(trust))
    legacy.reset()
    second = _target(targets, "pbx2")
    third = _target(targets, "pbx3")
    for host in (second.host, third.host):
        host.fault("restart-fails", False)
    third.host.fault("restart-fails")
    fullchain, _ = ca.issue(tmp_path / "lineage")
    new = leaf_of(fullchain)
    hosts = [legacy.target, second, third]
    # One run names every host, each with its own root (HOST:/ROOT; a real fleet uses /).
    args = [a for t in hosts for a in ("--ssh", f"{t.destination}:{t.root}")]

    result = cw(targets, "deploy", *args, "--lineage", str(tmp_path / "lineage"))
    assert result.returncode == 1, result.stdout + result.stderr
    assert [t for t in hosts if serves(targets, t, new)] == hosts[:2]
    assert f"{second.destination}:{second.root}: deployed" in result.stdout
    assert f"{third.destination}:{third.root}: failed" in result.stderr

    second_pair, _ = ca.issue(tmp_path / "lineage2")
    again = cw(targets, "deploy", *args, "--lineage", str(tmp_path / "lineage2"),
               "--all-or-nothing")
    assert again.returncode == 1, again.stdout + again.stderr
    assert not any(serves(targets, t, leaf_of(second_pair)) for t in hosts)
    assert all(serves(targets, t, new) for t in hosts[:2])
    assert f"{legacy.target.destination}:{legacy.root}: rolled back" in again.stdout


def _target(targets: Targets, name: str) -> Target:
    try:
        return targets[name]
    except KeyError:
        return targets.add(name, lambda root: build_host(root, "legacy"))


@pytest.fixture(scope="module")
def pebble(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pebble]:
    with Pebble() as server:
        server.start(tmp_path_factory.mktemp("pebble"))
        yield server


@pytest.fixture(params=sorted(certbot_variants()) or ["none"])
def pebble_certbot(pebble: Pebble, tmp_path: Path, request: pytest.FixtureRequest) -> Certbot:
    """Each certbot there is: Debian's (2.1 on Debian 12) and the newest from PyPI."""
    variants = certbot_variants()
    if request.param not in variants:
        pytest.skip("no certbot (run .ci/bootstrap)")
    return Certbot(variants[request.param], pebble, tmp_path / "certbot")


def test_certbot_run_and_renew_with_wazo_ssh(fresh: Legacy, pebble_certbot: Certbot) -> None:
    """The migration through `certbot run -i wazo --wazo-ssh`, and the renewal timer's
    `certbot renew`, which reads --wazo-ssh back from the renewal configuration."""
    cb, targets, target = pebble_certbot, fresh.targets, fresh.target
    name = target.host.name
    wazo = ["-i", "wazo", "--wazo-ssh", target.destination, "--wazo-ssh-config",
            str(targets.ssh_config), "--wazo-root", str(target.root),
            "--wazo-probe-timeout", "20"]
    result = cb.run("run", *cb.standalone_args(), *wazo, "-d", name)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    first = leaf_of(cb.live(name) / "fullchain.pem")
    assert serves(targets, target, first)
    renewal = (cb.config_dir / "renewal" / f"{name}.conf").read_text()
    assert f"wazo_ssh = {target.destination}" in renewal
    renew = cb.run("renew", "--force-renewal")
    assert renew.returncode == 0, renew.stdout[-3000:] + renew.stderr[-3000:]
    second = leaf_of(cb.live(name) / "fullchain.pem")
    assert second != first and serves(targets, target, second)


def test_a_local_run_holding_the_hosts_lock_keeps_a_remote_run_waiting(
        fresh: Legacy, ca: CA, tmp_path: Path) -> None:
    """certbot-wazo run on the host itself holds its flock: the remote run sees it through
    /proc/locks (sh and coreutils only), waits and names it, then deploys."""
    import fcntl
    import threading
    state = fresh.root / "var/lib/certbot-wazo"
    state.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(state / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    timer = threading.Timer(3.0, os.close, (fd,))
    timer.start()
    try:
        fullchain, _ = ca.issue(tmp_path / "lineage")
        result = cw(fresh.targets, "deploy", *remote_args(fresh.target), "--lineage",
                    str(tmp_path / "lineage"))
    finally:
        timer.join()
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"running (a local certbot-wazo, pid {os.getpid()})" in result.stdout
    assert serves(fresh.targets, fresh.target, leaf_of(fullchain))


def test_a_failed_renewal_is_remembered_on_the_host_and_retried_over_ssh(
        fresh: Legacy, ca: CA, tmp_path: Path) -> None:
    """The failure record lives on the host; `retry --ssh` deploys it with its own settings."""
    targets, target = fresh.targets, fresh.target
    fullchain, _ = ca.issue(tmp_path / "lineage")
    target.host.fault("restart-fails")
    failed = cw(targets, "deploy", *remote_args(target), "--lineage", str(tmp_path / "lineage"),
                "--hostname", target.host.name)
    assert failed.returncode == 1
    record = json.loads((target.root / "var/lib/certbot-wazo/failed.json").read_text())
    assert record["settings"]["hostname"] == target.host.name
    target.host.fault("restart-fails", False)
    retried = cw(targets, "retry", *remote_args(target))
    assert retried.returncode == 0, retried.stdout + retried.stderr
    assert "Retrying the deployment" in retried.stdout
    assert serves(targets, target, leaf_of(fullchain))
    assert not (target.root / "var/lib/certbot-wazo/failed.json").exists()


@pytest.mark.parametrize("case", ["unknown host key", "unresolvable host", "no such root",
                                  "not a wazo root", "symlinked certificate directory"])
def test_bad_remote_input_is_one_line_naming_the_host_and_changes_nothing(
        fresh: Legacy, ca: CA, tmp_path: Path, case: str) -> None:
    targets, target = fresh.targets, fresh.target
    ca.issue(tmp_path / "lineage")
    config = targets.ssh_config
    destination, root = target.destination, str(target.root)
    expected = {
        "unknown host key": "root@pbx1: failed: cannot connect over SSH (Host key verification "
                            "failed.)",
        "unresolvable host": "root@nohost: failed: cannot connect over SSH",
        "no such root": "root@pbx1: failed: root@pbx1:/nonexistent: no such directory on the "
                        "host, or the account cannot enter it (check --root; a host that "
                        "refuses root logins needs --sudo)",
        "not a wazo root": f"root@pbx1: failed: root@pbx1:{tmp_path}/usr/share/xivo-certs: no "
                           "Wazo certificate directory",
        # refused as the host's files are read: nothing is read (or written) through it
        "symlinked certificate directory": f"root@pbx1: failed: root@pbx1:{root}/usr/share/"
                                           "xivo-certs/server.crt: has a symlink or a file "
                                           "above it",
    }[case]
    if case == "unknown host key":
        config = tmp_path / "ssh_config"
        config.write_text(targets.ssh_config.read_text().replace(str(targets.known_hosts),
                                                                 "/dev/null"))
    elif case == "unresolvable host":
        destination = "root@nohost"
    elif case == "no such root":
        root = "/nonexistent"
    elif case == "not a wazo root":
        root = str(tmp_path)
    else:
        certs = target.root / "usr/share/xivo-certs"
        certs.rename(certs.with_name("xivo-certs.real"))
        certs.symlink_to("xivo-certs.real")
    before = fresh.files()
    result = subprocess.run(
        [sys.executable, "-m", "certbot_wazo.cli", "deploy", "--ssh", destination, "--root", root,
         "--ssh-config", str(config), "--lineage", str(tmp_path / "lineage")],
        capture_output=True, text=True, timeout=120, cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(expected), result.stderr
    assert "/tmp/cw-" not in result.stdout + result.stderr  # never the local mirror's paths
    assert differences(before, fresh.files()) == []
    assert not (target.root / "var/lib/certbot-wazo/transaction").exists()


def test_alert_and_repair_over_ssh(fresh: Legacy, ca: CA, tmp_path: Path) -> None:
    """After the certificate package made a new self-signed pair on the host: status --alert
    mails through the host's own sendmail, naming the host's paths (never the mirror's), once
    a day; repair deploys the controller's lineage again."""
    targets, target = fresh.targets, fresh.target
    config = tmp_path / "letsencrypt"
    live = lineage(config, ca.issue(tmp_path / "pair", names=[target.host.name]),
                    target.host.name)
    assert cw(targets, "deploy", *remote_args(target), "--lineage", str(live)).returncode == 0
    certs = target.root / "usr/share/xivo-certs"
    crt, key = ca.issue(tmp_path / "self", names=["localhost"], chain="self-signed")
    for source, name in ((crt, "server.crt"), (key, "server.key")):
        shutil.copy(source, certs / name)
        os.chown(certs / name, 0, 33)
        os.chmod(certs / name, 0o640)
    outbox = target.root / "var/mail/sandbox-outbox"
    before = len(list(outbox.iterdir())) if outbox.is_dir() else 0
    alert = cw(targets, "status", *remote_args(target), "--config-dir", str(config), "--alert")
    assert alert.returncode == 1, alert.stdout + alert.stderr
    mails = sorted(outbox.iterdir(), key=lambda p: int(p.stem))
    assert len(mails) == before + 1
    mail = email.message_from_bytes(mails[-1].read_bytes(), policy=email.policy.default)
    text = " ".join(mail.get_content().split())  # type: ignore[attr-defined]
    assert mail["Subject"].startswith(f"certbot-wazo on {target.destination}: ")
    assert f"{target.destination}:{certs}/server.crt: still Wazo's self-signed" in text, text
    assert "/tmp/" not in text.replace(str(target.root), "")
    again = cw(targets, "status", *remote_args(target), "--config-dir", str(config), "--alert")
    assert again.returncode == 1 and len(list(outbox.iterdir())) == before + 1
    repair = cw(targets, "repair", *remote_args(target), "--config-dir", str(config))
    assert repair.returncode == 0, repair.stdout + repair.stderr
    assert serves(targets, target, leaf_of(live / "fullchain.pem"))


def test_a_listener_no_configuration_names_is_observed_over_ssh(
        targets: Targets, ca: CA, trust: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """What listens is read from the host's own /proc by sh and coreutils (its sessions have no
    Python): a TLS daemon no Wazo configuration names, in its own unit, is restarted onto the
    new pair, probed through the connection and named, on the migration and on a renewal."""
    from tests.sandbox import cgroups
    if cgroups.base() is None:
        pytest.skip("no control group hierarchy can be written here (the daemon has no unit)")

    def build(root: Path) -> SandboxHost:
        host = build_host(root, "legacy")
        add_tls_daemon(host, "local-tls-daemon", 9444)
        return host

    monkeypatch.setenv("SSL_CERT_FILE", str(trust))
    target = targets.add("pbx-extra", build)
    for step in ("first", "renewed"):
        fullchain, _ = ca.issue(tmp_path / step)
        result = cw(targets, "deploy", *remote_args(target), "--lineage", str(tmp_path / step))
        assert result.returncode == 0, result.stdout + result.stderr
        assert "127.0.0.1:9444: local-tls-daemon serves Wazo's certificate there" in result.stdout
        assert "1 found listening)" in result.stdout
        assert served(targets, target, 9444) == leaf_of(fullchain)
        assert serves(targets, target, leaf_of(fullchain))
