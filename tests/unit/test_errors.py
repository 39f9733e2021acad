"""Every error the core raises reaches the admin as its one line: exit 1 from the command line,
never a traceback (the command line catches WazoError, so each error must be one)."""
from __future__ import annotations

from pathlib import Path

import pytest

from certbot_wazo import cli, errors

CORE_ERRORS = sorted((c for c in vars(errors).values()
                      if isinstance(c, type) and issubclass(c, Exception)
                      and c.__module__ == errors.__name__), key=lambda c: c.__name__)


@pytest.mark.parametrize("error", CORE_ERRORS, ids=lambda c: c.__name__)
def test_each_core_error_is_exit_1_and_one_line(error: type[Exception], tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    line = f"{tmp_path}/usr/share/xivo-certs/server.crt: what is wrong (what to do)"

    class Failing:
        def __init__(self, settings: object, notify: object = None) -> None:
            pass

        def revert(self) -> None:
            raise error(line)

    monkeypatch.setattr(cli, "Deployment", Failing)
    assert cli.main(["revert", "--root", str(tmp_path)]) == cli.EXIT_FAILED
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == ("", line + "\n")
