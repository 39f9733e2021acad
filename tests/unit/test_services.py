"""Wazo's commands, run for real: tiny shell scripts installed under a temporary root stand in for
xivo-update-config, wazo-service, systemctl and asterisk. Every command has a short timeout."""
from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from certbot_wazo import access, services
from certbot_wazo.errors import CommandError, HostError, SignalledError
from certbot_wazo.host import LEGACY, MODERN, Host
from certbot_wazo.tls import Endpoint


def install(root: Path, name: str, body: str, directory: str = "usr/sbin") -> Path:
    """An executable shell script ROOT/directory/name."""
    path = root / directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return path


def ep(unit: str, port: int = 443) -> Endpoint:
    return Endpoint("127.0.0.1", port, unit)


# -- run -----------------------------------------------------------------------------------------
def test_run_returns_standard_output_and_error(tmp_path: Path) -> None:
    script = install(tmp_path, "speak", "echo out; echo err >&2")
    assert services.run([str(script)], timeout=5) == "out\nerr\n"


def test_run_gives_no_input_and_its_own_session(tmp_path: Path) -> None:
    """A command never reads certbot-wazo's terminal, nor gets its terminal's signals."""
    script = install(tmp_path, "probe", "cat; cut -d' ' -f6 /proc/$$/stat; echo $$")
    sid, pid = services.run([str(script)], timeout=5).split()
    assert sid == pid
    assert int(sid) != os.getsid(0)


def test_a_failing_command_is_one_line_with_its_last_words(tmp_path: Path) -> None:
    script = install(tmp_path, "wazo-service", 'echo "stopping"; echo "asterisk: failed" >&2; exit 3')
    with pytest.raises(CommandError) as raised:
        services.run([str(script), "restart", "all"], timeout=5)
    assert str(raised.value) == (f"{script}: 'restart all' exited with status 3: asterisk: "
                                 "failed (run it by hand to see why, fix that, then run again)")


def test_a_silent_failure_says_no_message(tmp_path: Path) -> None:
    script = install(tmp_path, "systemctl", "exit 1")
    with pytest.raises(CommandError, match="exited with status 1: no message \\(run it by hand"):
        services.run([str(script), "reload", "nginx"], timeout=5)


@pytest.mark.parametrize("make", ["missing", "not-executable"])
def test_a_command_that_cannot_start_says_reinstall(tmp_path: Path, make: str) -> None:
    path = tmp_path / "usr/sbin/xivo-update-config"
    if make == "not-executable":
        path.parent.mkdir(parents=True)
        path.write_text("#!/bin/sh\n")
        path.chmod(0o644)
        if os.geteuid() == 0 and os.access(path, os.X_OK):
            pytest.skip("root may execute anything")
    with pytest.raises(CommandError, match=f"^{path}: cannot be run \\(.+; reinstall it\\)$"):
        services.run([str(path)], timeout=5)


def test_a_command_past_its_timeout_is_stopped_with_its_children(tmp_path: Path) -> None:
    """The whole session is killed: a restart that hangs leaves no process behind."""
    pidfile = tmp_path / "child.pid"
    script = install(tmp_path, "wazo-service", f"sleep 30 & echo $! > {pidfile}; wait")
    started = time.monotonic()
    with pytest.raises(CommandError) as raised:
        services.run([str(script), "restart", "all"], timeout=0.5)
    assert time.monotonic() - started < 5
    assert str(raised.value) == (f"{script}: 'restart all' did not finish within 0.5 s and was "
                                 "stopped (check the services' logs)")
    child = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _alive(child):
        time.sleep(0.01)
    assert not _alive(child), "the command's child survived"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_only_the_first_mebibyte_of_output_is_kept(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(access, "MAX_OUTPUT", 10)
    script = install(tmp_path, "chatty", "echo 0123456789abcdef")
    assert services.run([str(script)], timeout=5) == "0123456789"


@pytest.fixture
def signal_raises() -> Iterator[None]:
    """SIGUSR1 raises SignalledError, as the command line's handler does for SIGTERM."""
    def interrupt(signum: int, frame: Any) -> None:
        raise SignalledError("interrupted by SIGUSR1")

    previous = signal.signal(signal.SIGUSR1, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_an_interrupted_run_lets_the_command_finish_first(tmp_path: Path,
                                                          signal_raises: None) -> None:
    """A restart stopped halfway would leave the services down: the command finishes, then
    the interruption goes on."""
    done = tmp_path / "done"
    script = install(tmp_path, "wazo-service", f"sleep 0.4; touch {done}")
    timer = threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGUSR1))
    timer.start()
    try:
        with pytest.raises(SignalledError):
            services.run([str(script), "restart", "all"], timeout=5)
    finally:
        timer.cancel()
        timer.join(timeout=5)
    assert done.exists(), "the interruption killed the command"


# -- require and xivo-update-config --------------------------------------------------------------
def test_a_missing_command_names_where_it_was_looked_for(tmp_path: Path) -> None:
    with pytest.raises(HostError) as raised:
        services.update_config_command(Host(tmp_path))
    assert str(raised.value) == (
        f"{tmp_path}: command xivo-update-config not found in {tmp_path}/usr/sbin, "
        f"{tmp_path}/usr/bin, {tmp_path}/sbin, {tmp_path}/bin (is this a Wazo host? check "
        "--wazo-root)")


def test_update_config_command_is_the_one_under_the_root(tmp_path: Path) -> None:
    script = install(tmp_path, "xivo-update-config", "true", directory="usr/bin")
    assert services.update_config_command(Host(tmp_path)) == [str(script)]


def test_update_config_passes_on_clean_output(tmp_path: Path) -> None:
    install(tmp_path, "xivo-update-config", "echo 'Generating /etc/hosts'")
    services.update_config(Host(tmp_path), timeout=5)


def test_update_config_that_reports_a_template_error_fails(tmp_path: Path) -> None:
    """xivo-update-config exits 0 even when a template fails: its output is read."""
    script = install(tmp_path, "xivo-update-config",
                     "echo ok; echo 'ERROR: generation from template hosts failed '; exit 0")
    with pytest.raises(CommandError) as raised:
        services.update_config(Host(tmp_path), timeout=5)
    assert str(raised.value) == (f"{script}: ERROR: generation from template hosts failed "
                                 "(fix the template it names)")


def test_update_config_that_fails_is_a_command_error(tmp_path: Path) -> None:
    install(tmp_path, "xivo-update-config", "echo 'cannot lock' >&2; exit 2")
    with pytest.raises(CommandError, match="exited with status 2: cannot lock"):
        services.update_config(Host(tmp_path), timeout=5)


# -- run_restart ---------------------------------------------------------------------------------
def _http_conf(root: Path) -> Path:
    path = root / "etc/asterisk/http.conf"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("[general]\n")
    os.utime(path, (1_000_000_000, 1_000_000_000))
    return path


def test_asterisk_http_reload_touches_http_conf_first(tmp_path: Path) -> None:
    """Asterisk before 13.24 skips `module reload http` when http.conf is unchanged."""
    http_conf = _http_conf(tmp_path)
    asterisk = install(tmp_path, "asterisk", "true")
    services.run_restart(Host(tmp_path), [str(asterisk), "-rx", "module reload http"], timeout=5)
    assert http_conf.stat().st_mtime > 1_000_000_000


def test_other_restarts_leave_http_conf_alone(tmp_path: Path) -> None:
    http_conf = _http_conf(tmp_path)
    systemctl = install(tmp_path, "systemctl", "true")
    services.run_restart(Host(tmp_path), [str(systemctl), "reload", "nginx"], timeout=5)
    assert http_conf.stat().st_mtime == 1_000_000_000


def test_a_symlinked_http_conf_is_not_touched_through(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere.conf"
    elsewhere.write_text("[general]\n")
    os.utime(elsewhere, (1_000_000_000, 1_000_000_000))
    root = tmp_path / "root"
    (root / "etc/asterisk").mkdir(parents=True)
    (root / "etc/asterisk/http.conf").symlink_to(elsewhere)
    asterisk = install(root, "asterisk", "true")
    services.run_restart(Host(root), [str(asterisk), "-rx", "module reload http"], timeout=5)
    assert elsewhere.stat().st_mtime == 1_000_000_000


def test_a_failed_restart_is_a_command_error(tmp_path: Path) -> None:
    systemctl = install(tmp_path, "systemctl", "echo 'Job for nginx.service failed'; exit 1")
    with pytest.raises(CommandError, match="'reload nginx' exited with status 1: Job for nginx"):
        services.run_restart(Host(tmp_path), [str(systemctl), "reload", "nginx"], timeout=5)


# -- the documented restart of each generation ---------------------------------------------------
def test_legacy_restart_is_wazo_service_restart_all(tmp_path: Path) -> None:
    wazo_service = install(tmp_path, "wazo-service", "true")
    install(tmp_path, "xivo-service", "true")
    assert services.restart_commands(Host(tmp_path), LEGACY) == [
        [str(wazo_service), "restart", "all"]]


def test_legacy_restart_falls_back_to_xivo_service(tmp_path: Path) -> None:
    xivo_service = install(tmp_path, "xivo-service", "true")
    assert services.restart_commands(Host(tmp_path), LEGACY) == [
        [str(xivo_service), "restart", "all"]]


def test_legacy_restart_without_either_command_names_both(tmp_path: Path) -> None:
    with pytest.raises(HostError, match="command wazo-service or xivo-service not found"):
        services.restart_commands(Host(tmp_path), LEGACY)


def test_modern_restart_needs_systemctl(modern_root: Path) -> None:
    with pytest.raises(HostError, match="command systemctl not found"):
        services.restart_commands(Host(modern_root), MODERN)


def test_modern_restart_reloads_nginx_and_restarts_phoned(modern_root: Path) -> None:
    """Asterisk is never restarted on a modern host (live calls would drop)."""
    systemctl = str(install(modern_root, "systemctl", "true", directory="bin"))
    install(modern_root, "asterisk", "true")
    assert services.restart_commands(Host(modern_root), MODERN) == [
        [systemctl, "reload", "nginx"], [systemctl, "restart", "wazo-phoned"]]


def test_modern_restart_without_phoned_only_reloads_nginx(modern_root: Path) -> None:
    systemctl = str(install(modern_root, "systemctl", "true"))
    for path in sorted((modern_root / "etc/wazo-phoned").rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    (modern_root / "etc/wazo-phoned").rmdir()
    assert services.restart_commands(Host(modern_root), MODERN) == [[systemctl, "reload", "nginx"]]


def test_modern_restart_reloads_asterisk_http_and_restarts_consul_when_they_serve_the_pair(
        modern_root: Path) -> None:
    systemctl = str(install(modern_root, "systemctl", "true"))
    asterisk = str(install(modern_root, "asterisk", "true"))
    http_conf = modern_root / "etc/asterisk/http.conf"
    http_conf.parent.mkdir(parents=True)
    http_conf.write_text("[general]\ntlsenable=yes\ntlsbindaddr=0.0.0.0:8089\n"
                         "tlscertfile=/usr/share/wazo-certs/server.crt\n")
    consul = modern_root / "etc/consul.d/config.json"
    consul.parent.mkdir(parents=True)
    consul.write_text('{"cert_file": "/usr/share/wazo-certs/server.crt", "ports": {"https": 8501}}')
    assert services.restart_commands(Host(modern_root), MODERN) == [
        [systemctl, "reload", "nginx"], [systemctl, "restart", "wazo-phoned"],
        [asterisk, "-rx", "module reload http"], [systemctl, "restart", "consul"]]


# -- the gentle restart --------------------------------------------------------------------------
def test_gentle_reloads_nginx_and_asterisk_and_restarts_each_daemon_once(tmp_path: Path) -> None:
    systemctl = str(install(tmp_path, "systemctl", "true"))
    asterisk = str(install(tmp_path, "asterisk", "true"))
    endpoints = [ep("xivo-confd", 9486), ep("nginx"), ep("xivo-auth", 9497), ep("asterisk", 5040),
                 ep("xivo-auth", 9498)]
    assert services.gentle_commands(Host(tmp_path), endpoints) == [
        [systemctl, "reload", "nginx"], [asterisk, "-rx", "module reload http"],
        [systemctl, "restart", "xivo-auth", "xivo-confd"]]


def test_gentle_nginx_only(tmp_path: Path) -> None:
    systemctl = str(install(tmp_path, "systemctl", "true"))
    assert services.gentle_commands(Host(tmp_path), [ep("nginx")]) == [
        [systemctl, "reload", "nginx"]]


@pytest.mark.parametrize("units", [[], ["nginx", ""], ["nginx", "Bad Unit"], ["-rf"],
                                   ["nginx", "x;reboot"]],
                         ids=["none", "unknown", "spaces", "option", "semicolon"])
def test_gentle_gives_up_on_an_unknown_or_odd_service(tmp_path: Path, units: list[str]) -> None:
    """Then only the documented restart will do; an odd name never reaches systemctl."""
    install(tmp_path, "systemctl", "true")
    install(tmp_path, "asterisk", "true")
    assert services.gentle_commands(Host(tmp_path), [ep(u) for u in units]) == []


def test_gentle_gives_up_without_systemctl(tmp_path: Path) -> None:
    install(tmp_path, "asterisk", "true")
    assert services.gentle_commands(Host(tmp_path), [ep("nginx")]) == []


def test_gentle_gives_up_when_asterisk_serves_but_its_command_is_missing(tmp_path: Path) -> None:
    install(tmp_path, "systemctl", "true")
    assert services.gentle_commands(Host(tmp_path), [ep("nginx"), ep("asterisk", 5040)]) == []


@pytest.mark.parametrize(("script", "expected"), [
    # upstream's form (wazo-platform/wazo-service, tag wazo-19.17, bin/wazo-service)
    ('wazo_services="wazo-amid wazo-calld"\ndefault_services="wazo-auth $wazo_services"\n'
     'all_services="nginx ${default_services}"\n',
     {"nginx", "wazo-auth", "wazo-amid", "wazo-calld"}),
    # no lists it can read: every word that could be a unit
    ("#!/bin/sh\nfor s in wazo-auth wazo-amid; do systemctl $1 $s; done\n",
     {"wazo-auth", "wazo-amid"}),
])
def test_wazo_services_lists_are_read_as_data(tmp_path: Path, script: str,
                                              expected: set[str]) -> None:
    path = tmp_path / "usr/bin/wazo-service"
    path.parent.mkdir(parents=True)
    path.write_text(script)
    path.chmod(0o755)
    assert expected <= (services.wazo_service_units(Host(tmp_path)) or set())
    assert "$wazo_services" not in (services.wazo_service_units(Host(tmp_path)) or set())
