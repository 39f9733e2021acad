"""The deployment transaction on testdata trees, with Wazo's commands and endpoints faked
(tests/unit/fakepbx.py): phases, commit, rollback, recovery in each phase, lock, revert."""
from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path
from typing import Callable, Optional

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from certbot_wazo import deployment as deployment_module
from certbot_wazo.deployment import Deployment, Settings
from certbot_wazo.errors import HostError, LockBusyError, PairError, RolledBackError, WazoError
from certbot_wazo.host import CUSTOM_FILE, HOSTS_CUSTOM, LINK_NAME
from certbot_wazo.pair import Pair
from certbot_wazo.records import Failure, Phase, RecordError
from certbot_wazo.tls import Endpoint
from tests.pki import CA
from tests.unit.fakepbx import FakePBX, Killed, install, tree_state

NAME = "wazo.example.test"
STATE = "var/lib/certbot-wazo"


@pytest.fixture
def legacy(monkeypatch: pytest.MonkeyPatch, legacy_root: Path) -> FakePBX:
    return install(monkeypatch, legacy_root)


@pytest.fixture
def modern(monkeypatch: pytest.MonkeyPatch, modern_root: Path) -> FakePBX:
    return install(monkeypatch, modern_root)


@pytest.fixture
def pair(ca: CA, tmp_path: Path) -> tuple[Path, Path]:
    return ca.issue(tmp_path / "le", names=[NAME])


def deployment(pbx: FakePBX, said: Optional[list[str]] = None, **settings: object) -> Deployment:
    """A deployment on the fake PBX; what it tells the admin goes into said."""
    return Deployment(Settings(root=pbx.root, lock_timeout=0.0, **settings),  # type: ignore[arg-type]
                      notify=(said if said is not None else []).append)


def leaf(cert: Path, key: Path) -> bytes:
    return Pair.load(cert, key).leaf_der


def test_legacy_deployment_installs_configures_restarts_once_and_commits(
        legacy: FakePBX, pair: tuple[Path, Path]) -> None:
    """The pair root:www-data 0640, the overrides with their links, the hosts mapping, one
    documented restart after xivo-update-config, every endpoint serving the new leaf."""
    assert deployment(legacy).run(*pair) is True
    certs = legacy.root / "usr/share/xivo-certs"
    key = (certs / "server.key").stat()
    assert (stat.S_IMODE(key.st_mode), key.st_uid, key.st_gid) == (0o640, 0, 33)
    assert (certs / "server.crt").read_bytes() == pair[0].read_bytes()
    custom = (legacy.root / CUSTOM_FILE.lstrip("/")).read_text()
    assert f"host: {NAME}" in custom and "verify_certificate: true" in custom
    for conf_d in legacy.host.conf_d_dirs():
        assert (conf_d / LINK_NAME).is_symlink()
    assert f"127.0.0.1\t{NAME}" in (legacy.root / "etc/hosts").read_text()
    assert legacy.restarts() == [[str(legacy.root / "usr/bin/wazo-service"), "restart", "all"]]
    assert legacy.commands[0][0].endswith("xivo-update-config")  # before the restart
    assert legacy.serves(leaf(*pair))
    assert not (legacy.root / STATE / "transaction").exists()
    assert (legacy.root / STATE / "previous/manifest.json").is_file()
    assert (legacy.root / STATE / "original/manifest.json").is_file()


def test_the_same_pair_again_changes_and_restarts_nothing(legacy: FakePBX,
                                                          pair: tuple[Path, Path]) -> None:
    deployment(legacy).run(*pair)
    before, commands = tree_state(legacy.root), list(legacy.commands)
    assert deployment(legacy).run(*pair) is False
    assert tree_state(legacy.root) == before and legacy.commands == commands


def test_renewal_on_a_deployed_host_only_reloads_what_serves_the_pair(
        legacy: FakePBX, ca: CA, tmp_path: Path, pair: tuple[Path, Path]) -> None:
    """A renewal changes only the pair: the gentle level (reloads, single restarts) first."""
    deployment(legacy).run(*pair)
    legacy.commands.clear()
    renewed = ca.issue(tmp_path / "renewed", names=[NAME])
    assert deployment(legacy).run(*renewed) is True
    assert ["restart", "all"] not in [c[1:] for c in legacy.restarts()]
    assert [str(legacy.root / "bin/systemctl"), "reload", "nginx"] in legacy.restarts()
    assert legacy.serves(leaf(*renewed))


def test_modern_deployment_reloads_nginx_and_writes_no_overrides(
        modern: FakePBX, pair: tuple[Path, Path]) -> None:
    assert deployment(modern).run(*pair) is True
    systemctl = str(modern.root / "bin/systemctl")
    assert modern.restarts() == [[systemctl, "reload", "nginx"],
                                 [systemctl, "restart", "wazo-phoned"]]
    assert not (modern.root / CUSTOM_FILE.lstrip("/")).exists()
    assert modern.serves(leaf(*pair))


@pytest.mark.parametrize("remember", [False, True])
def test_an_endpoint_failing_after_the_restart_rolls_everything_back(
        legacy: FakePBX, pair: tuple[Path, Path], remember: bool) -> None:
    """The previous pair and configuration come back, restarted on, and served again; a
    renewal (remember) is kept for `certbot-wazo retry`."""
    before, previous = tree_state(legacy.root), legacy.installed_leaf()
    legacy.broken.add(9497)
    legacy.served[9497] = previous  # it keeps serving the pair it had
    said: list[str] = []
    with pytest.raises(RolledBackError) as err:
        deployment(legacy, said).run(*pair, remember=remember)
    assert str(err.value).startswith(f"{pair[0]}: not deployed, the previous certificate was "
                                     "restored (127.0.0.1:9497 (xivo-auth) ")
    assert "\n" not in str(err.value)
    # after the rollback's restart, every endpoint was probed for the previous pair (Wazo's
    # self-signed one: not verified), and it passed (nothing more was said)
    assert legacy.probes[-1][2:] == (False, previous)
    assert not any(m.startswith("After restoring") for m in said)
    assert tree_state(legacy.root) == before
    assert len(legacy.restarts()) == 2  # the new pair, then the previous one
    assert legacy.serves(previous)
    assert not (legacy.root / STATE / "transaction").exists()
    failed = legacy.root / STATE / "failed.json"
    assert failed.exists() is remember
    if remember:
        record = json.loads(failed.read_text())
        assert record["cert"] == str(pair[0]) and "9497" in record["error"]


def test_a_failing_restart_command_rolls_back_without_restarting_again(
        legacy: FakePBX, pair: tuple[Path, Path]) -> None:
    """The restart failed before any service took the new pair: the files go back, and the
    services, still serving the previous pair, are not restarted a second time."""
    before, previous = tree_state(legacy.root), legacy.installed_leaf()
    legacy.failing.add("wazo-service")
    with pytest.raises(RolledBackError) as err:
        deployment(legacy).run(*pair)
    assert tree_state(legacy.root) == before
    assert len(legacy.restarts()) == 1 and legacy.serves(previous)
    assert "wazo-service: 'restart all' exited with status 1" in str(err.value)  # not a probe's


def test_a_bad_pair_writes_nothing_and_is_not_remembered(legacy: FakePBX, ca: CA,
                                                         tmp_path: Path) -> None:
    crt, _ = ca.issue(tmp_path / "one", names=[NAME])
    _, other_key = ca.issue(tmp_path / "two", names=[NAME])
    before = tree_state(legacy.root, skip=())
    with pytest.raises(PairError):
        deployment(legacy).run(crt, other_key, remember=True)
    assert tree_state(legacy.root, skip=()) == before
    assert legacy.commands == []


def test_a_failing_probe_before_the_restart_restores_and_restarts_nothing(
        legacy: FakePBX, pair: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """The pre-restart check (the name must resolve to 127.0.0.1 once the template is
    rendered) fails: every file back, no restart."""
    before = tree_state(legacy.root)
    monkeypatch.setattr(type(legacy.host), "resolves_to_loopback",
                        lambda self, name: "192.0.2.10")
    with pytest.raises(WazoError) as err:
        deployment(legacy).run(*pair)
    assert "resolves to 192.0.2.10" in str(err.value)
    assert tree_state(legacy.root) == before and legacy.restarts() == []


@pytest.mark.parametrize("point, phase, restarted", [
    ("after-backup", Phase.INSTALLING, False),
    ("after-write-3", Phase.INSTALLING, False),
    ("after-update-config", Phase.INSTALLING, False),
    ("after-restart", Phase.RESTARTING, True),
    ("after-probe", Phase.RESTARTING, True),
])
def test_recovery_in_each_phase_brings_back_the_previous_state(
        legacy: FakePBX, pair: tuple[Path, Path], point: str, phase: Phase,
        restarted: bool) -> None:
    """Killed at each step: the undo log records the phase, and recover() puts every path
    back, restarting the services on the previous pair only if they were restarted."""
    before, previous = tree_state(legacy.root), legacy.installed_leaf()
    legacy.kill_at = point
    with pytest.raises(Killed):
        deployment(legacy).run(*pair)
    record = deployment(legacy).journal.open_transaction()
    assert record is not None and record.phase == phase
    legacy.kill_at, restarts = None, len(legacy.restarts())
    assert deployment(legacy).recover() is True
    assert tree_state(legacy.root) == before
    assert len(legacy.restarts()) == restarts + (1 if restarted else 0)
    assert legacy.serves(previous)
    assert not (legacy.root / STATE / "transaction").exists()


@pytest.mark.parametrize("point", ["after-restart", "after-probe"])
def test_the_same_pair_after_a_kill_during_the_restart_is_committed_without_restarting(
        legacy: FakePBX, pair: tuple[Path, Path], point: str) -> None:
    legacy.kill_at = point
    with pytest.raises(Killed):
        deployment(legacy).run(*pair)
    legacy.kill_at, restarts = None, len(legacy.restarts())
    assert deployment(legacy).run(*pair) is False  # rolled forward: committed
    assert len(legacy.restarts()) == restarts
    assert not (legacy.root / STATE / "transaction").exists()
    assert legacy.serves(leaf(*pair))


def test_the_same_pair_after_a_kill_once_installed_rolls_forward_with_one_restart(
        legacy: FakePBX, pair: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed between the pre-restart probe and the restart (phase installed)."""
    d = deployment(legacy)
    assert d.install(*pair) is True
    monkeypatch.setattr(d, "plan", None)  # the process is gone: only the undo log remains
    d.release()
    assert deployment(legacy).journal.open_transaction().phase == Phase.INSTALLED  # type: ignore[union-attr]
    assert deployment(legacy).run(*pair) is True
    assert legacy.restarts() == [[str(legacy.root / "usr/bin/wazo-service"), "restart", "all"]]
    assert legacy.serves(leaf(*pair))


def test_boot_recovery_only_puts_files_back(legacy: FakePBX, pair: tuple[Path, Path]) -> None:
    before = tree_state(legacy.root)
    legacy.kill_at = "after-restart"
    with pytest.raises(Killed):
        deployment(legacy).run(*pair)
    legacy.kill_at, restarts = None, len(legacy.restarts())
    assert deployment(legacy).recover(boot=True) is True
    assert len(legacy.restarts()) == restarts  # the services are not running yet
    record = deployment(legacy).journal.open_transaction()
    assert record is not None and record.phase == Phase.INSTALLING
    assert deployment(legacy).recover() is True  # the next run renders /etc/hosts, clears it
    assert tree_state(legacy.root) == before


def test_an_installed_plan_holds_the_lock_until_activated(legacy: FakePBX,
                                                          pair: tuple[Path, Path]) -> None:
    """certbot's deploy_cert and restart: nobody else deploys in between."""
    first = deployment(legacy)
    assert first.install(*pair) is True
    with pytest.raises(LockBusyError):
        deployment(legacy).refresh()
    first.activate()
    assert deployment(legacy).refresh() is False  # the lock is free, and the pair served


def test_abort_undoes_an_installed_plan_without_restarting(legacy: FakePBX,
                                                           pair: tuple[Path, Path]) -> None:
    before = tree_state(legacy.root)
    d = deployment(legacy)
    d.install(*pair)
    d.abort()
    assert tree_state(legacy.root) == before and legacy.restarts() == []
    deployment(legacy).refresh()  # the lock was let go


def test_revert_restores_the_original_and_forgets_the_host(
        legacy: FakePBX, ca: CA, tmp_path: Path, pair: tuple[Path, Path]) -> None:
    before, original = tree_state(legacy.root), legacy.installed_leaf()
    deployment(legacy).run(*pair)
    deployment(legacy).run(*ca.issue(tmp_path / "renewed", names=[NAME]))
    assert deployment(legacy).revert() is True
    assert tree_state(legacy.root) == before
    assert legacy.serves(original)
    assert sorted(p.name for p in (legacy.root / STATE).iterdir()) == ["lock"]
    with pytest.raises(HostError, match="nothing saved to restore"):
        deployment(legacy).revert()


@pytest.mark.parametrize("meddle, refusal", [
    (lambda root: (root / HOSTS_CUSTOM.lstrip("/")).write_text(
        (root / HOSTS_CUSTOM.lstrip("/")).read_text() + "192.0.2.20\tprinter\n"),
     f"{HOSTS_CUSTOM.lstrip('/')}: changed since certbot-wazo wrote it"),
    (lambda root: (root / STATE / "written.json").write_text("{"),
     f"{STATE}/written.json: revert cannot tell the admin's later edits"),
], ids=["admin-edit", "damaged-record-of-what-was-written"])
def test_revert_refuses_rather_than_lose_an_admins_edit(
        legacy: FakePBX, pair: tuple[Path, Path], meddle: Callable[[Path], object],
        refusal: str) -> None:
    """A file the admin changed since certbot-wazo wrote it, or no way to tell (written.json
    damaged): revert changes nothing and says why."""
    deployment(legacy).run(*pair)
    meddle(legacy.root)
    before = tree_state(legacy.root)
    with pytest.raises(HostError) as err:
        deployment(legacy).revert()
    assert str(err.value).startswith(f"{legacy.root}/{refusal}")
    assert tree_state(legacy.root) == before


def test_restoring_the_previous_state_is_a_transaction_of_its_own(
        legacy: FakePBX, ca: CA, tmp_path: Path, pair: tuple[Path, Path]) -> None:
    deployment(legacy).run(*pair)
    renewed = ca.issue(tmp_path / "renewed", names=[NAME])
    deployment(legacy).run(*renewed)
    d = deployment(legacy)
    legacy.commands.clear()
    assert d.restore(d.journal.previous, "Restored the previous state") is True
    assert legacy.installed_leaf() == leaf(*pair) and legacy.serves(leaf(*pair))
    # only the pair changed back: no xivo-update-config, and the host is not forgotten
    assert not any(c[0].endswith("xivo-update-config") for c in legacy.commands)
    assert d.journal.original.exists()


def test_a_damaged_undo_log_is_one_line_naming_it(legacy: FakePBX,
                                                  pair: tuple[Path, Path]) -> None:
    transaction = legacy.root / STATE / "transaction"
    transaction.mkdir(parents=True)
    (transaction / "manifest.json").write_text('{"entries": [], "meta": {"endpoints": 3}}')
    with pytest.raises(RecordError) as err:
        deployment(legacy).run(*pair)
    assert str(err.value).startswith(f"{transaction}: certbot-wazo's undo log is damaged")
    assert "\n" not in str(err.value) and legacy.commands == []


def test_retry_deploys_the_remembered_failure_with_its_settings(
        legacy: FakePBX, pair: tuple[Path, Path]) -> None:
    legacy.failing.add("wazo-service")
    with pytest.raises(WazoError):
        deployment(legacy).run(*pair, remember=True)
    legacy.failing.clear()
    legacy.broken.add(9497)  # it fails again: still remembered, with the new reason
    with pytest.raises(RolledBackError):
        deployment(legacy).retry()
    assert "9497" in json.loads((legacy.root / STATE / "failed.json").read_text())["error"]
    legacy.broken.clear()
    assert deployment(legacy).retry() is True
    assert legacy.serves(leaf(*pair))
    assert not (legacy.root / STATE / "failed.json").exists()
    assert deployment(legacy).retry() is None


def test_a_profile_the_host_does_not_have_needs_confirming(modern: FakePBX,
                                                           pair: tuple[Path, Path]) -> None:
    with pytest.raises(HostError, match="confirm with --force-profile"):
        deployment(modern, profile="legacy").run(*pair)
    assert not (modern.root / STATE).exists()


def test_a_renewal_falls_back_to_the_documented_restart(legacy: FakePBX, ca: CA,
                                                        tmp_path: Path,
                                                        pair: tuple[Path, Path]) -> None:
    """A service that the gentle reloads do not refresh: the documented restart follows."""
    deployment(legacy).run(*pair)
    legacy.commands.clear()
    legacy.stubborn.add(9497)
    renewed = ca.issue(tmp_path / "renewed", names=[NAME])
    assert deployment(legacy).run(*renewed) is True
    restarts = legacy.restarts()
    assert restarts[-1] == [str(legacy.root / "usr/bin/wazo-service"), "restart", "all"]
    assert len(restarts) > 1 and legacy.serves(leaf(*renewed))
    timeouts = [timeout for _, timeout, _, _ in legacy.probes[-2:]]
    assert timeouts == [15.0, 60.0]  # the gentle level is given less time than the documented


def test_a_different_pair_after_a_kill_during_the_restart(legacy: FakePBX, ca: CA,
                                                          tmp_path: Path,
                                                          pair: tuple[Path, Path]) -> None:
    """The interrupted deployment is undone (services restarted on the previous pair), then
    the new one is deployed."""
    legacy.kill_at = "after-restart"
    with pytest.raises(Killed):
        deployment(legacy).run(*pair)
    legacy.kill_at = None
    other = ca.issue(tmp_path / "other", names=[NAME])
    assert deployment(legacy).run(*other) is True
    assert len(legacy.restarts()) == 3  # killed one, the undo's, the new deployment's
    assert legacy.serves(leaf(*other))


def test_recover_if_idle_on_a_clean_host_writes_nothing(legacy: FakePBX) -> None:
    before = tree_state(legacy.root, skip=())
    assert deployment(legacy).recover_if_idle() is False
    assert tree_state(legacy.root, skip=()) == before


def test_recover_if_idle_restarts_on_the_previous_pair(legacy: FakePBX,
                                                       pair: tuple[Path, Path]) -> None:
    previous = legacy.installed_leaf()
    legacy.kill_at = "after-probe"
    with pytest.raises(Killed):
        deployment(legacy).run(*pair)
    legacy.kill_at, restarts = None, len(legacy.restarts())
    assert deployment(legacy).recover_if_idle() is True
    assert len(legacy.restarts()) == restarts + 1 and legacy.serves(previous)


def test_a_lost_hosts_mapping_is_rendered_again_without_a_restart(
        legacy: FakePBX, pair: tuple[Path, Path]) -> None:
    """The same pair again, but /etc/hosts no longer maps the name (rendered by hand): only
    xivo-update-config runs; the services resolve the name per connection, nothing restarts."""
    deployment(legacy).run(*pair)
    hosts_file = legacy.root / "etc/hosts"
    hosts_file.write_text("127.0.0.1\tlocalhost\n")
    legacy.commands.clear()
    assert deployment(legacy).run(*pair) is True
    assert f"127.0.0.1\t{NAME}" in hosts_file.read_text()
    assert legacy.commands[0][0].endswith("xivo-update-config")
    assert legacy.restarts() == []


def test_an_upgraded_host_drops_the_old_overrides_and_restarts_everything(
        monkeypatch: pytest.MonkeyPatch, modern_root: Path, pair: tuple[Path, Path]) -> None:
    """24.16 with the pre-19.01 procedure's files: removed in the same transaction, and every
    daemon restarted (they all read them)."""
    (modern_root / "usr/share/wazo").mkdir(parents=True, exist_ok=True)
    (modern_root / "usr/share/wazo/WAZO-VERSION").write_text("24.16\n")
    custom = modern_root / CUSTOM_FILE.lstrip("/")
    custom.parent.mkdir(parents=True)
    custom.write_text(f"auth:\n  host: {NAME}\n  verify_certificate: true\n")
    links = [d / LINK_NAME for d in sorted(modern_root.glob("etc/wazo-*/conf.d"))]
    for link in links:
        link.symlink_to(CUSTOM_FILE)
    template = modern_root / HOSTS_CUSTOM.lstrip("/")
    template.parent.mkdir(parents=True)
    base = (modern_root / "usr/share/xivo-config/templates/system/etc/hosts").read_text()
    template.write_text(base.replace("127.0.1.1", "127.0.0.1"))
    modern = install(monkeypatch, modern_root)
    assert deployment(modern).run(*pair) is True
    assert not custom.exists() and not any(os.path.lexists(link) for link in links)
    assert not template.exists()
    assert modern.commands[0][0].endswith("xivo-update-config")  # /etc/hosts from the base
    assert modern.restarts() == [[str(modern_root / "usr/bin/wazo-service"), "restart", "all"]]


def test_a_failure_is_remembered_with_the_settings_it_ran_with(
        legacy: FakePBX, pair: tuple[Path, Path]) -> None:
    legacy.failing.add("wazo-service")
    probe = Endpoint("127.0.0.1", 9497, "xivo-auth")
    with pytest.raises(WazoError):
        deployment(legacy, hostname=NAME, probes=(probe,), probe_timeout=7.0,
                   profile="legacy").run(*pair, remember=True)
    record = json.loads((legacy.root / STATE / "failed.json").read_text())
    assert record["settings"] == {"profile": "legacy", "hostname": NAME, "force_profile": False,
                                  "probes": [str(probe)], "probe_timeout": 7.0}


def test_directories_created_for_the_overrides_are_0755_and_go_with_revert(
        legacy: FakePBX, pair: tuple[Path, Path]) -> None:
    custom_dir = legacy.root / "etc/xivo/custom"
    assert not custom_dir.exists()
    deployment(legacy).run(*pair)
    st = custom_dir.stat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o755, 0, 0)
    deployment(legacy).revert()
    assert not custom_dir.exists()


def write_foreign_site(pbx: FakePBX, der: bytes) -> Path:
    """An admin's nginx site answering for NAME on 443 with a certificate file of its own
    (certbot --nginx did this)."""
    crt = pbx.root / "etc/ssl/other/other.crt"
    crt.parent.mkdir(parents=True)
    crt.write_bytes(x509.load_der_x509_certificate(der).public_bytes(Encoding.PEM))
    site = pbx.root / "etc/nginx/sites-enabled/other"
    site.write_text(f"server {{\n    listen 443 ssl;\n    server_name {NAME};\n"
                    "    ssl_certificate /etc/ssl/other/other.crt;\n"
                    "    ssl_certificate_key /etc/ssl/other/other.key;\n}\n")
    return site


def test_nginx_serving_another_certificate_for_the_name_is_refused(
        legacy: FakePBX, pair: tuple[Path, Path]) -> None:
    site = write_foreign_site(legacy, legacy.installed_leaf())
    before = tree_state(legacy.root)
    with pytest.raises(HostError) as err:
        deployment(legacy).run(*pair)
    assert str(err.value).startswith(f"{site}:1: nginx serves /etc/ssl/other/other.crt for {NAME} "
                                     "on port 443, not Wazo's certificate (point "
                                     "ssl_certificate and ssl_certificate_key back at "
                                     "/usr/share/xivo-certs/server.crt")
    assert tree_state(legacy.root) == before and legacy.commands == []


def test_nginx_serving_the_same_certificate_from_its_own_file_is_accepted(
        legacy: FakePBX, pair: tuple[Path, Path]) -> None:
    write_foreign_site(legacy, leaf(*pair))
    said: list[str] = []
    assert deployment(legacy, said).run(*pair) is True
    assert legacy.serves(leaf(*pair))
    assert "6 TLS endpoint(s) verified" in said[-1]  # port 443 is probed once


def test_refresh_restarts_only_when_an_endpoint_serves_something_else(
        legacy: FakePBX, pair: tuple[Path, Path]) -> None:
    deployment(legacy, hostname=NAME).run(*pair)
    legacy.commands.clear()
    assert deployment(legacy, hostname=NAME).refresh() is False and legacy.commands == []
    legacy.served[9497] = b"stale"
    assert deployment(legacy, hostname=NAME).refresh() is True
    assert len(legacy.restarts()) == 1 and legacy.serves(leaf(*pair))


def test_what_the_admin_is_told_along_the_way(legacy: FakePBX, pair: tuple[Path, Path]) -> None:
    said: list[str] = []
    deployment(legacy, said).run(*pair)
    fingerprint = Pair.load(*pair).fingerprint[:16]
    assert said == [f"Installed the certificate for {NAME} (legacy Wazo); it passed a TLS "
                    "handshake before any restart",
                    f"Deployed certificate sha256 {fingerprint}… for {NAME}: 6 TLS endpoint(s) "
                    "verified after the restart"]
    said.clear()
    deployment(legacy, said).run(*pair)
    assert said == [f"{NAME}: this certificate (sha256 {fingerprint}…) is already deployed; "
                    "nothing changed, nothing restarted"]
    said.clear()
    deployment(legacy, said).revert()
    assert said[-1] == f"Restored the original state for {NAME}: 6 TLS endpoint(s) verified " \
                       "after the restart"


def test_an_installed_plan_aborted_says_so(legacy: FakePBX, pair: tuple[Path, Path]) -> None:
    said: list[str] = []
    d = deployment(legacy, said)
    d.install(*pair)
    d.abort()
    assert said[-1] == "Rolled back the certificate installed in this run"


def test_finishing_an_interrupted_deployment_says_what_it_does(
        legacy: FakePBX, pair: tuple[Path, Path]) -> None:
    legacy.kill_at = "after-probe"
    with pytest.raises(Killed):
        deployment(legacy).run(*pair)
    legacy.kill_at, said = None, []
    deployment(legacy, said).run(*pair)
    transaction = legacy.root / STATE / "transaction"
    fingerprint = Pair.load(*pair).fingerprint[:16]
    assert said == [f"{transaction}: a deployment of this certificate was interrupted while "
                    "restarting; finishing it",
                    f"Deployed certificate sha256 {fingerprint}… for {NAME}: every endpoint "
                    "already serves it; committed without a restart"]


def test_recovery_says_what_it_restores(legacy: FakePBX, pair: tuple[Path, Path]) -> None:
    legacy.kill_at = "after-write-0"
    with pytest.raises(Killed):
        deployment(legacy).run(*pair)
    legacy.kill_at, said = None, []
    deployment(legacy, said).recover()
    assert said == [f"{legacy.root / STATE / 'transaction'}: a deployment was interrupted while "
                    "installing; restoring the state before it"]


@pytest.mark.parametrize("root, profile, effect", [
    ("modern", "legacy", "writes the services' overrides and restarts every service, asterisk "
                         "included"),
    ("legacy", "modern", "leaves the daemons verifying server.crt, which the new certificate "
                         "breaks"),
])
def test_a_forced_profile_says_what_it_would_do(
        monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest, root: str,
        profile: str, effect: str, pair: tuple[Path, Path]) -> None:
    pbx = install(monkeypatch, request.getfixturevalue(f"{root}_root"))
    with pytest.raises(HostError) as err:
        deployment(pbx, profile=profile).run(*pair)
    assert str(err.value) == (f"{pbx.root}: --profile {profile}, but this host's configuration "
                              f"is {root}: that {effect} (drop --profile, or confirm with "
                              "--force-profile)")


def test_a_revert_that_fails_its_probe_names_the_saved_state(
        legacy: FakePBX, pair: tuple[Path, Path]) -> None:
    deployment(legacy).run(*pair)
    legacy.broken.add(9497)
    with pytest.raises(RolledBackError) as err:
        deployment(legacy).revert()
    assert str(err.value).startswith(f"{legacy.root / STATE / 'original'}: not deployed, the "
                                     "previous certificate was restored")
    assert legacy.installed_leaf() == leaf(*pair)


def test_refresh_tells_whether_it_restarted(legacy: FakePBX, pair: tuple[Path, Path]) -> None:
    deployment(legacy).run(*pair)
    said: list[str] = []
    deployment(legacy, said).refresh()
    legacy.served[9497] = b"stale"
    deployment(legacy, said).refresh()
    assert said == ["Every endpoint serves the installed certificate; nothing to restart",
                    "Restarted the services: every endpoint serves the installed certificate"]
    legacy.served[9497], legacy.broken = b"stale", {9497}
    with pytest.raises(WazoError, match="after restarting the services: 127.0.0.1:9497"):
        deployment(legacy).refresh()


def test_a_pair_found_already_deployed_clears_its_remembered_failure(
        legacy: FakePBX, pair: tuple[Path, Path]) -> None:
    deployment(legacy).run(*pair)
    d = deployment(legacy)
    d.journal.record_failure(Failure(cert=str(pair[0].absolute()), key=str(pair[1]),
                                     error="e", failed_at="t"))
    assert d.run(*pair) is False
    assert d.journal.failure() is None


def test_install_alone_remembers_nothing_by_default(legacy: FakePBX, pair: tuple[Path, Path],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(type(legacy.host), "resolves_to_loopback",
                        lambda self, name: "192.0.2.10")
    with pytest.raises(WazoError):
        deployment(legacy).install(*pair)
    assert not (legacy.root / STATE / "failed.json").exists()


def test_existing_parent_directories_are_left_as_they_are(legacy: FakePBX,
                                                         pair: tuple[Path, Path]) -> None:
    (legacy.root / "etc/xivo").chmod(0o750)
    deployment(legacy).run(*pair)
    assert stat.S_IMODE((legacy.root / "etc/xivo").stat().st_mode) == 0o750


def test_a_failure_before_the_restart_is_remembered_with_its_reason(
        legacy: FakePBX, pair: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(type(legacy.host), "resolves_to_loopback",
                        lambda self, name: "192.0.2.10")
    with pytest.raises(WazoError) as err:
        deployment(legacy).run(*pair, remember=True)
    record = json.loads((legacy.root / STATE / "failed.json").read_text())
    assert record["error"] == str(err.value)


def test_an_interrupted_renewal_is_undone_with_the_gentle_reloads_first(
        legacy: FakePBX, ca: CA, tmp_path: Path, pair: tuple[Path, Path]) -> None:
    deployment(legacy).run(*pair)
    legacy.kill_at = "after-restart"
    with pytest.raises(Killed):
        deployment(legacy).run(*ca.issue(tmp_path / "renewed", names=[NAME]))
    legacy.kill_at, restarts = None, len(legacy.restarts())
    deployment(legacy).recover()
    undo = legacy.restarts()[restarts:]
    assert undo and ["restart", "all"] not in [c[1:] for c in undo]
    assert legacy.serves(leaf(*pair))


def test_not_a_wazo_root_names_the_option_of_the_face_in_use(tmp_path: Path) -> None:
    root = tmp_path / "not-wazo"
    root.mkdir()
    for prefix in ("--", "--wazo-"):
        with pytest.raises(HostError, match=f"check {prefix}root\\)$"):
            Deployment(Settings(root=root, option_prefix=prefix)).recover()
    assert list(root.iterdir()) == []


def test_activate_without_a_pending_plan_says_so_without_waiting_for_the_lock(
        legacy: FakePBX, pair: tuple[Path, Path]) -> None:
    holder = deployment(legacy)
    holder.install(*pair)  # holds the lock
    with pytest.raises(WazoError, match="no deployment is pending"):
        deployment(legacy).activate()
    holder.activate()


def test_a_damaged_record_of_what_was_written_does_not_stop_a_deployment(
        legacy: FakePBX, ca: CA, tmp_path: Path, pair: tuple[Path, Path]) -> None:
    deployment(legacy).run(*pair)
    (legacy.root / STATE / "written.json").write_text("[")
    assert deployment(legacy).run(*ca.issue(tmp_path / "renewed", names=[NAME])) is True
    assert deployment(legacy).journal.written()  # written again, whole


def test_a_rollback_whose_restart_fails_is_finished_by_the_next_run(
        legacy: FakePBX, pair: tuple[Path, Path]) -> None:
    """The new pair fails its probe, and the restart on the previous pair fails too: the error
    says so, the undo log stays, and the next command restarts on the previous pair."""
    before, previous = tree_state(legacy.root), legacy.installed_leaf()
    legacy.broken.add(9497)
    legacy.served[9497] = b"neither"
    legacy.restarts_fail_from = 2
    with pytest.raises(WazoError) as err:
        deployment(legacy).run(*pair, remember=True)
    assert "while restoring the previous certificate" in str(err.value)
    assert tree_state(legacy.root) == before  # the files are back already
    assert (legacy.root / STATE / "transaction").exists()
    legacy.restarts_fail_from, legacy.broken = None, set()
    assert deployment(legacy).recover() is True
    assert legacy.serves(previous) and not (legacy.root / STATE / "transaction").exists()


def test_a_failure_is_remembered_with_when_it_happened(legacy: FakePBX,
                                                       pair: tuple[Path, Path]) -> None:
    legacy.failing.add("wazo-service")
    with pytest.raises(WazoError):
        deployment(legacy).run(*pair, remember=True)
    record = json.loads((legacy.root / STATE / "failed.json").read_text())
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \S+", record["failed_at"])


def test_phases_are_documented_where_the_flow_is() -> None:
    """A newcomer finds every phase, and what recovery does in it, in deployment.py."""
    doc = deployment_module.__doc__ or ""
    for phase in Phase:
        assert phase.name in doc


def test_a_listener_no_configuration_names_is_restarted_probed_and_named(
        legacy: FakePBX, pair: tuple[Path, Path], ca: CA, tmp_path: Path) -> None:
    """A daemon serving Wazo's pair on a port no configuration certbot-wazo reads names, in no
    wazo-service group (wazo-admin-ui on 17.x-18.03 as the corpus had it, a local daemon): the
    migration restarts it by its unit after `restart all`, a certificate-only renewal restarts
    it in the gentle path, both probe it, and the admin is told which port and unit."""
    legacy.add_extra(9296, "wazo-admin-ui")
    said: list[str] = []
    assert deployment(legacy, said).run(*pair) is True
    wazo_service = str(legacy.root / "usr/bin/wazo-service")
    assert legacy.restarts()[0] == [wazo_service, "restart", "all"]
    assert [c[1:] for c in legacy.restarts()[1:]] == [["restart", "wazo-admin-ui"]]
    assert legacy.serves(leaf(*pair))
    assert any("127.0.0.1:9296: wazo-admin-ui serves Wazo's certificate there, but no "
               "configuration certbot-wazo reads names that listener" in m for m in said)
    assert any(m.endswith("found listening)") and " 1 found listening" in m for m in said)
    legacy.commands.clear()
    renewed = ca.issue(tmp_path / "renewed", names=[NAME])
    assert deployment(legacy).run(*renewed) is True
    gentle = [c for c in legacy.restarts() if c[1] == "restart"]
    assert gentle and "wazo-admin-ui" in gentle[0]
    assert legacy.serves(leaf(*renewed))
    assert any(p[3] == leaf(*renewed) for p in legacy.probes)


def test_a_listener_serving_the_pair_that_no_unit_owns_is_refused_before_any_change(
        legacy: FakePBX, pair: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    legacy.add_extra(9296, "")
    before = tree_state(legacy.root)
    with pytest.raises(HostError, match=r"127.0.0.1:9296: pid 10296 \(python3\) serves .*"
                                        "belongs to no systemd service"):
        deployment(legacy).run(*pair)
    assert tree_state(legacy.root) == before and legacy.restarts() == []


def test_a_daemon_outside_wazo_services_groups_is_restarted_by_its_unit(
        legacy: FakePBX, pair: tuple[Path, Path]) -> None:
    """wazo-setupd at 19.17 serves the pair but is in no group of that release's wazo-service
    (wazo-platform/wazo-service, tag wazo-19.17, bin/wazo-service): `restart all` leaves it."""
    script = legacy.root / "usr/bin/wazo-service"
    script.write_text(script.read_text().replace(" xivo-websocketd", ""))
    assert deployment(legacy).run(*pair) is True
    assert [c[1:] for c in legacy.restarts()] == [["restart", "all"],
                                                  ["restart", "xivo-websocketd"]]


def test_without_a_version_file_a_code_default_listener_is_found_listening(
        legacy: FakePBX, pair: tuple[Path, Path]) -> None:
    """No version file: xivo-websocketd's listener, which only its code states, is not
    guessed from another release (that would change the host's generation), it is observed:
    restarted, probed, named; one warning says why."""
    for wazo_path in ("usr/share/xivo/XIVO-VERSION", "usr/share/wazo/WAZO-VERSION"):
        (legacy.root / wazo_path).unlink(missing_ok=True)
    (legacy.root / "etc/xivo-websocketd/config.yml").write_text("{}\n")
    del legacy.served[9502]
    legacy.add_extra(9502, "xivo-websocketd")
    said: list[str] = []
    assert deployment(legacy, said).run(*pair) is True
    assert legacy.serves(leaf(*pair))
    assert sum("no Wazo release could be read" in m for m in said) == 1
    assert any(m.startswith("127.0.0.1:9502: xivo-websocketd serves") for m in said)
