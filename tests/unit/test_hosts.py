"""The custom hosts template that makes the certificate's name resolve to 127.0.0.1, from the base one or
the admin's."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from certbot_wazo import hosts
from certbot_wazo.errors import HostError
from certbot_wazo.files import FileState, apply_state, read_state
from certbot_wazo.host import HOSTS_CUSTOM, Host
from certbot_wazo.wazoconfig import hosts_address

NAME = "wazo.example.test"
# The owner an admin's file has: root:www-data when the tests run as root, else the caller's.
OWNER = (0, 33) if os.geteuid() == 0 else (os.geteuid(), os.getegid())
# Files certbot-wazo creates are root's: writing them needs root.
ROOT_OWNED = pytest.mark.skipif(os.geteuid() != 0, reason="writes files owned by root")


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
    apply_state(host.path(HOSTS_CUSTOM), FileState.file(b"127.0.1.1\twazo\n", 0o600, *OWNER))
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


def test_leftover_hosts_template_only_when_it_is_the_procedures(legacy_root: Path) -> None:
    host = Host(legacy_root)
    base = host.path("/usr/share/xivo-config/templates/system/etc/hosts").read_text()
    template = host.path(HOSTS_CUSTOM)
    template.parent.mkdir(parents=True)
    template.write_text(base.replace("127.0.1.1", "127.0.0.1"))
    assert hosts.leftover_template(host) == FileState.absent()
    template.write_text(base + "10.0.0.5\tsbc.example.test\n")
    assert hosts.leftover_template(host) is None


@ROOT_OWNED
def test_a_new_name_replaces_the_previous_names_mapping(legacy_root: Path) -> None:
    host = Host(legacy_root)
    apply_state(host.path(HOSTS_CUSTOM), hosts.desired_template(host, "old.example.test"))
    assert b"old.example.test" in host.path(HOSTS_CUSTOM).read_bytes()
    text = hosts.desired_template(host, "new.example.test").data.decode()
    assert "old.example.test" not in text
    assert hosts_address(text, "new.example.test") == "127.0.0.1"


def test_render_substitutes_known_placeholders_and_leaves_others() -> None:
    assert hosts.render("#XIVO_HOSTNAME#.#XIVO_DOMAIN# #XIVO_NOPE# #lower#",
                        {"XIVO_HOSTNAME": "wazo", "XIVO_DOMAIN": "example.test"}) == \
        "wazo.example.test #XIVO_NOPE# #lower#"


def test_a_symlinked_custom_template_is_refused(legacy_root: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("127.0.0.1 localhost\n")
    custom = legacy_root / HOSTS_CUSTOM.lstrip("/")
    custom.parent.mkdir(parents=True)
    custom.symlink_to(victim)
    with pytest.raises(HostError, match=f"^{custom}: is a symlink \\(replace it with a regular "
                       "file\\)$"):
        hosts.desired_template(Host(legacy_root), NAME)
    assert victim.read_text() == "127.0.0.1 localhost\n"


def test_a_new_template_is_world_readable(legacy_root: Path) -> None:
    state = hosts.desired_template(Host(legacy_root), NAME)
    assert state.mode == 0o644


def test_no_leftover_template_without_one_or_without_the_base(legacy_root: Path) -> None:
    host = Host(legacy_root)
    assert hosts.leftover_template(host) is None
    template = host.path(HOSTS_CUSTOM)
    template.parent.mkdir(parents=True)
    base = host.path("/usr/share/xivo-config/templates/system/etc/hosts")
    template.write_text(base.read_text())
    assert hosts.leftover_template(host) == FileState.absent()  # the base unchanged is ours too
    base.unlink()
    assert hosts.leftover_template(host) is None


@ROOT_OWNED
def test_the_marked_line_is_the_procedures(legacy_root: Path) -> None:
    """What certbot-wazo added (its marked line) does not count as the admin's."""
    host = Host(legacy_root)
    apply_state(host.path(HOSTS_CUSTOM), hosts.desired_template(host, "pbx.example.org"))
    assert hosts.MARK in host.path(HOSTS_CUSTOM).read_text()
    assert hosts.leftover_template(host) == FileState.absent()


def test_an_admins_line_that_mentions_the_mark_is_theirs(legacy_root: Path) -> None:
    """Only certbot-wazo's own line (127.0.0.1, one name, the mark) is replaced; an admin's
    line carrying the same comment is kept, byte for byte (hypothesis found this one)."""
    host = Host(legacy_root)
    custom = host.path(HOSTS_CUSTOM)
    custom.parent.mkdir(parents=True, exist_ok=True)
    admin = f"0.0.0.0\tblocked.example.test\t{hosts.MARK}"
    custom.write_text(f"127.0.0.1\tlocalhost\n{admin}\n127.0.0.1\told.example.test\t{hosts.MARK}\n")
    text = hosts.desired_template(host, "wazo.example.test").data.decode()
    assert admin in text.split("\n") and "old.example.test" not in text
