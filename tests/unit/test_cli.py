"""The command line says what is wrong in the admin's terms, and writes nothing when it refuses."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, ClassVar, Iterator

import pytest

from certbot_wazo import cli, status
from certbot_wazo.deployment import Settings
from certbot_wazo.errors import HostError, PairError, SignalledError
from tests.pki import CA

CLI = Path(sys.executable).with_name("certbot-wazo")


def test_an_empty_root_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["status", "--root", ""])
    assert exited.value.code == 2
    assert "--root: empty" in capsys.readouterr().err


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"),
                    reason="needs root to become another user")
@pytest.mark.parametrize("command", ["status", "revert"])
def test_not_root_is_told_to_run_as_root(command: str) -> None:
    """Run as nobody from a copy of the package that nobody can reach (the checkout may be
    under /root, 0700), with Debian's interpreter and libraries."""
    copy = Path(tempfile.mkdtemp(prefix="certbot-wazo-nobody-"))
    try:
        copy.chmod(0o755)
        shutil.copytree(Path(cli.__file__).parent, copy / "certbot_wazo",
                        ignore=shutil.ignore_patterns("__pycache__"))
        result = subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "/usr/bin/python3",
             "-c", "import sys; from certbot_wazo.cli import main; sys.exit(main())", command],
            capture_output=True, text=True, timeout=60, check=False, cwd="/",
            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(copy), "CERTBOT_WAZO_ROOT": ""})
    finally:
        shutil.rmtree(copy)
    assert result.returncode == 1
    assert result.stderr.startswith(f"certbot-wazo {command}: run as root")
    assert "Traceback" not in result.stderr


def test_lineage_on_a_root_that_is_not_wazo_writes_nothing(tmp_path: Path, ca: CA) -> None:
    lineage = tmp_path / "live"
    crt, _ = ca.issue(lineage, names=["wazo.example.test"])
    root = tmp_path / "not-wazo"
    root.mkdir()
    code = cli.main(["deploy", "--root", str(root), "--lineage", str(lineage),
                     "--hostname", "wazo.example.test"])
    assert code == 1
    assert list(root.iterdir()) == []
    assert crt.exists()


def test_ambiguous_names_ask_for_the_option_of_the_command_used(
        tmp_path: Path, ca: CA, legacy_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    crt, key = ca.issue(tmp_path / "pair", names=["mail.example.org", "sbc.example.org"])
    code = cli.main(["deploy", "--root", str(legacy_root), "--cert", str(crt), "--key", str(key)])
    err = capsys.readouterr().err
    assert code == 1
    assert "names mail.example.org, sbc.example.org and none of them is this host's name" in err
    assert "(give --hostname NAME" in err
    assert not (legacy_root / "var/lib/certbot-wazo").exists()


def test_a_forced_profile_the_host_does_not_have_needs_confirming(
        tmp_path: Path, ca: CA, modern_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--profile legacy on a modern host would restart asterisk (live calls drop)."""
    crt, key = ca.issue(tmp_path / "pair", names=["wazo.example.test"])
    code = cli.main(["deploy", "--root", str(modern_root), "--cert", str(crt), "--key", str(key),
                     "--profile", "legacy"])
    err = capsys.readouterr().err
    assert code == 1
    assert "--profile legacy, but this host's configuration is modern" in err
    assert "asterisk" in err and "confirm with --force-profile" in err
    assert not (modern_root / "var/lib/certbot-wazo").exists()


@pytest.mark.parametrize("record", [
    '{"cert": 5, "key": null}', '{"cert": "/x", "key": "/y", "settings": {"probes": 7}}',
    '{"cert": "/x", "key": "/y", "settings": {"probe_timeout": "soon"}}', '[1, 2]', '\\x00\\xff',
])
def test_tampered_failure_record(legacy_root: Path, record: str,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    state = legacy_root / "var/lib/certbot-wazo"
    state.mkdir(parents=True)
    (state / "failed.json").write_bytes(record.encode("latin-1"))
    code = cli.main(["retry", "--root", str(legacy_root)])
    captured = capsys.readouterr()
    assert code in (0, 1)
    assert "Traceback" not in captured.out + captured.err
    if code == 1:
        assert len(captured.err.strip().splitlines()) == 1


def test_tampered_undo_log_is_one_line(legacy_root: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    transaction = legacy_root / "var/lib/certbot-wazo/transaction"
    transaction.mkdir(parents=True)
    (transaction / "manifest.json").write_text(
        '{"entries": [], "meta": {"phase": "restarting", "endpoints": [[1]], "restarts": 3}}')
    code = cli.main(["recover", "--root", str(legacy_root)])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith(f"{transaction}: certbot-wazo's undo log is damaged")


# -- with the deployment faked: parsing, exit codes, messages ------------------------------------
class FakeDeployment:
    """Stands in for certbot_wazo.deployment.Deployment: records what the command line asks,
    and does what the test says (raise an error, say something, ...)."""

    made: ClassVar[list[FakeDeployment]] = []
    calls: ClassVar[list[tuple[str, tuple[object, ...], dict[str, object]]]] = []
    behaviour: ClassVar[dict[str, Callable[..., object]]] = {}

    def __init__(self, settings: Settings, notify: Callable[[str], None] = print) -> None:
        self.settings = settings
        self.notify = notify
        self.journal = SimpleNamespace(failure=lambda: None, failure_path=settings.root / "failed")
        FakeDeployment.made.append(self)

    def _call(self, name: str, *args: object, **kwargs: object) -> object:
        FakeDeployment.calls.append((name, args, kwargs))
        action = FakeDeployment.behaviour.get(name)
        return action(self, *args, **kwargs) if action else True

    def run(self, cert: Path, key: Path, remember: bool = False) -> object:
        return self._call("run", cert, key, remember=remember)

    def retry(self) -> object:
        return self._call("retry")

    def failure_to_retry(self) -> object:
        return self.journal.failure()

    def recover_if_idle(self, boot: bool = False) -> object:
        return self._call("recover_if_idle", boot=boot)

    def revert(self) -> object:
        return self._call("revert")


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> type[FakeDeployment]:
    monkeypatch.setattr(cli, "Deployment", FakeDeployment)
    monkeypatch.setattr(FakeDeployment, "made", [])
    monkeypatch.setattr(FakeDeployment, "calls", [])
    monkeypatch.setattr(FakeDeployment, "behaviour", {})
    monkeypatch.delenv("CERTBOT_WAZO_ROOT", raising=False)
    return FakeDeployment


def usage_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The error line of a usage error (exit 2)."""
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    assert exited.value.code == cli.EXIT_USAGE
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(errors) == 1, errors
    return errors[0]


@pytest.mark.parametrize("argv, message", [
    ([], "the following arguments are required: COMMAND"),
    (["deploy"], "give --lineage DIR, or both --cert FULLCHAIN and --key KEY"),
    (["deploy", "--cert", "c.pem"], "give --lineage DIR, or both --cert FULLCHAIN and --key KEY"),
    (["deploy", "--lineage", "/", "--cert", "c", "--key", "k"],
     "give --lineage DIR, or --cert FULLCHAIN --key KEY, not both"),
    (["deploy", "--lineage", "/nonexistent/live/x"], "/nonexistent/live/x: not a directory (give a "
     "certbot lineage such as /etc/letsencrypt/live/NAME)"),
    (["status", "--probe", "nowhere"], "--probe: 'nowhere' is not ADDR:PORT"),
    (["status", "--probe-timeout", "0"], "--probe-timeout: 0.0 must be a positive number"),
    (["status", "--probe-timeout", "soon"], "argument --probe-timeout: invalid float value"),
    (["status", "--profile", "old"], "argument --profile: invalid choice: 'old'"),
    (["status", "--hostname", "a;b"], "--hostname: 'a;b' is not a DNS name"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
])
def test_usage_errors_exit_2_with_one_error_line(fake: type[FakeDeployment], tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str],
                                                 argv: list[str], message: str) -> None:
    line = usage_error([*argv[:1], "--root", str(tmp_path), *argv[1:]] if argv else argv, capsys)
    assert message in line, line
    assert fake.calls == []


def test_deploy_with_cert_and_key(fake: type[FakeDeployment], tmp_path: Path) -> None:
    assert cli.main(["deploy", "--root", str(tmp_path), "--cert", "c.pem", "--key", "k.pem",
                     "--hostname", "Wazo.Example.Test", "--probe", "127.0.0.1:443",
                     "--probe-timeout", "9"]) == cli.EXIT_OK
    settings = fake.made[0].settings
    assert (settings.root, settings.hostname, settings.probe_timeout) == \
        (tmp_path, "wazo.example.test", 9.0)
    assert [str(p) for p in settings.probes] == ["127.0.0.1:443"]
    assert settings.option_prefix == "--"
    assert fake.calls == [("run", (Path("c.pem"), Path("k.pem")), {"remember": False})]


def test_deploy_a_lineage_is_remembered_for_a_retry(fake: type[FakeDeployment],
                                                    tmp_path: Path) -> None:
    lineage = tmp_path / "live/wazo"
    lineage.mkdir(parents=True)
    assert cli.main(["deploy", "--root", str(tmp_path), "--lineage", str(lineage)]) == 0
    assert fake.calls == [("run", (lineage / "fullchain.pem", lineage / "privkey.pem"),
                           {"remember": True})]


def test_options_go_before_or_after_the_command(fake: type[FakeDeployment], tmp_path: Path) -> None:
    cli.main(["--root", str(tmp_path), "--profile", "legacy", "revert"])
    cli.main(["revert", "--root", str(tmp_path), "--profile", "legacy"])
    cli.main(["--root", "/nonexistent", "revert", "--root", str(tmp_path)])  # the later one wins
    assert [(d.settings.root, d.settings.profile) for d in fake.made] == \
        [(tmp_path, "legacy"), (tmp_path, "legacy"), (tmp_path, "auto")]


def test_the_root_comes_from_the_environment_unless_given(
        fake: type[FakeDeployment], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CERTBOT_WAZO_ROOT", str(tmp_path / "env"))
    cli.main(["revert"])
    cli.main(["revert", "--root", str(tmp_path)])
    assert [d.settings.root for d in fake.made] == [tmp_path / "env", tmp_path]


@pytest.mark.parametrize("command, extra", [("status", ""), ("revert", " and restarts its services"),
                                            ("deploy", " and restarts its services")])
def test_not_root_on_the_real_host_is_told_to_use_sudo(
        fake: type[FakeDeployment], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], command: str, extra: str) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert cli.main([command, "--root", "/"]) == cli.EXIT_FAILED
    assert capsys.readouterr().err == (f"certbot-wazo {command}: run as root (sudo certbot-wazo "
                                       f"{command} …): it reads Wazo's private key{extra}\n")
    assert fake.made == []


def test_not_root_under_another_root_is_fine(fake: type[FakeDeployment], tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert cli.main(["revert", "--root", str(tmp_path)]) == cli.EXIT_OK


def test_a_failed_deployment_is_one_line_on_stderr_and_exit_1(
        fake: type[FakeDeployment], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def fail(self: FakeDeployment, *args: object, **kwargs: object) -> None:
        self.notify("Installed the pair")
        raise PairError(f"{tmp_path}/c.pem: expired on 2020-01-01 (renew it)")

    fake.behaviour["run"] = fail
    code = cli.main(["deploy", "--root", str(tmp_path), "--cert", "c.pem", "--key", "k.pem"])
    captured = capsys.readouterr()
    assert code == cli.EXIT_FAILED
    assert captured.err == f"{tmp_path}/c.pem: expired on 2020-01-01 (renew it)\n"
    assert captured.out == "Installed the pair\n"


def test_an_unexpected_os_error_still_names_its_file(fake: type[FakeDeployment], tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    def fail(self: FakeDeployment) -> None:
        raise PermissionError(13, "Permission denied", "/etc/xivo/common.conf")

    fake.behaviour["revert"] = fail
    assert cli.main(["revert", "--root", str(tmp_path)]) == cli.EXIT_FAILED
    assert capsys.readouterr().err == ("/etc/xivo/common.conf: Permission denied (fix it, then "
                                       "run again)\n")


def test_recover_says_when_there_is_nothing_to_recover(
        fake: type[FakeDeployment], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fake.behaviour["recover_if_idle"] = lambda self, boot: False
    assert cli.main(["recover", "--root", str(tmp_path), "--boot"]) == cli.EXIT_OK
    assert capsys.readouterr().out == "No interrupted deployment\n"
    assert fake.calls == [("recover_if_idle", (), {"boot": True})]


def test_recover_that_undid_something_is_quiet_here(
        fake: type[FakeDeployment], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["recover", "--root", str(tmp_path)]) == cli.EXIT_OK
    assert capsys.readouterr().out == ""
    assert fake.calls == [("recover_if_idle", (), {"boot": False})]


def test_retry_with_nothing_remembered_uses_the_command_line(fake: type[FakeDeployment],
                                                            tmp_path: Path) -> None:
    assert cli.main(["retry", "--root", str(tmp_path), "--probe-timeout", "5",
                     "--hostname", "pbx.example.test"]) == cli.EXIT_OK
    retried = fake.made[-1].settings
    assert (retried.root, retried.probe_timeout, retried.hostname) == \
        (tmp_path, 5.0, "pbx.example.test")
    assert [name for name, _, _ in fake.calls] == ["retry"]


@pytest.fixture
def guarded_signals() -> Iterator[None]:
    """Until the test ends, SIGTERM and SIGHUP raise instead of killing pytest (should the
    command line not catch them)."""
    def guard(signum: int, frame: object) -> None:
        raise AssertionError(f"{signal.Signals(signum).name} was not caught by the command line")

    previous = {s: signal.signal(s, guard) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def test_a_signal_during_a_run_is_exit_1_and_later_signals_are_dropped(
        fake: type[FakeDeployment], tmp_path: Path, capsys: pytest.CaptureFixture[str],
        guarded_signals: None) -> None:
    """SIGTERM stops the run at a safe point; a second signal during the undo is dropped; the
    previous handlers come back after."""
    before = {s: signal.getsignal(s) for s in cli.SIGNALS}
    undo_finished: list[bool] = []

    def interrupted(self: FakeDeployment, *args: object, **kwargs: object) -> None:
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)  # the handler raises before this ends
        except SignalledError:
            os.kill(os.getpid(), signal.SIGHUP)  # during the undo: dropped
            undo_finished.append(True)
            raise

    fake.behaviour["run"] = interrupted
    code = cli.main(["deploy", "--root", str(tmp_path), "--cert", "c", "--key", "k"])
    assert code == cli.EXIT_FAILED
    assert undo_finished == [True]
    assert capsys.readouterr().err == "interrupted by SIGTERM\n"
    assert {s: signal.getsignal(s) for s in cli.SIGNALS} == before


class FakeReport:
    def __init__(self, healthy: bool) -> None:
        self.healthy = healthy

    def as_text(self) -> str:
        return "nginx 127.0.0.1:443: serves wazo.example.test"

    def as_json(self) -> dict[str, object]:
        return {"healthy": self.healthy}


@pytest.mark.parametrize("healthy, code", [(True, cli.EXIT_OK), (False, cli.EXIT_FAILED)])
def test_status_exit_code_says_whether_the_host_is_healthy(
        fake: type[FakeDeployment], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], healthy: bool, code: int) -> None:
    seen: list[Path] = []

    def check(deployment: FakeDeployment, config_dir: Path) -> FakeReport:
        deployment.notify("Finished an interrupted deployment")
        seen.append(config_dir)
        return FakeReport(healthy)

    monkeypatch.setattr(status, "check", check)
    assert cli.main(["status", "--root", str(tmp_path)]) == code
    assert capsys.readouterr().out == ("Finished an interrupted deployment\n"
                                       "nginx 127.0.0.1:443: serves wazo.example.test\n")
    assert cli.main(["status", "--root", str(tmp_path), "--json", "--config-dir", "/le"]) == code
    assert json.loads(capsys.readouterr().out) == {
        "healthy": healthy, "messages": ["Finished an interrupted deployment"]}
    assert seen == [Path("/etc/letsencrypt"), Path("/le")]


def test_status_that_cannot_read_the_host_is_one_line(
        fake: type[FakeDeployment], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    def check(deployment: FakeDeployment, config_dir: Path) -> FakeReport:
        raise HostError(f"{tmp_path}/etc/xivo/common.conf: cannot be read (x)")

    monkeypatch.setattr(status, "check", check)
    assert cli.main(["status", "--root", str(tmp_path)]) == cli.EXIT_FAILED
    assert capsys.readouterr().err == f"{tmp_path}/etc/xivo/common.conf: cannot be read (x)\n"
