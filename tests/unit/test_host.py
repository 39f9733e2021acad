"""The host model: generation, endpoints and names are read from the host's own configuration."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from certbot_wazo import overrides
from certbot_wazo.errors import HostError
from certbot_wazo.host import LEGACY, MODERN, Host
from certbot_wazo.tls import Endpoint


def test_legacy_detected_from_daemons_serving_tls(legacy_root: Path) -> None:
    assert Host(legacy_root).generation() == LEGACY


def test_modern_detected_when_only_phoned_serves_tls(modern_root: Path) -> None:
    assert Host(modern_root).generation() == MODERN


def test_legacy_detected_from_verify_certificate_alone(modern_root: Path) -> None:
    (modern_root / "etc/wazo-auth/config.yml").write_text(
        "amid:\n  host: localhost\n  verify_certificate: /usr/share/wazo-certs/server.crt\n")
    assert Host(modern_root).generation() == LEGACY


def test_profile_overrides_detection(modern_root: Path) -> None:
    assert Host(modern_root).generation("legacy") == LEGACY


def test_conf_d_first_file_wins_over_config_yml(legacy_root: Path) -> None:
    (legacy_root / "etc/xivo-auth/conf.d/001-admin.yml").write_text(
        "rest_api:\n  https:\n    port: 19497\n")
    ports = {e.unit: e.port for e in Host(legacy_root).endpoints()}
    assert ports["xivo-auth"] == 19497


def test_legacy_endpoints(legacy_root: Path) -> None:
    endpoints = Host(legacy_root).endpoints()
    assert set(endpoints) == {
        Endpoint("127.0.0.1", 9497, "xivo-auth"), Endpoint("127.0.0.1", 9486, "xivo-confd"),
        Endpoint("127.0.0.1", 9503, "wazo-plugind"), Endpoint("127.0.0.1", 443, "nginx"),
        Endpoint("127.0.0.1", 9502, "xivo-websocketd"),
        Endpoint("127.0.0.1", 5040, "asterisk")}


def test_modern_endpoints(modern_root: Path) -> None:
    assert set(Host(modern_root).endpoints()) == {
        Endpoint("127.0.0.1", 9499, "wazo-phoned"), Endpoint("127.0.0.1", 443, "nginx")}


def test_malformed_conf_d_file_is_skipped_like_wazo_skips_it(legacy_root: Path) -> None:
    """xivo-lib-python (xivo/config_helper.py, parse_config_dir) skips a conf.d file it cannot
    parse and prints a message: the product reads the host the same way and says so."""
    bad = legacy_root / "etc/xivo-auth/conf.d/020-admin.yml"
    bad.write_text("rest_api: [unclosed\n")
    host = Host(legacy_root)
    assert Endpoint("127.0.0.1", 9497, "xivo-auth") in host.endpoints()
    assert [w for w in host.warnings if w.startswith(f"{bad}: not valid YAML at line")]


def test_malformed_packaged_config_says_reinstall_never_remove(legacy_root: Path) -> None:
    bad = legacy_root / "etc/xivo-auth/config.yml"
    bad.write_text("rest_api: [unclosed\n")
    info = legacy_root / "var/lib/dpkg/info"
    info.mkdir(parents=True)
    (info / "xivo-auth.list").write_text("/etc/xivo-auth\n/etc/xivo-auth/config.yml\n")
    with pytest.raises(HostError) as raised:
        Host(legacy_root).generation()
    message = str(raised.value)
    assert message.startswith(f"{bad}: not valid YAML at line")
    assert "apt-get install --reinstall xivo-auth" in message
    assert "remove" not in message


def test_exec_tag_is_not_run_and_hidden_listener_is_said(legacy_root: Path) -> None:
    """Packaged conf.d files use xivo-lib-python's `!exec` tag (a mapping with `command`)."""
    witness = legacy_root / "ran"
    conf_d = legacy_root / "etc/xivo-auth/conf.d"
    (conf_d / "50-subnets.yml").write_text(
        f"rest_api:\n  authorized_subnets: !exec\n    command: touch {witness}\n")
    (conf_d / "40-port.yml").write_text(
        f"rest_api:\n  https:\n    port: !exec\n      command: touch {witness}\n")
    host = Host(legacy_root)
    endpoints = host.endpoints()
    assert not witness.exists()
    assert all(e.unit != "xivo-auth" for e in endpoints)
    assert any(f"touch {witness}" in w and "--wazo-probe" in w for w in host.warnings)


def test_names(legacy_root: Path) -> None:
    assert Host(legacy_root).names() == {"wazo.example.test"}


def test_www_data_gid(legacy_root: Path) -> None:
    assert Host(legacy_root).www_data_gid() == 33
    (legacy_root / "etc/group").write_text("root:x:0:\n")
    with pytest.raises(HostError, match="etc/group: no www-data group"):
        Host(legacy_root).www_data_gid()


def test_commands_are_searched_under_root_in_order(legacy_root: Path) -> None:
    host = Host(legacy_root)
    assert host.command("wazo-service") is None
    for directory in ("bin", "usr/sbin"):
        path = legacy_root / directory / "wazo-service"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/bin/sh\n")
        path.chmod(0o755)
    assert host.command("wazo-service") == legacy_root / "usr/sbin/wazo-service"


def test_resolution_reads_the_hosts_file_under_root(legacy_root: Path) -> None:
    host = Host(legacy_root)
    assert host.resolves_to_loopback("wazo.example.test") == "127.0.1.1"
    assert host.resolves_to_loopback("localhost") is None
    assert "no entry" in (host.resolves_to_loopback("other.example.test") or "")


def test_resolution_with_root_slash_uses_the_system_resolver() -> None:
    assert Host("/").resolves_to_loopback("localhost") is None


def test_conf_d_that_is_a_file(legacy_root: Path) -> None:
    conf_d = legacy_root / "etc/wazo-plugind/conf.d"
    conf_d.rmdir()
    conf_d.write_text("")
    with pytest.raises(HostError, match=f"^{conf_d}: is not a directory"):
        Host(legacy_root).conf_d_dirs()


def test_asterisk_tls_from_included_files(legacy_root: Path) -> None:
    """Wazo 18.13-22.06 ship http.conf as `#include http.d/*.conf`."""
    http_conf = legacy_root / "etc/asterisk/http.conf"
    (legacy_root / "etc/asterisk/http.d").mkdir()
    (legacy_root / "etc/asterisk/http.d/01-wazo.conf").write_text(http_conf.read_text()
                                                                   .replace("5040", "5041"))
    http_conf.write_text("#include http.d/*.conf\n")
    assert Endpoint("127.0.0.1", 5041, "asterisk") in Host(legacy_root).endpoints()


def test_whole_file_exec_is_a_computed_layer_not_an_error(legacy_root: Path) -> None:
    """wazo-phoned's packaged conf.d/50-authorized-subnets.yml is `!exec` with a `command` at
    the top of the file (wazo-platform/wazo-phoned, wazo-25.14)."""
    conf_d = legacy_root / "etc/xivo-auth/conf.d"
    (conf_d / "50-authorized-subnets.yml").write_text("!exec\ncommand: wazo-confgen x/config.yml\n")
    host = Host(legacy_root)
    assert Endpoint("127.0.0.1", 9497, "xivo-auth") in host.endpoints()
    assert [str(h) for h in host.computed] == ["!exec wazo-confgen x/config.yml"]
    assert not host.warnings


def test_absolute_conf_d_links_are_followed_inside_the_root(legacy_root: Path) -> None:
    """Packages ship conf.d links with absolute targets (wazo-auth's debian/wazo-auth.links:
    /var/lib/consul/default_xivo_consul_config.yml, wazo-19.17): read under the root, never
    the machine's own file."""
    client = legacy_root / "var/lib/consul/default_xivo_consul_config.yml"
    client.parent.mkdir(parents=True)
    client.write_text("consul:\n  verify: /usr/share/xivo-certs/server.crt\n")
    (legacy_root / "etc/wazo-plugind/conf.d/050-xivo-consul-config.yml").symlink_to(
        "/var/lib/consul/default_xivo_consul_config.yml")
    conf = Host(legacy_root).daemon_configs()["wazo-plugind"]
    assert conf["consul"] == {"verify": "/usr/share/xivo-certs/server.crt"}


def test_before_15_16_every_file_of_conf_d_is_read(legacy_root: Path) -> None:
    """xivo-lib-python reads every non-dot file of conf.d up to xivo-15.15 (the *.yml filter
    came in xivo-15.16): an admin's backup there is live configuration."""
    backup = legacy_root / "etc/xivo-auth/conf.d/020-port.yml.bak"
    backup.write_text("rest_api:\n  https:\n    port: 9999\n")
    version = legacy_root / "usr/share/xivo/XIVO-VERSION"
    version.parent.mkdir(parents=True, exist_ok=True)
    version.write_text("15.15\n")
    assert Endpoint("127.0.0.1", 9999, "xivo-auth") in Host(legacy_root).endpoints()
    version.write_text("15.16\n")
    assert Endpoint("127.0.0.1", 9497, "xivo-auth") in Host(legacy_root).endpoints()


def test_bytes_that_are_not_utf8_in_admin_files(legacy_root: Path) -> None:
    """An admin's accented comment saved as latin-1 (common.conf, /etc/group, conf.d)."""
    common = legacy_root / "etc/xivo/common.conf"
    common.write_bytes(b"# r\xe9seau du si\xe8ge\n" + common.read_bytes())
    group = legacy_root / "etc/group"
    group.write_bytes(b"# \xe9quipe\n" + group.read_bytes())
    bad = legacy_root / "etc/xivo-auth/conf.d/030-admin.yml"
    bad.write_bytes(b"# \xe9\ndebug: true\n")
    host = Host(legacy_root)
    assert host.fqdn() == "wazo.example.test"
    assert host.www_data_gid() == 33
    assert Endpoint("127.0.0.1", 9497, "xivo-auth") in host.endpoints()
    assert any(w.startswith(f"{bad}: not UTF-8 text at byte 2") for w in host.warnings)


def test_alias_bomb_is_refused_before_anything(legacy_root: Path) -> None:
    """Nine levels of nine aliases: 387 million values once expanded."""
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    custom = legacy_root / "etc/xivo/custom/custom-certificate.yml"
    custom.parent.mkdir(parents=True)
    custom.write_text("\n".join(levels) + "\n")
    with pytest.raises(HostError, match=f"^{custom}: its YAML aliases expand to more than"):
        overrides.desired_overrides(Host(legacy_root), "wazo.example.test")
    recursive = legacy_root / "etc/xivo-auth/conf.d/030-loop.yml"
    recursive.write_text("a: &a [*a]\n")
    host = Host(legacy_root)
    assert host.endpoints()
    assert any(w.startswith(f"{recursive}: its YAML aliases") for w in host.warnings)


def test_default_name_is_this_hosts_among_the_certificates(legacy_root: Path) -> None:
    """A mail relay in the SANs must not become the PBX's name (it would resolve to
    127.0.0.1 on the PBX)."""
    host = Host(legacy_root)
    assert host.pick_name(["mail.example.test", "wazo.example.test"]) == "wazo.example.test"
    assert host.pick_name(["pbx.example.org"]) == "pbx.example.org"
    assert host.pick_name(["mail.example.org", "sbc.example.org"]) is None


def test_special_files_in_conf_d_are_refused_unread(legacy_root: Path) -> None:
    """A FIFO would block the reader forever, a device would never end."""
    fifo = legacy_root / "etc/xivo-auth/conf.d/040-fifo.yml"
    os.mkfifo(fifo)
    (legacy_root / "etc/xivo-auth/conf.d/041-zero.yml").symlink_to("/dev/zero")
    host = Host(legacy_root)
    assert Endpoint("127.0.0.1", 9497, "xivo-auth") in host.endpoints()
    assert any(w.startswith(f"{fifo}: not a regular file") for w in host.warnings)

