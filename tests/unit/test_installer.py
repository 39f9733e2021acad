"""The installer's own methods, in-process, with certbot's real option parsing (2.1 and newest)."""
from __future__ import annotations

import logging
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Optional

import pytest
from certbot import configuration, errors
from certbot._internal import cli
from certbot._internal.plugins import disco

from certbot_wazo import installer as installer_module
from certbot_wazo.access import LocalAccess
from certbot_wazo.deployment import Settings
from certbot_wazo.errors import HostError, LockBusyError, PairError, RolledBackError
from certbot_wazo.host import Host
from certbot_wazo.installer import WazoInstaller
from tests.unit.fakepbx import WAZO_SERVICE


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


# -- with the deployment faked: what certbot's calls become ---------------------------------------
class FakeDeployment:
    """Stands in for the deployment transaction: records calls; `fail` maps a method to the
    error it raises."""

    def __init__(self, settings: Settings, notify: Callable[[str], None]) -> None:
        self.settings = settings
        self.host = Host(settings.root)
        self.plan: Optional[object] = None
        self.access = LocalAccess()
        self.journal = SimpleNamespace(previous="previous-snapshot")
        self.calls: list[tuple[object, ...]] = []
        self.fail: dict[str, BaseException] = {}

    def _call(self, name: str, *args: object) -> None:
        self.calls.append((name, *args))
        if name in self.fail:
            raise self.fail[name]

    def install(self, cert: Path, key: Path, remember: bool = False) -> bool:
        self._call("install", cert, key, remember)
        self.plan = object()
        return True

    def activate(self) -> None:
        self._call("activate")
        self.plan = None

    def refresh(self) -> bool:
        self._call("refresh")
        return False

    def abort(self) -> None:
        self._call("abort")
        self.plan = None

    def restore(self, snapshot: object, label: str) -> bool:
        self._call("restore", snapshot, label)
        return True

    def observe_early(self) -> None:
        self._call("observe_early")

    def recover_if_idle(self, boot: bool = False, wait: Optional[float] = None) -> bool:
        self._call("recover_if_idle", wait)
        return False


@pytest.fixture
def faked(legacy_root: Path, tmp_path: Path,
          monkeypatch: pytest.MonkeyPatch) -> tuple[WazoInstaller, FakeDeployment]:
    monkeypatch.setattr(installer_module.fleet, "open_deployment", FakeDeployment)
    wazo = installer(tmp_path, legacy_root)
    deployment = wazo._get_deployment()
    assert isinstance(deployment, FakeDeployment)
    return wazo, deployment


def test_deploy_cert_installs_once_per_certificate(
        faked: tuple[WazoInstaller, FakeDeployment]) -> None:
    """certbot calls deploy_cert once per name of the certificate: one install."""
    wazo, deployment = faked
    for domain in ("wazo.example.test", "pbx.example.test"):
        wazo.deploy_cert(domain, "/le/cert.pem", "/le/privkey.pem", "/le/chain.pem",
                         "/le/fullchain.pem")
    wazo.restart()
    wazo.deploy_cert("sip.example.test", "/le/cert.pem", "/le/privkey.pem", "/le/chain.pem",
                     "/le/fullchain.pem")  # after the restart too (certbot's order may vary)
    assert deployment.calls == [("install", Path("/le/fullchain.pem"), Path("/le/privkey.pem"),
                                 False), ("activate",)]


def test_deploy_cert_needs_the_full_chain(faked: tuple[WazoInstaller, FakeDeployment]) -> None:
    wazo, deployment = faked
    with pytest.raises(errors.PluginError, match="^/le/cert.pem: Wazo needs the full chain"):
        wazo.deploy_cert("wazo.example.test", "/le/cert.pem", "/le/privkey.pem")
    assert deployment.calls == []


def test_renewal_installs_the_lineage_and_remembers_it(
        faked: tuple[WazoInstaller, FakeDeployment]) -> None:
    wazo, deployment = faked
    wazo.renew_deploy(SimpleNamespace(fullchain_path="/le/fullchain.pem",
                                      key_path="/le/privkey.pem"))
    assert deployment.calls == [("install", Path("/le/fullchain.pem"), Path("/le/privkey.pem"),
                                 True)]


@pytest.mark.parametrize("error, message", [
    (PairError("/le/fullchain.pem: expired (renew it)"), "/le/fullchain.pem: expired (renew it)"),
    (PermissionError(13, "Permission denied", "/le/privkey.pem"),
     "/le/privkey.pem: Permission denied (fix it, then run again)"),
])
def test_a_refused_install_is_a_plugin_error_with_the_one_line(
        faked: tuple[WazoInstaller, FakeDeployment], error: BaseException, message: str) -> None:
    wazo, deployment = faked
    deployment.fail["install"] = error
    with pytest.raises(errors.PluginError) as raised:
        wazo.deploy_cert("wazo.example.test", "/le/cert.pem", "/le/privkey.pem",
                         fullchain_path="/le/fullchain.pem")
    assert str(raised.value) == message


def test_restart_activates_what_this_run_installed(
        faked: tuple[WazoInstaller, FakeDeployment]) -> None:
    wazo, deployment = faked
    wazo.deploy_cert("wazo.example.test", "/c", "/k", fullchain_path="/f")
    wazo.restart()
    assert [c[0] for c in deployment.calls] == ["install", "activate"]


def test_restart_with_nothing_installed_refreshes(
        faked: tuple[WazoInstaller, FakeDeployment]) -> None:
    wazo, deployment = faked
    wazo.restart()
    assert deployment.calls == [("refresh",)]


@pytest.mark.parametrize("failure, reported", [
    (RolledBackError("/f: nginx still serves the previous certificate (restored)"),
     errors.MisconfigurationError),
    (OSError(5, "Input/output error"), errors.PluginError),
], ids=["rolled-back", "system-error"])
def test_a_failed_activation_is_not_rolled_back_again(
        faked: tuple[WazoInstaller, FakeDeployment], failure: BaseException,
        reported: type[Exception]) -> None:
    """The activation rolled back itself, or left its undo log for the next run: certbot's
    rollback after it must not restore the state before the previous one on top of it."""
    wazo, deployment = faked
    wazo.deploy_cert("wazo.example.test", "/c", "/k", fullchain_path="/f")
    deployment.fail["activate"] = failure
    with pytest.raises(reported):
        wazo.restart()
    deployment.plan = None
    wazo.rollback_checkpoints()
    assert [c[0] for c in deployment.calls] == ["install", "activate"]


def test_rollback_undoes_this_runs_install_else_restores_the_previous_state(
        faked: tuple[WazoInstaller, FakeDeployment]) -> None:
    wazo, deployment = faked
    wazo.deploy_cert("wazo.example.test", "/c", "/k", fullchain_path="/f")
    wazo.rollback_checkpoints()
    wazo.rollback_checkpoints()
    assert deployment.calls[1:] == [("abort",), ("restore", "previous-snapshot",
                                                 "Restored the previous state")]


def test_recovery_routine_undoes_what_was_not_restarted(
        faked: tuple[WazoInstaller, FakeDeployment]) -> None:
    wazo, deployment = faked
    wazo.recovery_routine()
    assert deployment.calls == [("abort",)]
    deployment.fail["abort"] = HostError("/x: cannot be written (y)")
    with pytest.raises(errors.PluginError, match="^/x: cannot be written"):
        wazo.recovery_routine()


@pytest.mark.parametrize("error, level, message", [
    (LockBusyError("/lock: busy"), logging.INFO,
     "Another deployment is running; it will finish its own work"),
    (HostError("/x: damaged (y)"), logging.WARNING,
     "Could not finish an interrupted deployment yet: /x: damaged (y)"),
    (PermissionError(13, "Permission denied", "/x"), logging.WARNING,
     "Could not finish an interrupted deployment yet: [Errno 13] Permission denied: '/x'"),
])
def test_prepare_never_fails_because_an_interrupted_deployment_cannot_be_finished_yet(
        faked: tuple[WazoInstaller, FakeDeployment], caplog: pytest.LogCaptureFixture,
        error: BaseException, level: int, message: str) -> None:
    """During `certbot renew` a failing prepare() silently drops the installer: it logs, and
    another deployment under way is no cause for a warning."""
    wazo, deployment = faked
    deployment.fail["recover_if_idle"] = error
    with caplog.at_level(logging.INFO, logger="certbot_wazo.installer"):
        wazo.prepare()
    assert deployment.calls == [("recover_if_idle", 0.0), ("observe_early",)]
    assert [(r.levelno, r.getMessage()) for r in caplog.records
            if r.name == "certbot_wazo.installer"] == [(level, message)]


def test_prepare_refuses_a_missing_root(tmp_path: Path) -> None:
    with pytest.raises(errors.NoInstallationError, match="nonexistent: no such directory \\(give "
                       "the Wazo root with --wazo-root\\)"):
        installer(tmp_path, tmp_path / "nonexistent").prepare()


def test_config_test_passes_on_a_complete_legacy_host(legacy_root: Path, tmp_path: Path) -> None:
    for name in ("wazo-service", "xivo-update-config"):
        script = legacy_root / "usr/sbin" / name
        script.parent.mkdir(parents=True, exist_ok=True)
        script.write_text(WAZO_SERVICE if name == "wazo-service" else "#!/bin/sh\n")
        script.chmod(0o755)
    installer(tmp_path, legacy_root).config_test()


def test_config_test_wants_an_endpoint_or_a_probe(modern_root: Path, tmp_path: Path) -> None:
    systemctl = modern_root / "bin/systemctl"
    systemctl.parent.mkdir(parents=True)
    systemctl.write_text("#!/bin/sh\n")
    systemctl.chmod(0o755)
    installer(tmp_path, modern_root).config_test()
    (modern_root / "etc/nginx/nginx.conf").write_text("events {}\n")
    for path in sorted((modern_root / "etc/wazo-phoned").rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    with pytest.raises(errors.MisconfigurationError, match="no TLS endpoint in the host's "
                       "configuration \\(give --wazo-probe ADDR:PORT\\)"):
        installer(tmp_path, modern_root).config_test()
    installer(tmp_path, modern_root, "--wazo-probe", "127.0.0.1:443").config_test()


def _http01(identifier: object, token: bytes = b"t" * 32) -> object:
    import josepy as jose
    from acme import challenges, messages
    from certbot import achallenges
    from cryptography.hazmat.primitives.asymmetric import ec
    key = jose.JWKEC(key=ec.generate_private_key(ec.SECP256R1()))
    challb = messages.ChallengeBody(chall=challenges.HTTP01(token=token), uri="https://ca/c",
                                    status=messages.STATUS_PENDING)
    return achallenges.KeyAuthorizationAnnotatedChallenge(challb=challb, identifier=identifier,
                                                          account_key=key)


def test_the_authenticator_offers_http01_and_says_what_to_check(legacy_root: Path,
                                                                  tmp_path: Path) -> None:
    plugin = installer(tmp_path, legacy_root)
    assert [c.typ for c in plugin.get_chall_pref("pbx.example.test")] == ["http-01"]
    hint = plugin.auth_hint([])
    assert "port 80" in hint and "443" in hint


def test_the_authenticator_answers_names_only(legacy_root: Path, tmp_path: Path) -> None:
    """An IP address is refused with one line (certbot 5 names challenges by identifier;
    certbot 2.1 knows names only); nothing is written into nginx."""
    from acme import messages
    from certbot import achallenges
    if "identifier" not in achallenges.KeyAuthorizationAnnotatedChallenge.__slots__:
        pytest.skip("this certbot has no IP identifiers (before certbot 5)")
    plugin = installer(tmp_path, legacy_root)
    ip = messages.Identifier(typ=messages.IDENTIFIER_IP, value="192.0.2.1")
    with pytest.raises(errors.PluginError, match="192.0.2.1: only DNS names"):
        plugin.perform([_http01(ip)])  # type: ignore[list-item]
    assert not list(legacy_root.glob("etc/nginx/**/certbot-wazo-acme-challenge"))
