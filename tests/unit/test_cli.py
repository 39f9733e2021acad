"""The command line says what is wrong in the admin's terms, and writes nothing when it refuses."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from certbot_wazo import cli
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
    result = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                             str(CLI), command], capture_output=True, text=True, timeout=60,
                            check=False, env={**os.environ, "CERTBOT_WAZO_ROOT": ""})
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
