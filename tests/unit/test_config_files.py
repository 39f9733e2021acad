"""The overrides file, its conf.d links and the hosts template: desired content from any admin content."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from certbot_wazo import hosts, overrides
from certbot_wazo.errors import HostError
from certbot_wazo.files import ABSENT, LINK, FileState, apply_state, read_state
from certbot_wazo.host import CUSTOM_FILE, HOSTS_CUSTOM, Host
from certbot_wazo.wazoconfig import hosts_address

NAME = "wazo.example.test"


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
    apply_state(path, FileState.file(b"# ours\nwebhookd:\n  debug: true\n", 0o640, 0, 33))
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


def rendered(host: Host, state: FileState) -> str:
    return hosts.render(state.data.decode(), host.common_conf())


def test_template_from_base_when_name_is_the_fqdn(legacy_root: Path) -> None:
    host = Host(legacy_root)
    state = hosts.desired_template(host, NAME)
    assert "127.0.1.1" not in state.data.decode()
    assert hosts.MARK not in state.data.decode()
    assert hosts_address(rendered(host, state), NAME) == "127.0.0.1"


def test_template_maps_a_name_that_is_not_the_fqdn(legacy_root: Path) -> None:
    host = Host(legacy_root)
    state = hosts.desired_template(host, "pbx.example.org")
    assert hosts_address(rendered(host, state), "pbx.example.org") == "127.0.0.1"
    assert hosts_address(rendered(host, state), NAME) == "127.0.0.1"


def test_template_keeps_the_admins_custom_template(legacy_root: Path) -> None:
    host = Host(legacy_root)
    custom = host.path(HOSTS_CUSTOM)
    custom.parent.mkdir(parents=True)
    custom.write_text("127.0.0.1\tlocalhost\n192.0.2.50\tsbc.example.test\n")
    text = hosts.desired_template(host, NAME).data.decode()
    assert "192.0.2.50\tsbc.example.test" in text
    assert hosts_address(text, NAME) == "127.0.0.1"


def test_template_unchanged_when_already_right(legacy_root: Path) -> None:
    """A second deployment wants exactly what the template holds: bytes, mode and owner."""
    host = Host(legacy_root)
    apply_state(host.path(HOSTS_CUSTOM), FileState.file(b"127.0.1.1\twazo\n", 0o600, 0, 33))
    apply_state(host.path(HOSTS_CUSTOM), hosts.desired_template(host, NAME))
    assert hosts.desired_template(host, NAME) == read_state(host.path(HOSTS_CUSTOM))
    assert read_state(host.path(HOSTS_CUSTOM)).mode == 0o600


def test_template_unknown_placeholder(legacy_root: Path) -> None:
    base = legacy_root / "usr/share/xivo-config/templates/system/etc/hosts"
    base.write_text(base.read_text() + "#XIVO_NOPE#\tx\n")
    with pytest.raises(HostError, match=f"^{base}: unknown placeholder #XIVO_NOPE#"):
        hosts.desired_template(Host(legacy_root), NAME)


def test_template_missing_base(legacy_root: Path) -> None:
    base = legacy_root / "usr/share/xivo-config/templates/system/etc/hosts"
    base.unlink()
    with pytest.raises(HostError, match=f"^{base}: the base hosts template is missing"):
        hosts.desired_template(Host(legacy_root), NAME)


def test_absent_state_removes(legacy_root: Path) -> None:
    path = legacy_root / "etc/xivo/custom/x.yml"
    apply_state(path, FileState.file(b"a", 0o600))
    apply_state(path, FileState.absent())
    assert not path.exists() and FileState.absent().kind == ABSENT


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


def test_leftover_hosts_template_only_when_it_is_the_procedures(legacy_root: Path) -> None:
    host = Host(legacy_root)
    base = host.path("/usr/share/xivo-config/templates/system/etc/hosts").read_text()
    template = host.path(HOSTS_CUSTOM)
    template.parent.mkdir(parents=True)
    template.write_text(base.replace("127.0.1.1", "127.0.0.1"))
    assert hosts.leftover_template(host) == FileState.absent()
    template.write_text(base + "10.0.0.5\tsbc.example.test\n")
    assert hosts.leftover_template(host) is None


def test_a_new_name_replaces_the_previous_names_mapping(legacy_root: Path) -> None:
    host = Host(legacy_root)
    apply_state(host.path(HOSTS_CUSTOM), hosts.desired_template(host, "old.example.test"))
    assert b"old.example.test" in host.path(HOSTS_CUSTOM).read_bytes()
    text = hosts.desired_template(host, "new.example.test").data.decode()
    assert "old.example.test" not in text
    assert hosts_address(text, "new.example.test") == "127.0.0.1"


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
