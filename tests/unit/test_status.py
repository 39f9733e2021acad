"""status reports what deploy would repair or refuse (the same desired state), with the fix."""
from __future__ import annotations

import datetime
from pathlib import Path
from typing import Optional

import pytest

from certbot_wazo import status
from certbot_wazo.deployment import Deployment, Settings
from certbot_wazo.errors import HostError
from certbot_wazo.host import CUSTOM_FILE, LINK_NAME
from tests.pki import CA
from tests.unit.fakepbx import FakePBX, install

NAME = "wazo.example.test"


@pytest.fixture
def legacy(monkeypatch: pytest.MonkeyPatch, legacy_root: Path) -> FakePBX:
    return install(monkeypatch, legacy_root)


@pytest.fixture
def deployed(legacy: FakePBX, ca: CA, tmp_path: Path) -> FakePBX:
    legacy.pair = ca.issue(tmp_path / "le", names=[NAME])  # type: ignore[attr-defined]
    deployment(legacy).run(*legacy.pair)  # type: ignore[attr-defined]
    return legacy


def deployment(pbx: FakePBX) -> Deployment:
    return Deployment(Settings(root=pbx.root, lock_timeout=0.0), notify=lambda m: None)


def check(pbx: FakePBX, tmp_path: Path) -> status.Report:
    return status.check(deployment(pbx), tmp_path / "letsencrypt")


def test_a_deployed_host_is_healthy(deployed: FakePBX, tmp_path: Path) -> None:
    report = check(deployed, tmp_path)
    assert report.problems == []
    assert report.configuration == {"overrides": "ok", "links": "ok", "hosts": "ok",
                                    "directories": "none in a database certbot-wazo can read"}
    assert report.hostname == NAME and all(e["ok"] for e in report.endpoints)


def test_wazos_own_pair_asks_for_the_migration_only(legacy: FakePBX, tmp_path: Path) -> None:
    report = check(legacy, tmp_path)
    assert len(report.problems) == 1 and "still Wazo's self-signed certificate" in \
        report.problems[0]


def test_a_link_pointing_elsewhere_is_what_deploy_refuses(deployed: FakePBX,
                                                          tmp_path: Path) -> None:
    link = deployed.host.conf_d_dirs()[0] / LINK_NAME
    link.unlink()
    link.symlink_to("/etc/elsewhere.yml")
    report = check(deployed, tmp_path)
    with pytest.raises(HostError) as refused:
        deployment(deployed).run(*deployed.pair)  # type: ignore[attr-defined]
    assert str(refused.value) in report.problems
    assert str(refused.value).startswith(f"{link}: links to /etc/elsewhere.yml")


def test_the_name_deploy_was_given_is_the_one_status_checks(legacy: FakePBX, ca: CA,
                                                            tmp_path: Path) -> None:
    """A certificate with several names, deployed with --hostname for the second one."""
    pair = ca.issue(tmp_path / "two", names=[NAME, "pbx.example.test"])
    Deployment(Settings(root=legacy.root, hostname="pbx.example.test"),
               notify=lambda m: None).run(*pair)
    report = check(legacy, tmp_path)
    assert report.hostname == "pbx.example.test" and report.problems == []


def test_a_host_without_any_tls_endpoint_is_not_healthy(
        monkeypatch: pytest.MonkeyPatch, modern_root: Path, tmp_path: Path) -> None:
    pbx = install(monkeypatch, modern_root)
    (modern_root / "etc/nginx/sites-enabled/wazo").unlink()
    for path in sorted((modern_root / "etc/wazo-phoned").rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    report = check(pbx, tmp_path)
    assert any(p.startswith(f"{modern_root}: no TLS endpoint") for p in report.problems)


def test_a_missing_link_is_reported(deployed: FakePBX, tmp_path: Path) -> None:
    link = deployed.host.conf_d_dirs()[1] / LINK_NAME
    link.unlink()
    report = check(deployed, tmp_path)
    assert f"{link}: missing link, not to {CUSTOM_FILE} (certbot-wazo deploy fixes it)" in \
        report.problems
    assert report.configuration["links"].startswith("1 of ")


def test_verification_turned_off_in_the_overrides_is_reported(deployed: FakePBX,
                                                              tmp_path: Path) -> None:
    custom = deployed.root / CUSTOM_FILE.lstrip("/")
    custom.write_text(custom.read_text().replace("verify_certificate: true",
                                                 "verify_certificate: false", 1))
    report = check(deployed, tmp_path)
    assert f"{custom}: differs from what certbot-wazo deploys (certbot-wazo deploy fixes it)" \
        in report.problems
    assert report.configuration["overrides"] == "differs"
    deployment(deployed).run(*deployed.pair)  # type: ignore[attr-defined]
    assert check(deployed, tmp_path).problems == []  # and deploy repairs it


def test_a_key_readable_by_others_is_reported_once(deployed: FakePBX, tmp_path: Path) -> None:
    key = deployed.host.cert_dirs()[0] / "server.key"
    key.chmod(0o644)
    report = check(deployed, tmp_path)
    assert [p for p in report.problems if str(key) in p] == \
        [f"{key}: readable by others (chmod 0640 it now)"]


def test_an_expiring_certificate_says_how_to_check_renewal(legacy: FakePBX, ca: CA,
                                                           tmp_path: Path) -> None:
    now = datetime.datetime.now(datetime.timezone.utc)
    pair = ca.issue(tmp_path / "old", names=[NAME], not_before=now - datetime.timedelta(days=60),
                    not_after=now + datetime.timedelta(days=3))
    deployment(legacy).run(*pair)
    report = check(legacy, tmp_path)
    assert any("expires in 2 days" in p or "expires in 3 days" in p for p in report.problems)


@pytest.mark.parametrize(("left", "expected"), [(3.5, None), (1.5, "expires in 35 hours")])
def test_a_six_day_certificate_needs_attention_in_its_last_third(
        legacy: FakePBX, ca: CA, tmp_path: Path, left: float, expected: Optional[str]) -> None:
    """Always within 14 days of its expiry: it needs attention only when not renewed with a
    third of its lifetime (2 days) left."""
    now = datetime.datetime.now(datetime.timezone.utc)
    pair = ca.issue(tmp_path / "short", names=[NAME],
                    not_before=now - datetime.timedelta(days=6 - left),
                    not_after=now + datetime.timedelta(days=left))
    deployment(legacy).run(*pair)
    found = [p for p in check(legacy, tmp_path).problems if "expires in" in p]
    assert found == ([] if expected is None else [found[0]])
    if expected:
        assert expected in found[0]


def test_a_damaged_failure_record_is_a_problem_not_a_crash(deployed: FakePBX,
                                                           tmp_path: Path) -> None:
    failed = deployed.root / "var/lib/certbot-wazo/failed.json"
    failed.write_text("[1, 2]")
    report = check(deployed, tmp_path)
    assert any(p.startswith(f"{failed}: ") for p in report.problems)


def test_an_endpoint_serving_another_certificate_is_reported(deployed: FakePBX,
                                                             tmp_path: Path) -> None:
    deployed.served[9497] = b"other"
    report = check(deployed, tmp_path)
    assert any(p.startswith("127.0.0.1:9497 (xivo-auth) ") for p in report.problems)


def _junk_lineages(config_dir: Path) -> None:
    """Lineages whose fullchain.pem is a FIFO without writer, a link to /dev/zero, a 2 GiB
    sparse file, and archive versions of the same kinds."""
    import os
    for name, make in (("fifo.test", os.mkfifo),
                       ("zero.test", lambda p: p.symlink_to("/dev/zero")),
                       ("huge.test", lambda p: open(p, "wb").truncate(2 * 1024 ** 3))):
        for directory, file in ((config_dir / "live" / name, "fullchain.pem"),
                                (config_dir / "archive" / name, "cert1.pem")):
            directory.mkdir(parents=True, exist_ok=True)
            make(directory / file)


@pytest.fixture
def alarm() -> object:
    """A hang fails the test instead of stopping the suite."""
    import signal

    def hung(signum: int, frame: object) -> None:
        raise TimeoutError("hung on a lineage file")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(20)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def test_lineage_files_that_are_not_small_pem_files_never_hang_status_or_repair(
        deployed: FakePBX, tmp_path: Path, alarm: object, caplog: pytest.LogCaptureFixture) -> None:
    from certbot_wazo import repair
    from tests.sandbox.certbot import lineage
    config_dir = tmp_path / "letsencrypt"
    _junk_lineages(config_dir)
    live = lineage(config_dir, deployed.pair, NAME)  # type: ignore[attr-defined]
    report = check(deployed, tmp_path)
    assert report.lineage is not None and report.lineage["path"] == str(live)
    assert report.problems == []
    said = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("fifo.test/fullchain.pem: not a regular file" in m for m in said)
    assert any("huge.test/fullchain.pem: larger than" in m for m in said)
    assert all("\n" not in m for m in said)
    assert repair.source(deployment(deployed), config_dir) == (live / "fullchain.pem",
                                                               live / "privkey.pem")
