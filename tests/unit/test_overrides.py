"""The services' overrides: custom-certificate.yml wanted from any admin content, its 010 links in every
conf.d, and what upgrading to 19.01 leaves to remove."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from certbot_wazo import overrides
from certbot_wazo.errors import HostError
from certbot_wazo.files import LINK, FileState, apply_state, read_state
from certbot_wazo.host import CUSTOM_FILE, Host

NAME = "wazo.example.test"
# The owner an admin's file has: root:www-data when the tests run as root, else the caller's.
OWNER = (0, 33) if os.geteuid() == 0 else (os.geteuid(), os.getegid())
# Files certbot-wazo creates are root's: writing them needs root.
ROOT_OWNED = pytest.mark.skipif(os.geteuid() != 0, reason="writes files owned by root")


def test_overrides_from_scratch(legacy_root: Path) -> None:
    state = overrides.desired_overrides(Host(legacy_root), NAME)
    data = yaml.safe_load(state.data)
    assert list(data) == list(overrides.SECTIONS)
    assert data["consul"] == {"host": NAME, "verify": True}
    assert data["auth"] == {"host": NAME, "verify_certificate": True}


def test_overrides_keep_admin_keys(legacy_root: Path) -> None:
    path = legacy_root / CUSTOM_FILE.lstrip("/")
    path.parent.mkdir(parents=True)
    path.write_text("auth:\n  host: old.example.test\n  timeout: 30\nwebhookd:\n  debug: true\n")
    data = yaml.safe_load(overrides.desired_overrides(Host(legacy_root), NAME).data)
    assert data["auth"] == {"host": NAME, "timeout": 30, "verify_certificate": True}
    assert data["webhookd"] == {"debug": True}


def test_overrides_unchanged_when_already_right(legacy_root: Path) -> None:
    """A second deployment wants exactly what the file holds: bytes, mode and owner."""
    host = Host(legacy_root)
    path = host.path(CUSTOM_FILE)
    apply_state(path, FileState.file(b"# ours\nwebhookd:\n  debug: true\n", 0o640, *OWNER))
    apply_state(path, overrides.desired_overrides(host, NAME))
    assert overrides.desired_overrides(host, NAME) == read_state(path)
    assert read_state(path).mode == 0o640


@pytest.mark.parametrize("content, message", [
    ("auth: [\n", "not valid YAML"), ("- a\n- b\n", "not a YAML mapping"),
    ("auth: 3\n", "section 'auth' is not a mapping"),
])
def test_malformed_overrides(legacy_root: Path, content: str, message: str) -> None:
    path = legacy_root / CUSTOM_FILE.lstrip("/")
    path.parent.mkdir(parents=True)
    path.write_text(content)
    with pytest.raises(HostError, match=f"^{path}: {message}"):
        overrides.desired_overrides(Host(legacy_root), NAME)


@ROOT_OWNED
def test_links_go_into_every_conf_d_and_resolve(legacy_root: Path) -> None:
    host = Host(legacy_root)
    links = overrides.desired_links(host)
    assert {p.parent.parent.name for p, _ in links} == {"xivo-auth", "xivo-confd", "wazo-plugind",
                                                        "xivo-websocketd"}
    apply_state(host.path(CUSTOM_FILE), FileState.file(b"x: 1\n", 0o644))
    for path, state in links:
        assert state.kind == LINK
        apply_state(path, state)
        assert path.resolve() == host.path(CUSTOM_FILE)


def test_links_keep_the_documented_absolute_link(legacy_root: Path) -> None:
    link = legacy_root / "etc/xivo-auth/conf.d/010-custom-certificate.yml"
    os.symlink(CUSTOM_FILE, link)
    kept = dict(overrides.desired_links(Host(legacy_root)))[link]
    assert kept == FileState.link(CUSTOM_FILE)


def test_admin_file_where_the_link_goes(legacy_root: Path) -> None:
    link = legacy_root / "etc/xivo-auth/conf.d/010-custom-certificate.yml"
    link.write_text("auth: {}\n")
    with pytest.raises(HostError, match=f"^{link}: an admin's file"):
        overrides.desired_links(Host(legacy_root))


def test_foreign_or_dangling_link(legacy_root: Path) -> None:
    link = legacy_root / "etc/xivo-auth/conf.d/010-custom-certificate.yml"
    os.symlink("/nonexistent/elsewhere.yml", link)
    with pytest.raises(HostError, match=f"^{link}: links to /nonexistent/elsewhere.yml"):
        overrides.desired_links(Host(legacy_root))


@ROOT_OWNED
def test_absent_state_removes(legacy_root: Path) -> None:
    path = legacy_root / "etc/xivo/custom/x.yml"
    apply_state(path, FileState.file(b"a", 0o600))
    apply_state(path, FileState.absent())
    assert not path.exists()


def test_leftovers_remove_only_the_procedures_own_files(legacy_root: Path) -> None:
    host = Host(legacy_root)
    custom = host.path(CUSTOM_FILE)
    custom.parent.mkdir(parents=True)
    custom.write_text("auth:\n  host: pbx.example.test\n  verify_certificate: true\n")
    link = legacy_root / "etc/xivo-auth/conf.d/010-custom-certificate.yml"
    link.symlink_to(CUSTOM_FILE)
    removals, kept = overrides.leftovers(host)
    assert dict(removals) == {link: FileState.absent(), custom: FileState.absent()} and not kept
    custom.write_text("auth:\n  host: pbx.example.test\n  timeout: 30\n")
    removals, kept = overrides.leftovers(host)
    assert dict(removals) == {link: FileState.absent()}
    assert kept == [f"{custom}: kept, it holds more than the procedure's overrides "
                    "(auth.timeout); remove the host/verify keys yourself"]


def test_comments_of_the_overrides_survive(legacy_root: Path) -> None:
    path = legacy_root / CUSTOM_FILE.lstrip("/")
    path.parent.mkdir(parents=True)
    path.write_text("# ticket 4521: auth timeout raised by Paul\nauth:\n    host: old.example.test"
                    "  # the old name\n    timeout: 30  # seconds\n\n# our own daemon\n"
                    "webhookd:\n  debug: true\n")
    text = overrides.desired_overrides(Host(legacy_root), NAME).data.decode()
    assert text.startswith("# ticket 4521: auth timeout raised by Paul\nauth:\n"
                           f"    host: {NAME}  # the old name\n    timeout: 30  # seconds\n"
                           "    verify_certificate: true\n\n# our own daemon\nwebhookd:\n")
    data = yaml.safe_load(text)
    assert data["auth"] == {"host": NAME, "timeout": 30, "verify_certificate": True}
    assert data["consul"] == {"host": NAME, "verify": True}


# -- whether a host needs the overrides ----------------------------------------------------------
def no_peer_verifies(root: Path) -> None:
    """No daemon of the tree verifies its peers against server.crt any more."""
    for config in root.glob("etc/*/config.yml"):
        config.write_text("\n".join(line for line in config.read_text().splitlines()
                                    if "verify" not in line) + "\n")


def version(root: Path, release: str) -> None:
    path = root / "usr/share/xivo/XIVO-VERSION"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{release}\n")


def test_a_modern_host_never_gets_the_overrides(legacy_root: Path) -> None:
    assert overrides.wanted(Host(legacy_root), "auto", "modern") is False


@pytest.mark.parametrize("release, wanted", [("15.17", True), ("16.16", True), ("18.14", True),
                                             (None, True)])
def test_legacy_hosts_whose_daemons_verify_server_crt_get_them(legacy_root: Path,
                                                               release: str, wanted: bool) -> None:
    """The testdata's daemons verify server.crt: whatever the release, a CA-issued pair there
    needs the overrides (else they stop trusting each other)."""
    if release:
        version(legacy_root, release)
    assert overrides.wanted(Host(legacy_root), "auto", "legacy") is wanted


def test_replace_files_releases_without_verifying_peers_do_not(legacy_root: Path) -> None:
    """15.12-15.17: upstream's procedure replaced the pair only."""
    version(legacy_root, "15.12")
    no_peer_verifies(legacy_root)
    assert overrides.wanted(Host(legacy_root), "auto", "legacy") is False
    assert overrides.wanted(Host(legacy_root), "legacy", "legacy") is True  # forced


def test_unknown_release_keeps_them(legacy_root: Path) -> None:
    no_peer_verifies(legacy_root)
    assert overrides.wanted(Host(legacy_root), "auto", "legacy") is True


def test_upgraded_hosts_drop_the_old_procedures_files(legacy_root: Path) -> None:
    """19.01+: upstream asks to revert the overrides once nothing verifies server.crt."""
    version(legacy_root, "19.17")
    assert overrides.to_remove(Host(legacy_root), "auto", "modern") is True
    version(legacy_root, "18.14")
    assert overrides.to_remove(Host(legacy_root), "auto", "modern") is False


def test_a_section_verifying_server_crt_outside_upstreams_list_is_switched_too(
        legacy_root: Path) -> None:
    """wazo-confd's provd client at 19.x: a code default upstream's page never listed."""
    (legacy_root / "etc/xivo-confd/config.yml").write_text(
        "provd:\n  host: localhost\n  verify_certificate: /usr/share/xivo-certs/server.crt\n")
    data = yaml.safe_load(overrides.desired_overrides(Host(legacy_root), NAME).data)
    assert data["provd"] == {"host": NAME, "verify_certificate": True}


def test_a_flow_style_file_is_rewritten_whole_and_still_right(legacy_root: Path) -> None:
    """`auth: {}` is not the plain layout: the safe path rewrites the file, keys kept."""
    path = legacy_root / CUSTOM_FILE.lstrip("/")
    path.parent.mkdir(parents=True)
    path.write_text("auth: {timeout: 30}\n")
    text = overrides.desired_overrides(Host(legacy_root), NAME).data.decode()
    assert text.startswith(overrides.HEADER)
    assert yaml.safe_load(text)["auth"] == {"timeout": 30, "host": NAME,
                                            "verify_certificate": True}


def test_link_target_is_relative_to_each_conf_d(legacy_root: Path) -> None:
    host = Host(legacy_root)
    conf_d = legacy_root / "etc/xivo-auth/conf.d"
    assert overrides.link_target(host, conf_d) == "../../xivo/custom/custom-certificate.yml"


def test_leftovers_keep_a_damaged_overrides_file_and_say_so(legacy_root: Path) -> None:
    custom = legacy_root / CUSTOM_FILE.lstrip("/")
    custom.parent.mkdir(parents=True)
    custom.write_text("auth: [\n")
    removals, kept = overrides.leftovers(Host(legacy_root))
    assert custom not in dict(removals)
    assert len(kept) == 1 and kept[0].startswith(f"{custom}: not valid YAML")
    assert kept[0].endswith("; kept")


def test_leftovers_leave_a_foreign_link_alone(legacy_root: Path) -> None:
    link = legacy_root / "etc/xivo-auth/conf.d/010-custom-certificate.yml"
    link.symlink_to("/etc/elsewhere.yml")
    removals, _ = overrides.leftovers(Host(legacy_root))
    assert link not in dict(removals)
