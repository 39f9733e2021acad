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
from certbot_wazo.host import CUSTOM_FILE, LINK_NAME, Host

# Sections of the last upstream form of the procedure; consul spells its switch "verify".
SECTIONS = ("consul", "agentd", "ajam", "amid", "auth", "confd", "call_logd", "ctid_ng", "dird",
            "plugind", "websocketd")
HEADER = ("# Managed by certbot-wazo: services reach each other by the certificate's name and\n"
          "# verify it with the system trust store. Sections and keys you add are kept.\n")


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
