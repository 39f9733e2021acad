"""Property-based: whatever the admin put in custom-certificate.yml or in the custom hosts template,
a deployment keeps it (only the keys and the line certbot-wazo owns change), a second deployment
changes nothing, and the undo log (Journal.begin + apply_state + Journal.restore, what a revert or
a rollback does) gives back the admin's exact bytes, mode and owner."""
from __future__ import annotations

import ipaddress
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from certbot_wazo import hosts, overrides
from certbot_wazo.files import FILE, FileState, apply_state, read_state
from certbot_wazo.host import CUSTOM_FILE, HOSTS_BASE, HOSTS_CUSTOM, Host
from certbot_wazo.journal import Journal
from certbot_wazo.wazoconfig import hosts_address
from tests.unit.records import RECORD

NAME = "wazo.example.test"
PROPERTY = settings(max_examples=50, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture,
                                           HealthCheck.too_slow])

# -- strategies ----------------------------------------------------------------------------------
scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2 ** 63), 2 ** 63),
                    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=24))
keys = st.text(min_size=1, max_size=16)
sections = st.dictionaries(keys, scalars, max_size=5)
# Sections of certbot-wazo's (with admin keys beside its own) and the admin's own, plus top-level
# scalar keys; a top-level scalar may not take the name of a section certbot-wazo manages.
admin_yaml = st.builds(
    lambda ours, theirs, top: {**top, **theirs, **ours},
    st.dictionaries(st.sampled_from(overrides.SECTIONS), sections, max_size=4),
    st.dictionaries(keys.filter(lambda k: k not in overrides.SECTIONS), sections, max_size=4),
    st.dictionaries(keys.filter(lambda k: k not in overrides.SECTIONS), scalars, max_size=3),
)
modes = st.sampled_from([0o644, 0o640, 0o600])
groups = st.sampled_from([0, 33])

label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
dns_names = st.builds(lambda labels: ".".join(labels), st.lists(label, min_size=1, max_size=4)) \
    .filter(lambda n: n.lower() != NAME)
addresses = st.ip_addresses().map(str).filter(lambda a: ipaddress.ip_address(a).version == 6
                                              or not a.startswith("127.0.1.1"))
comments = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp"),
                                          blacklist_characters="#\x85"), max_size=30)
hosts_lines = st.one_of(
    st.builds(lambda a, ns, sep, c: a + sep + " ".join(ns) + (f"\t# {c}" if c else ""),
              addresses, st.lists(dns_names, min_size=1, max_size=3),
              st.sampled_from(["\t", " ", "    "]), comments),
    st.builds(lambda c: f"# {c}", comments),
    st.just(""),
)


# -- helpers -------------------------------------------------------------------------------------
def fresh(root: Path) -> Host:
    """The legacy tree without anything a previous example wrote."""
    for path in ("etc/xivo/custom", "etc/xivo/custom-templates", "var/lib/certbot-wazo"):
        shutil.rmtree(root / path, ignore_errors=True)
    return Host(root)


def write_admin(host: Host, wazo_path: str, data: bytes, mode: int, gid: int) -> FileState:
    state = FileState.file(data, mode, 0, gid)
    apply_state(host.path(wazo_path), state)
    return state


def round_trip(host: Host, desired: list[tuple[Path, FileState]]) -> dict[str, FileState]:
    """Deploy the desired states under the undo log, then undo; what each path holds after."""
    journal = Journal(host.path("/var/lib/certbot-wazo"), host.path)
    wazo_paths = ["/" + str(p.relative_to(host.root)) for p, _ in desired]
    journal.begin(wazo_paths, RECORD)
    for path, state in desired:
        apply_state(path, state)
    journal.restore(journal.transaction)
    journal.transaction.remove()
    return {p: read_state(host.path(p)) for p in wazo_paths}


def owned(section: str) -> set[str]:
    return {"host", "verify" if section == "consul" else "verify_certificate"}


# -- custom-certificate.yml ----------------------------------------------------------------------
@PROPERTY
@given(admin=admin_yaml, mode=modes, gid=groups)
def test_overrides_keep_every_admin_key_and_round_trip(legacy_root: Path, admin: dict[str, Any],
                                                       mode: int, gid: int) -> None:
    host = fresh(legacy_root)
    text = yaml.safe_dump(admin, default_flow_style=False, sort_keys=False)
    before = write_admin(host, CUSTOM_FILE, text.encode(), mode, gid)

    desired = overrides.desired_overrides(host, NAME)
    deployed = yaml.safe_load(desired.data)
    for section, value in admin.items():
        if isinstance(value, dict):
            for key, item in value.items():
                if not (section in overrides.SECTIONS and key in owned(section)):
                    assert deployed[section][key] == item, (section, key)
        else:
            assert deployed[section] == value, section
    for section in overrides.SECTIONS:
        assert {k: deployed[section][k] for k in owned(section)} == \
            {k: (NAME if k == "host" else True) for k in owned(section)}
    assert (desired.mode, desired.uid, desired.gid) == (mode, 0, gid)

    # A second deployment changes nothing; the undo gives back the admin's exact file.
    apply_state(host.path(CUSTOM_FILE), desired)
    assert overrides.desired_overrides(host, NAME) == read_state(host.path(CUSTOM_FILE))
    write_admin(host, CUSTOM_FILE, text.encode(), mode, gid)
    links = overrides.desired_links(host)
    assert round_trip(host, [(host.path(CUSTOM_FILE), desired), *links])[CUSTOM_FILE] == before
    assert all(read_state(link).kind == "absent" for link, _ in links)


# -- the custom hosts template -------------------------------------------------------------------
@PROPERTY
@given(lines=st.lists(hosts_lines, max_size=12), with_base=st.booleans(), mode=modes,
       gid=groups)
def test_hosts_template_keeps_every_admin_line_and_round_trips(
        legacy_root: Path, lines: list[str], with_base: bool, mode: int, gid: int) -> None:
    host = fresh(legacy_root)
    base = host.path("/usr/share/xivo-config/templates/system/etc/hosts").read_text()
    source = (base if with_base else "") + "".join(line + "\n" for line in lines)
    before = write_admin(host, HOSTS_CUSTOM, source.encode(), mode, gid)

    desired = hosts.desired_template(host, NAME)
    assert desired.kind == FILE and (desired.mode, desired.gid) == (mode, gid)
    text = desired.data.decode()
    expected = [re.sub(r"^127\.0\.1\.1(?=\s)", "127.0.0.1", line) for line in source.splitlines()]
    assert text.splitlines()[:len(expected)] == expected          # every admin line, in order
    added = [line for line in text.splitlines()[len(expected):] if line]  # "" when source is
    assert added in ([], [f"127.0.0.1\t{NAME}\t{hosts.MARK}"])            # empty: a blank line
    rendered = hosts.render(text, host.common_conf())
    assert hosts_address(rendered, NAME) == "127.0.0.1"
    for line in lines:  # every name the admin mapped still resolves where the admin said
        fields = line.split("#", 1)[0].split()
        if len(fields) >= 2 and ":" not in fields[0]:
            for name in fields[1:]:
                first = hosts_address(source, name)
                assert hosts_address(rendered, name) == first, name

    apply_state(host.path(HOSTS_CUSTOM), desired)
    assert hosts.desired_template(host, NAME) == read_state(host.path(HOSTS_CUSTOM))
    write_admin(host, HOSTS_CUSTOM, source.encode(), mode, gid)
    assert round_trip(host, [(host.path(HOSTS_CUSTOM), desired)])[HOSTS_CUSTOM] == before


@PROPERTY
@given(lines=st.lists(hosts_lines, max_size=6))
def test_no_admin_template_starts_from_the_base_one(legacy_root: Path, lines: list[str]) -> None:
    """Without a custom template the base one (whatever the release's package holds) is taken
    whole; the undo removes what was created."""
    host = fresh(legacy_root)
    base = host.path(HOSTS_BASE)
    packaged = base.read_bytes()
    source = packaged + "".join(f"{line}\n" for line in lines).encode()
    base.write_bytes(source)
    try:
        desired = hosts.desired_template(host, NAME)
    finally:
        base.write_bytes(packaged)
    assert desired.data.startswith(source.replace(b"127.0.1.1\t", b"127.0.0.1\t"))
    assert hosts_address(hosts.render(desired.data.decode(), host.common_conf()), NAME) == \
        "127.0.0.1"
    assert round_trip(host, [(host.path(HOSTS_CUSTOM), desired)])[HOSTS_CUSTOM].kind == "absent"


@pytest.mark.parametrize("comment", [b"# caf\xe9 (latin-1)", b"# page\x0cbreak",
                                     "# line\u2028separator".encode()],
                         ids=["latin-1", "form-feed", "unicode-line-separator"])
def test_hosts_template_keeps_the_admins_bytes(legacy_root: Path, comment: bytes) -> None:
    host = fresh(legacy_root)
    source = b"127.0.0.1\tlocalhost\n" + comment + b"\n192.0.2.7\tsbc.example.test\n"
    write_admin(host, HOSTS_CUSTOM, source, 0o644, 0)
    assert hosts.desired_template(host, NAME).data.startswith(source)
