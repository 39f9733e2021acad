"""The services' overrides: /etc/xivo/custom/custom-certificate.yml and its 010 links in every conf.d."""
from __future__ import annotations

import os
import posixpath
from pathlib import Path
from typing import Any

import yaml

from certbot_wazo import wazoconfig
from certbot_wazo.errors import HostError
from certbot_wazo.files import ABSENT, FILE, LINK, FileState, read_state
from certbot_wazo.host import CUSTOM_FILE, LEGACY, LINK_NAME, Host

# Sections of the last upstream form of the procedure; consul spells its switch "verify".
SECTIONS = ("consul", "agentd", "ajam", "amid", "auth", "confd", "call_logd", "ctid_ng", "dird",
            "plugind", "websocketd")
HEADER = ("# Managed by certbot-wazo: services reach each other by the certificate's name and\n"
          "# verify it with the system trust store. Sections and keys you add are kept.\n")


def wanted(host: Host, profile: str, generation: str) -> bool:
    """Whether the host needs the overrides: upstream's page asked for them from 15.18 to 18.14;
    daemons of 19.x-21.x still verify server.crt (their packaged config.yml), so they need them
    too once server.crt is CA-issued; a forced --profile legacy, or an unknown release, keeps
    them.

    :raises HostError: a daemon configuration is malformed
    """
    if generation != LEGACY:
        return False
    family = host.family()
    return profile == LEGACY or family is None or family.overrides or \
        bool(host.peers_verifying_pair())


def to_remove(host: Host, profile: str, generation: str) -> bool:
    """Whether upstream asks this host to drop the old procedure's files (19.01+, not needed)."""
    family = host.family()
    return family is not None and family.name == "nginx-only" and \
        not wanted(host, profile, generation)


def desired_overrides(host: Host, hostname: str) -> FileState:
    """custom-certificate.yml with host and verification set in every section, admin keys kept.

    :raises HostError: the existing file is a symlink or not a YAML mapping of sections
    """
    path = host.path(CUSTOM_FILE)
    current = read_state(path)
    if current.kind == LINK:
        raise HostError(f"{path}: is a symlink (replace it with a regular file)")
    data: dict[str, Any] = wazoconfig.load_yaml(path) if current.kind == FILE else {}
    changed = current.kind == ABSENT
    # Upstream's list, plus every section a daemon of this host verifies against server.crt
    # (e.g. wazo-confd's provd client at 19.x, a code default upstream's page never listed).
    sections = dict.fromkeys(SECTIONS, "")
    sections.update((s, k) for s, k in host.verifying_sections().items() if s not in sections)
    for section, verify_key in sections.items():
        entry = data.get(section)
        if entry is None:
            entry = {}
        if not isinstance(entry, dict):
            raise HostError(f"{path}: section '{section}' is not a mapping (make it "
                            f"'{section}:' followed by indented keys, or remove it)")
        key = verify_key or ("verify" if section == "consul" else "verify_certificate")
        wanted = {"host": hostname, key: True}
        for key, value in wanted.items():
            if entry.get(key) != value or section not in data:
                entry[key] = value
                changed = True
        data[section] = entry
    if not changed:
        return current
    text = HEADER + yaml.safe_dump(data, default_flow_style=False, sort_keys=False)
    mode = current.mode if current.kind == FILE else 0o644
    return FileState.file(text.encode(), mode, current.uid, current.gid)


def link_target(host: Host, conf_d: Path) -> str:
    """The relative link from a conf.d to the overrides file (valid under any root)."""
    return os.path.relpath(host.path(CUSTOM_FILE), conf_d)


def _links_to_overrides(host: Host, conf_d: Path, target: str) -> bool:
    wazo_conf_d = "/" + str(conf_d.relative_to(host.root))
    return posixpath.normpath(posixpath.join(wazo_conf_d, target)) == CUSTOM_FILE


def desired_links(host: Host) -> list[tuple[Path, FileState]]:
    """The 010-custom-certificate.yml link of every conf.d (an existing link to the file is kept).

    :raises HostError: something else stands where a link goes
    """
    wanted = []
    for conf_d in host.conf_d_dirs():
        link = conf_d / LINK_NAME
        current = read_state(link)
        if current.kind == LINK and _links_to_overrides(host, conf_d, current.target):
            wanted.append((link, current))
        elif current.kind == LINK:
            raise HostError(f"{link}: links to {current.target}, not to {CUSTOM_FILE} "
                            "(remove the link; certbot-wazo will create its own)")
        elif current.kind == FILE:
            raise HostError(f"{link}: an admin's file stands where the overrides link goes "
                            f"(merge its content into {CUSTOM_FILE} and remove it)")
        else:
            wanted.append((link, FileState.link(link_target(host, conf_d))))
    return wanted


OVERRIDE_KEYS = {"host", "verify_certificate", "verify"}


def leftovers(host: Host) -> tuple[list[tuple[Path, FileState]], list[str]]:
    """What upstream asked admins to remove when upgrading to 19.01 (wazo-doc wazo-19.01,
    source/system/https_certificate.rst, "Revert previous custom HTTPS certificate
    configuration"): the 010 links, custom-certificate.yml, the custom hosts template.

    Only what is nothing but the procedure's is removed; what holds more is kept and named.

    :returns: the removals, and a note for each file kept
    """
    removals: list[tuple[Path, FileState]] = []
    kept: list[str] = []
    for conf_d in host.conf_d_dirs():
        link = conf_d / LINK_NAME
        state = read_state(link)
        if state.kind == LINK and _links_to_overrides(host, conf_d, state.target):
            removals.append((link, FileState.absent()))
    path = host.path(CUSTOM_FILE)
    if read_state(path).kind == FILE:
        try:
            data = wazoconfig.load_yaml(path)
        except HostError as exc:
            kept.append(f"{exc}; kept")
            data = None
        if data is not None:
            extra = sorted(f"{section}.{key}" for section, value in data.items()
                           for key in (value if isinstance(value, dict) else {"": None})
                           if key not in OVERRIDE_KEYS)
            if extra:
                kept.append(f"{path}: kept, it holds more than the procedure's overrides "
                            f"({', '.join(extra[:3])}); remove the host/verify keys yourself")
            else:
                removals.append((path, FileState.absent()))
    return removals, kept
