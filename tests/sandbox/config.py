"""Readers for Wazo configuration: daemon YAML hierarchy, asterisk ini, common.conf."""
from __future__ import annotations

import copy
import json
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from .common import resolve_in_root, under


def load_yaml(path: Path) -> dict[str, Any]:
    """One YAML file as a dict; unreadable files count as empty (like xivo config_helper)."""
    try:
        with open(path) as stream:
            data = yaml.safe_load(stream)
    except (OSError, yaml.YAMLError) as exc:  # `!exec` whose command is absent: skipped too
        print(f"Could not read config file {path}: {exc}", file=sys.stderr)
        return {}
    return data if isinstance(data, dict) else {}


def chain(*layers: dict[str, Any]) -> dict[str, Any]:
    """Deep merge where the FIRST layer wins (xivo.chain_map.ChainMap)."""
    merged: dict[str, Any] = {}
    for layer in layers:
        merged = _update(merged, layer)
    return merged


def _update(original: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    updated = copy.copy(original)
    for key, value in new.items():
        if key not in updated:
            updated[key] = copy.deepcopy(value)
        elif isinstance(updated[key], dict) and isinstance(value, dict):
            updated[key] = _update(updated[key], value)
    return updated


def daemon_config(root: Path, unit: str) -> dict[str, Any]:
    """Effective config of a daemon: conf.d/*.yml sorted (dotfiles ignored) over config.yml."""
    main = load_yaml(resolve_in_root(root, f"/etc/{unit}/config.yml"))
    conf_d = under(root, str(main.get("extra_config_files", f"/etc/{unit}/conf.d")))
    names = sorted(n for n in os.listdir(conf_d) if n.endswith(".yml") and not n.startswith(".")) \
        if conf_d.is_dir() else []
    defaults_file = root / "run/sandbox/defaults" / f"{unit}.json"
    defaults = json.loads(defaults_file.read_text()) if defaults_file.is_file() else {}
    return chain(*(load_yaml(resolve_in_root(root, conf_d / n)) for n in names), main, defaults)


def read_ini_section(path: Path, section: str = "general") -> dict[str, str]:
    """key=value pairs of one section of an asterisk-style .conf file."""
    values: dict[str, str] = {}
    current = ""
    for raw in path.read_text().splitlines():
        line = raw.split(";", 1)[0].strip()
        if line.startswith("[") and "]" in line:
            current = line[1:line.index("]")]
        elif "=" in line and current == section:
            key, value = line.split("=", 1)
            values[key.strip()] = value.lstrip(">").strip()
    return values


def read_shell_vars(path: Path) -> dict[str, str]:
    """KEY=value assignments of a sourced shell file such as /etc/xivo/common.conf."""
    values: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[key.strip()] = value
    return values
