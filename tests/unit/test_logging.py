"""The debug log explains a night-time failure without a rerun: every command with its whole
output, every probe result, every file written, and never a private key's bytes."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest

from certbot_wazo import cli, services
from certbot_wazo.errors import CommandError
from certbot_wazo.files import FileState, apply_state
from tests.pki import CA
from tests.unit.fakepbx import install


def test_a_failing_command_logs_its_whole_output(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="certbot_wazo")
    script = "for w in alpha beta gamma; do echo line-$w; done; exit 3"
    with pytest.raises(CommandError) as err:
        services.run(["/bin/sh", "-c", script], timeout=30)
    assert "line-gamma" in str(err.value) and "line-beta" not in str(err.value)
    assert "exit status 3" in caplog.text
    assert "line-alpha\nline-beta\nline-gamma" in caplog.text


def test_a_command_that_times_out_logs_what_it_printed(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="certbot_wazo")
    with pytest.raises(CommandError):
        services.run(["/bin/sh", "-c", "echo restarting-wazo-auth; exec sleep 30"], timeout=0.5)
    assert "restarting-wazo-auth" in caplog.text


def test_a_written_file_is_logged_without_its_bytes(tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="certbot_wazo")
    secret = b"-----BEGIN PRIVATE KEY-----\nTOPSECRET\n"
    apply_state(tmp_path / "server.key", FileState.file(secret, 0o600))
    assert f"{tmp_path / 'server.key'}: written, {len(secret)} bytes" in caplog.text
    assert "mode 0600" in caplog.text and "TOPSECRET" not in caplog.text


def test_verbose_command_line_logs_commands_probes_and_files(
        monkeypatch: pytest.MonkeyPatch, legacy_root: Path, ca: CA, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    install(monkeypatch, legacy_root)
    crt, key = ca.issue(tmp_path / "le", names=["wazo.example.test"])
    package = logging.getLogger("certbot_wazo")
    handlers, level = list(package.handlers), package.level
    try:
        code = cli.main(["deploy", "-v", "--root", str(legacy_root), "--cert", str(crt),
                         "--key", str(key)])
    finally:
        package.handlers[:], package.level = handlers, level
    err = capsys.readouterr().err
    assert code == 0
    assert "phase installing" in err and "phase restarting" in err and "committed" in err
    assert "as installed, on a loopback listener, for wazo.example.test: serves the new " \
        "certificate, verified" in err
    assert "server.key: written" in err and "restarting: [[" in err
