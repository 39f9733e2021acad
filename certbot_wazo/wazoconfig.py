"""Read Wazo's configuration: daemons' YAML (merged like xivo-lib-python), common.conf, nginx, asterisk."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterator

import yaml

from certbot_wazo.errors import HostError

# libyaml's safe loader when PyYAML has it (Debian's and PyPI's do): ~10x faster on the dozens
# of daemon files a Wazo host has.
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_yaml(path: Path) -> dict[str, Any]:
    """A YAML mapping from a file (an empty file is an empty mapping).

    :raises HostError: the file cannot be read or is not a YAML mapping
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise HostError(f"{path}: cannot be read ({exc.strerror}; fix or remove it)") from None
    try:
        data = yaml.load(text, Loader=_SAFE_LOADER)  # noqa: S506 - a safe loader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise HostError(f"{path}: not valid YAML{where} (fix the syntax or remove "
                        "the file)") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise HostError(f"{path}: not a YAML mapping of sections (fix or remove the file)")
    return data


def _deep_merge(first: dict[str, Any], later: dict[str, Any]) -> dict[str, Any]:
    """Merge two mappings; on conflicts the FIRST wins (xivo's ChainMap semantics)."""
    merged = dict(later)
    for key, value in first.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(value, merged[key])
        else:
            merged[key] = value
    return merged


def conf_d_files(conf_d: Path) -> list[Path]:
    """The files a Wazo daemon reads from conf.d: *.yml, no dotfiles, sorted by name."""
    if not conf_d.is_dir():
        return []
    return sorted(p for p in conf_d.iterdir()
                  if p.name.endswith(".yml") and not p.name.startswith(".") and p.exists())


def daemon_config(directory: Path) -> dict[str, Any]:
    """A daemon's effective configuration: conf.d files in order, then config.yml, first wins.

    :raises HostError: one of the files is not valid YAML
    """
    layers = [load_yaml(p) for p in conf_d_files(directory / "conf.d")]
    if (directory / "config.yml").is_file():
        layers.append(load_yaml(directory / "config.yml"))
    merged: dict[str, Any] = {}
    for layer in reversed(layers):
        merged = _deep_merge(layer, merged)
    return merged


def walk_values(data: Any, key: str) -> Iterator[Any]:
    """Every value stored under key anywhere in nested mappings."""
    if isinstance(data, dict):
        for k, v in data.items():
            if k == key:
                yield v
            yield from walk_values(v, key)


def read_shell_vars(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of a shell variables file such as /etc/xivo/common.conf.

    :raises HostError: the file is missing or unreadable
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise HostError(f"{path}: cannot be read ({exc.strerror}; is this a Wazo host? "
                        "check --wazo-root)") from None
    values: dict[str, str] = {}
    for line in text.splitlines():
        match = re.match(r"\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$", line)
        if match:
            values[match.group(1)] = match.group(2).strip().strip("'\"")
    return values


def _strip_comments(text: str) -> str:
    return "\n".join(line.split("#", 1)[0] for line in text.splitlines())


def nginx_tls_listens(text: str, cert_paths: set[str]) -> list[str]:
    """The `listen` values with `ssl` of server blocks that serve one of cert_paths."""
    text = _strip_comments(text)
    found: list[str] = []
    for block in re.split(r"\bserver\s*\{", text)[1:]:
        certs = set(re.findall(r"\bssl_certificate\s+([^;\s]+)\s*;", block))
        if certs & cert_paths:
            for listen in re.findall(r"\blisten\s+([^;]+);", block):
                words = listen.split()
                if "ssl" in words[1:]:
                    found.append(words[0])
    return found


def nginx_server_names(text: str) -> list[str]:
    """Every name of every `server_name` directive."""
    names: list[str] = []
    for value in re.findall(r"\bserver_name\s+([^;]+);", _strip_comments(text)):
        names.extend(value.split())
    return names


def asterisk_tls_bind(text: str, cert_paths: set[str]) -> list[str]:
    """The TLS bind address of asterisk's http.conf when it serves one of cert_paths."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        line = line.split(";", 1)[0].strip()
        key, sep, value = line.partition("=")
        if sep:
            values[key.strip().lower()] = value.strip().lstrip(">").strip()
    if values.get("tlsenable", "no").lower() not in ("yes", "true", "1", "on"):
        return []
    if values.get("tlscertfile") not in cert_paths:
        return []
    bind = values.get("tlsbindaddr", "0.0.0.0:8089")
    return [bind if ":" in bind else f"{bind}:8089"]


def hosts_address(text: str, name: str) -> str | None:
    """The IPv4 address the first hosts-file line naming name gives it, as the resolver reads it."""
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) >= 2 and ":" not in fields[0] and name in (f.lower() for f in fields[1:]):
            return fields[0]
    return None
