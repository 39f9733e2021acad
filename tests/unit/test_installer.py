"""The installer's own methods, in-process, with certbot's real option parsing (2.1 and newest)."""
from __future__ import annotations

from pathlib import Path

import pytest
from certbot import configuration, errors
from certbot._internal import cli
from certbot._internal.plugins import disco

from certbot_wazo.installer import WazoInstaller


def installer(tmp_path: Path, root: Path, *extra: str) -> WazoInstaller:
    args = cli.prepare_and_parse_args(disco.PluginsRegistry.find_all(), [
        "install", "-i", "wazo", "--wazo-root", str(root), "--config-dir",
        str(tmp_path / "config"), "--work-dir", str(tmp_path / "work"), "--logs-dir",
        str(tmp_path / "logs"), *extra])
    return WazoInstaller(configuration.NamespaceConfig(args), "wazo")


def test_options_and_names(legacy_root: Path, tmp_path: Path) -> None:
    wazo = installer(tmp_path, legacy_root, "--wazo-probe-timeout", "7")
    wazo.prepare()
    assert wazo.conf("probe-timeout") == 7.0
    assert wazo.get_all_names() == {"wazo.example.test"}
    assert wazo.supported_enhancements() == []
    with pytest.raises(errors.PluginError, match="enhancement redirect is not supported"):
        wazo.enhance("wazo.example.test", "redirect")
    assert "Wazo" in wazo.more_info()


def test_prepare_refuses_a_root_that_is_not_wazo(tmp_path: Path) -> None:
    with pytest.raises(errors.NoInstallationError, match="no Wazo certificate directory"):
        installer(tmp_path, tmp_path).prepare()


def test_config_test_names_what_is_missing(legacy_root: Path, tmp_path: Path) -> None:
    # The testdata tree has no Wazo commands: config_test says which and where.
    with pytest.raises(errors.MisconfigurationError, match="command wazo-service or xivo-service "
                       "not found"):
        installer(tmp_path, legacy_root).config_test()


def test_bad_option_is_a_misconfiguration(legacy_root: Path, tmp_path: Path) -> None:
    with pytest.raises(errors.MisconfigurationError, match="--wazo-probe: 'nowhere' is not ADDR:PORT"):
        installer(tmp_path, legacy_root, "--wazo-probe", "nowhere").prepare()
