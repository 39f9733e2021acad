"""The procedure's last step, directory definitions still on `localhost` (issue 15): release hosts
whose asterisk database is a real PostgreSQL (tests/sandbox/database.py, schema and rows from
upstream's facts), deployed, checked, reverted and killed at every step."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from tests.pki import CA
from tests.sandbox.database import SERVER_CRT, Postgres, family, unavailable
from tests.sandbox.host import SandboxHost
from tests.sandbox.release import build_release, releases
from tests.sandbox.requirements import need
from tests.sandbox.tree import differences, snapshot

CLI = Path(sys.executable).with_name("certbot-wazo")
NAME = "wazo.example.test"
STEPS = ("after-backup", "after-write-0", "after-update-config", "after-database",
         "after-restart", "after-probe")


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    need("postgres", unavailable())
    with Postgres() as server:
        yield server


@pytest.fixture(scope="module")
def ca() -> CA:
    return CA("Directories")


def wazo_host(tmp_path: Path, postgres: Postgres, release: str,
              variants: tuple[str, ...] = ()) -> SandboxHost:
    """A release host whose daemons' db_uri names the tests' PostgreSQL (upstream's is
    postgresql://asterisk:proformatique@localhost/asterisk: wazo-platform/wazo-dird
    etc/wazo-dird/config.yml from wazo-19.17, wazo-platform/xivo-confgend
    etc/xivo-confgend/config.yml up to wazo-18.03), and whose psql is Debian's."""
    postgres.create_asterisk(release)
    for variant in variants:
        postgres.seed_variant(variant)
    host = build_release(tmp_path / "root", release, NAME)
    unit = "wazo-dird" if release >= "19" else "xivo-confgend"
    conf_d = host.root / "etc" / unit / "conf.d"
    conf_d.mkdir(parents=True, exist_ok=True)
    (conf_d / "zz-tests-database.yml").write_text(f"db_uri: {postgres.uri()}\n")
    (host.root / "usr/bin").mkdir(parents=True, exist_ok=True)
    (host.root / "usr/bin/psql").symlink_to("/usr/bin/psql")
    return host


def cli(host: SandboxHost, bundle: Path, *args: str,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CLI), *args, "--root", str(host.root)], capture_output=True,
                          text=True, timeout=300, check=False,
                          env=dict(host.env(), SSL_CERT_FILE=str(bundle), **(env or {})))


def deploy(host: SandboxHost, bundle: Path, pair: tuple[Path, Path],
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return cli(host, bundle, "deploy", "--cert", str(pair[0]), "--key", str(pair[1]),
               "--hostname", NAME, "--probe-timeout", "30", env=env)


# Per family of the asterisk database (tests/sandbox/database.py): the rows an admin or an upgrade
# leaves, and how many of them a CA-issued certificate breaks.
#  - 16.16-18.03: only rows switched to https://localhost:9486 ("custom": CA server.crt, "yes":
#    the system store) break; the default http://localhost:9487 row, "no" (no verification) and
#    other directory types are never touched.
#  - 19.17: the sources wazo-upgrade creates verify server.crt on localhost (confd and auth).
#  - 20.16+: localhost sources are plain HTTP; an older source on NAME routed through nginx
#    still verifies server.crt.
#  - 15.12: nothing TLS in the table.
VARIANTS = {"15.12": ((), 0), "directories": (("custom", "yes", "no", "other"), 2),
            "dird-19": (("legacy", "other"), 2), "dird-20": (("legacy", "other"), 1)}
CASES = [(release, *VARIANTS[family(release)]) for release in releases()]


@pytest.mark.parametrize("release, variants, broken", CASES)
def test_deploy_points_the_definitions_at_the_name_and_revert_puts_them_back(
        postgres: Postgres, ca: CA, tmp_path: Path, release: str, variants: tuple[str, ...],
        broken: int) -> None:
    host = wazo_host(tmp_path, postgres, release, variants)
    bundle = ca.trust_bundle(tmp_path / "trust.pem")
    with host:
        host.start()
        rows_before, dump_before, files_before = postgres.rows(), postgres.dump(), \
            snapshot(host.root)
        result = deploy(host, bundle, ca.issue(tmp_path / "pair", names=[NAME]))
        assert result.returncode == 0, result.stdout + result.stderr
        assert ("Pointing" in result.stdout) == bool(broken)
        if family(release) == "dird-20":  # its auth part keeps port 9497 (nothing TLS there)
            assert "9497, where nothing serves TLS" in result.stdout
        after = postgres.rows()
        changed = [b for b, a in zip(rows_before, after) if a != b]
        assert len(changed) == broken, changed

        status = cli(host, bundle, "status", "--hostname", NAME)
        assert status.returncode == 0, status.stdout
        assert ", 0 to fix" in status.stdout or "no confd/auth definition" in status.stdout

        reverted = cli(host, bundle, "revert")
        assert reverted.returncode == 0, reverted.stdout + reverted.stderr
        assert postgres.dump() == dump_before
        assert differences(files_before, snapshot(host.root)) == []


def test_status_names_a_definition_left_on_localhost_with_the_fix(
        postgres: Postgres, ca: CA, tmp_path: Path) -> None:
    host = wazo_host(tmp_path, postgres, "18.03")
    bundle = ca.trust_bundle(tmp_path / "trust.pem")
    with host:
        host.start()
        assert deploy(host, bundle, ca.issue(tmp_path / "pair", names=[NAME])).returncode == 0
        postgres.seed_variant("custom")  # an admin adds one after the deployment
        status = cli(host, bundle, "status", "--hostname", NAME)
        assert status.returncode == 1
        problem = next(line for line in status.stdout.splitlines() if "directories" in line
                       and "connects to localhost" in line)
        assert f"verifies against {SERVER_CRT}" in problem and f"host to {NAME}" in problem


@pytest.mark.parametrize("step", STEPS)
def test_a_kill_at_any_step_leaves_rows_and_files_consistent(
        postgres: Postgres, ca: CA, tmp_path: Path, step: str) -> None:
    """SIGKILL at each step: the next run puts the files and the rows back together."""
    host = wazo_host(tmp_path, postgres, "19.17", ("legacy",))
    bundle = ca.trust_bundle(tmp_path / "trust.pem")
    with host:
        host.start()
        dump_before, files_before = postgres.dump(), snapshot(host.root)
        pair = ca.issue(tmp_path / "pair", names=[NAME])
        killed = deploy(host, bundle, pair, env={"CERTBOT_WAZO_FAILPOINT": step})
        assert killed.returncode == -9
        recovered = cli(host, bundle, "recover")
        assert recovered.returncode == 0, recovered.stdout + recovered.stderr
        assert postgres.dump() == dump_before
        assert differences(files_before, snapshot(host.root)) == []
        again = deploy(host, bundle, pair)  # and the deployment then goes through
        assert again.returncode == 0, again.stdout + again.stderr
        assert postgres.dump() != dump_before


def test_a_failed_restart_puts_the_rows_back_with_the_files(
        postgres: Postgres, ca: CA, tmp_path: Path) -> None:
    """The services do not come back on the new pair: the rollback restores the database's
    definitions exactly, together with the files."""
    host = wazo_host(tmp_path, postgres, "19.17", ("legacy",))
    bundle = ca.trust_bundle(tmp_path / "trust.pem")
    with host:
        host.start()
        dump_before, files_before = postgres.dump(), snapshot(host.root)
        host.fault("restart-fails")
        failed = deploy(host, bundle, ca.issue(tmp_path / "pair", names=[NAME]))
        assert failed.returncode == 1
        assert "the previous certificate was restored" in failed.stderr
        assert postgres.dump() == dump_before
        assert differences(files_before, snapshot(host.root)) == []


def test_an_admin_edit_made_meanwhile_stops_the_database_step(
        postgres: Postgres, ca: CA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A definition that no longer holds what was read (edited between staging and the
    database step) fails the whole database transaction: nothing is changed anywhere."""
    from certbot_wazo import directories
    from certbot_wazo.deployment import Deployment, Settings
    from certbot_wazo.errors import WazoError
    host = wazo_host(tmp_path, postgres, "19.17")
    bundle = ca.trust_bundle(tmp_path / "trust.pem")
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    with host:
        host.start()
        files_before = snapshot(host.root)
        real = directories.apply

        def edited_first(*args: object, **kwargs: object) -> None:
            postgres.psql("UPDATE dird_source SET extra_fields = '{\"confd\": {}}'::json",
                          user="asterisk")
            real(*args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(directories, "apply", edited_first)
        fullchain, key = ca.issue(tmp_path / "pair", names=[NAME])
        deployment = Deployment(Settings(root=host.root, hostname=NAME, probe_timeout=30))
        with pytest.raises(WazoError, match="changed meanwhile"):
            deployment.run(fullchain, key)
        # the admin's edit, untouched (the undo left it: it is not what certbot-wazo wrote)
        assert all(row["extra_fields"] == {"confd": {}} for row in postgres.rows())
        assert differences(files_before, snapshot(host.root)) == []


def test_a_reboot_puts_the_rows_back_once_postgresql_runs(
        postgres: Postgres, ca: CA, tmp_path: Path) -> None:
    """Power cut after the restart: at boot, `recover --boot` (before the services and the
    database) puts the files back; `recover --boot-database` (after PostgreSQL, before
    wazo-dird) the rows; the next run finishes with both as they were."""
    host = wazo_host(tmp_path, postgres, "19.17", ("legacy",))
    bundle = ca.trust_bundle(tmp_path / "trust.pem")
    with host:
        host.start()
        dump_before, files_before = postgres.dump(), snapshot(host.root)
        killed = deploy(host, bundle, ca.issue(tmp_path / "pair", names=[NAME]),
                        env={"CERTBOT_WAZO_FAILPOINT": "after-restart"})
        assert killed.returncode == -9
        assert cli(host, bundle, "recover", "--boot").returncode == 0
        assert postgres.dump() != dump_before  # not the database: not running yet at boot
        rows = cli(host, bundle, "recover", "--boot-database")
        assert rows.returncode == 0, rows.stdout + rows.stderr
        assert "before wazo-dird starts" in rows.stdout
        assert postgres.dump() == dump_before
        assert cli(host, bundle, "recover").returncode == 0
        assert postgres.dump() == dump_before
        assert differences(files_before, snapshot(host.root)) == []
        again = cli(host, bundle, "recover", "--boot-database")
        assert again.returncode == 0 and "No interrupted deployment" in again.stdout
