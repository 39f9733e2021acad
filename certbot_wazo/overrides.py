"""The services' overrides: /etc/xivo/custom/custom-certificate.yml and its 010 links in every conf.d."""
from __future__ import annotations

import os
import posixpath
import re
from pathlib import Path
from typing import Any, Optional

import yaml

from certbot_wazo import hosts, wazoconfig
from certbot_wazo.errors import HostError
from certbot_wazo.files import ABSENT, FILE, LINK, FileState, read_state
from certbot_wazo.host import CUSTOM_FILE, HOSTS_CUSTOM, LEGACY, LINK_NAME, Host

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
    edits: dict[str, dict[str, Any]] = {}
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
                edits.setdefault(section, {})[key] = value
                changed = True
        data[section] = entry
    if not changed:
        return current
    text = None
    if current.kind == FILE:  # keep the admin's comments and layout where the file allows it
        text = _edit_in_place(current.data.decode("utf-8", errors="surrogateescape"), edits)
        if text is not None and _loads(text) != data:
            text = None
    if text is None:
        text = HEADER + yaml.safe_dump(data, default_flow_style=False, sort_keys=False)
    mode = current.mode if current.kind == FILE else 0o644
    return FileState.file(text.encode("utf-8", errors="surrogateescape"), mode, current.uid,
                          current.gid)


def _loads(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return None


_HEADER_LINE = re.compile(r"^(?P<name>[A-Za-z0-9_][A-Za-z0-9_.-]*):[ \t]*(#.*)?$")


def _edit_in_place(text: str, edits: dict[str, dict[str, Any]]) -> Optional[str]:
    """The file with only the changed keys rewritten or added, comments and order kept; None
    when its layout is not the plain one (block sections of `key: value` lines)."""
    lines = text.split("\n")
    for section, changes in edits.items():
        start = next((i for i, line in enumerate(lines)
                      if (m := _HEADER_LINE.match(line)) and m.group("name") == section), None)
        if start is None:
            if any(line.startswith((f"{section}:", f"'{section}'", f'"{section}"'))
                   for line in lines):
                return None  # `auth: {}` or a quoted key: let the safe path rewrite it
            while lines and lines[-1] == "":
                lines.pop()
            lines += [f"{section}:"] + [f"  {_item(k, v)}" for k, v in changes.items()] + [""]
            continue
        end = start + 1
        while end < len(lines) and (not lines[end].strip() or lines[end][0] in " \t#"):
            end += 1
        children = [line for line in lines[start + 1:end]
                    if line.strip() and not line.lstrip().startswith("#")]
        indent = children[0][:len(children[0]) - len(children[0].lstrip())] if children \
            else "  "
        # After the section's last indented line (a comment at column 0 introduces what follows).
        last = max((i for i in range(start + 1, end)
                    if lines[i].strip() and lines[i][0] in " \t"), default=start)
        for key, value in changes.items():
            pattern = re.compile(rf"^{re.escape(indent)}{re.escape(key)}:(?:[ \t]+[^#\n]*?)?"
                                 rf"(?P<comment>[ \t]+#.*)?$")
            found = [i for i in range(start + 1, end) if pattern.match(lines[i])]
            if len(found) > 1:
                return None
            if found:
                comment = pattern.match(lines[found[0]]).group("comment") or ""  # type: ignore[union-attr]
                lines[found[0]] = f"{indent}{_item(key, value)}{comment}"
            else:
                lines.insert(last + 1, f"{indent}{_item(key, value)}")
                last += 1
                end += 1
    return "\n".join(lines)


def _item(key: str, value: Any) -> str:
    return yaml.safe_dump({key: value}, default_flow_style=False).strip()


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

    :returns: the removals (the hosts template last), and a note for each file kept
    :raises HostError: a conf.d is not a directory
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
            extra = sorted(f"{section}.{key}" if isinstance(value, dict) else section
                           for section, value in data.items()
                           for key in (value if isinstance(value, dict) else [""])
                           if key not in OVERRIDE_KEYS)
            if extra:
                kept.append(f"{path}: kept, it holds more than the procedure's overrides "
                            f"({', '.join(extra[:3])}); remove the host/verify keys yourself")
            else:
                removals.append((path, FileState.absent()))
    template = hosts.leftover_template(host)
    if template is not None:
        removals.append((host.path(HOSTS_CUSTOM), template))
    return removals, kept
