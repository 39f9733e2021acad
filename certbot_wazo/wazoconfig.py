"""Read Wazo's configuration: daemons' YAML (merged like xivo-lib-python), common.conf, nginx, asterisk."""
from __future__ import annotations

import dataclasses
import os
import re
import stat
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import yaml

from certbot_wazo.errors import HostError

# libyaml's safe loader when PyYAML has it (Debian's and PyPI's do): ~10x faster on the dozens
# of daemon files a Wazo host has.
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclasses.dataclass(frozen=True)
class Hidden:
    """A value Wazo computes when it loads the file (xivo-lib-python's `!exec` tag runs a command
    and uses its output): certbot-wazo never runs it, so the value is unknown here."""

    tag: str
    detail: str
    path: str

    def __str__(self) -> str:
        return f"{self.tag} {self.detail}".strip()


class _Loader(_SAFE_LOADER):  # type: ignore[misc,valid-type]
    """The safe loader, with every application tag (`!exec`, `!anything`) read as Hidden."""

    wazo_path = ""


def _hidden(loader: _Loader, suffix: str, node: yaml.Node) -> Hidden:
    if isinstance(node, yaml.MappingNode):
        fields = {k.value: getattr(v, "value", "") for k, v in node.value
                  if isinstance(k, yaml.ScalarNode)}
        detail = str(fields.get("command", "")) or ", ".join(sorted(fields))
    else:
        detail = str(node.value) if isinstance(node, yaml.ScalarNode) else ""
    return Hidden(f"!{suffix}", detail, loader.wazo_path)


_Loader.add_multi_constructor("!", _hidden)
# Old releases load with PyYAML's full loader: python tags are values certbot-wazo cannot know.
_Loader.add_multi_constructor("tag:yaml.org,2002:python/",
                              lambda loader, suffix, node: _hidden(loader, "!python/" + suffix,
                                                                   node))


Owner = Callable[[Path], Optional[str]]
# Where a file whose whole content is computed at load time (e.g. wazo-phoned's packaged
# conf.d/50-authorized-subnets.yml: `!exec` + `command: wazo-confgen phoned/config.yml`) leaves
# its Hidden value in the merged configuration.
HIDDEN_LAYER = "<computed at load time>"


def _fix(path: Path, packaged: Optional[Owner]) -> str:
    """What to do about a broken file: restore a packaged one, never remove it."""
    package = packaged(path) if packaged is not None else None
    if package:
        return f"it belongs to {package}: restore it with 'apt-get install --reinstall {package}'"
    return "fix it"


# Bounds on what a configuration file may be: a real one is a few KiB and a few hundred values.
MAX_YAML_CHARS = 1024 * 1024
MAX_YAML_VALUES = 100_000


def _expanded_size(root: yaml.Node) -> int:
    """How many values a YAML document holds once its aliases are expanded (capped just above
    the bound; a recursive alias counts as too many), in time linear in the file."""
    sizes: dict[int, int] = {}
    busy: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in busy:
            return MAX_YAML_VALUES + 1
        busy.add(key)
        total = 1
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                total += size(k) + size(v)
                if total > MAX_YAML_VALUES:
                    break
        elif isinstance(node, yaml.SequenceNode):
            for item in node.value:
                total += size(item)
                if total > MAX_YAML_VALUES:
                    break
        busy.discard(key)
        sizes[key] = min(total, MAX_YAML_VALUES + 1)
        return sizes[key]

    return size(root)


def load_yaml(path: Path, packaged: Optional[Owner] = None) -> dict[str, Any]:
    """A YAML mapping from a file (an empty file is an empty mapping), tags left unevaluated.

    :param packaged: tells which Debian package ships a file (asked only for a broken one)
    :raises HostError: the file cannot be read or is not a YAML mapping
    """
    try:
        if not stat.S_ISREG(path.stat().st_mode):  # a FIFO would block, a device never end
            raise HostError(f"{path}: not a regular file (a configuration file must be one; "
                            f"{_fix(path, packaged)})")
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise HostError(f"{path}: cannot be read ({exc.strerror}; {_fix(path, packaged)})") \
            from None
    except UnicodeDecodeError as exc:
        raise HostError(f"{path}: not UTF-8 text at byte {exc.start} (Wazo reads its "
                        f"configuration as UTF-8; {_fix(path, packaged)})") from None
    if len(text) > MAX_YAML_CHARS:
        raise HostError(f"{path}: larger than {MAX_YAML_CHARS // 1024} KiB (not a Wazo "
                        f"configuration file; {_fix(path, packaged)})")
    loader = _Loader(text)
    loader.wazo_path = str(path)
    try:
        node = loader.get_single_node()
        if node is not None and _expanded_size(node) > MAX_YAML_VALUES:
            raise HostError(f"{path}: its YAML aliases expand to more than {MAX_YAML_VALUES} "
                            "values (Wazo's daemons copy every value when they merge their "
                            f"configuration and would hang; write the values out: "
                            f"{_fix(path, packaged)})")
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise HostError(f"{path}: not valid YAML{where} ({_fix(path, packaged)})") from None
    finally:
        loader.dispose()
    if data is None:
        return {}
    if isinstance(data, Hidden):  # a whole file computed at load time (`!exec` at the top)
        return {HIDDEN_LAYER: data}
    if not isinstance(data, dict):
        raise HostError(f"{path}: not a YAML mapping of sections ({_fix(path, packaged)})")
    return data


def deep_merge(*layers: dict[str, Any]) -> dict[str, Any]:
    """Merge mappings deeply; on conflicts the FIRST layer wins (xivo-lib-python's ChainMap,
    xivo/chain_map.py)."""
    merged: dict[str, Any] = {}
    for layer in layers:
        merged = _update(merged, layer)
    return merged


def _update(original: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    updated = dict(original)
    for key, value in new.items():
        if key not in updated:
            updated[key] = value
        elif isinstance(updated[key], dict) and isinstance(value, dict):
            updated[key] = _update(updated[key], value)
    return updated


def in_root(path: Path, under: Callable[[str], Path]) -> Path:
    """path with its symbolic links followed inside the host's root (an absolute link target,
    such as the packaged /etc/wazo-auth/conf.d/050-xivo-consul-config.yml, names a Wazo path)."""
    root = str(under("/")).rstrip("/")
    for _ in range(40):
        if not path.is_symlink():
            return path
        target = os.readlink(path)
        path = under(target) if target.startswith("/") else path.parent / target
        if root and not os.path.normpath(path).startswith(root + "/"):
            path = under(os.path.normpath(path))
    return path


def conf_d_files(conf_d: Path, under: Optional[Callable[[str], Path]] = None,
                 yml_only: bool = True, skip: tuple[str, ...] = ()) -> list[Path]:
    """The files a Wazo daemon reads from conf.d: *.yml (every file before XiVO 15.16: xivo-lib-
    python xivo/config_helper.py at xivo-15.15 has no suffix filter), no dotfiles, sorted by
    name, each with its links followed inside the root."""
    if not conf_d.is_dir():
        return []
    found = []
    for path in sorted(conf_d.iterdir()):
        if (path.name.endswith(".yml") or not yml_only) and not path.name.startswith(".") \
                and path.name not in skip:
            real = in_root(path, under) if under is not None else path
            if real.exists():
                found.append(real)
    return found


@dataclasses.dataclass
class DaemonConfig:
    """A daemon's effective configuration, and the conf.d files Wazo skips when it loads it."""

    values: dict[str, Any]
    skipped: list[str] = dataclasses.field(default_factory=list)
    computed: list[Hidden] = dataclasses.field(default_factory=list)


def daemon_config(directory: Path, under: Callable[[str], Path],
                  defaults: Optional[dict[str, Any]] = None,
                  packaged: Optional[Owner] = None, yml_only: bool = True,
                  skip: tuple[str, ...] = (),
                  cache: Optional[dict[Path, Any]] = None) -> DaemonConfig:
    """A daemon's effective configuration as xivo-lib-python's config_helper builds it:
    conf.d files in name order, then config.yml, then the daemon's code defaults; first wins.

    conf.d is the directory config.yml's `extra_config_files` names (default: conf.d beside it),
    a Wazo path that under() maps onto the host.
    A conf.d file that cannot be parsed is skipped, as Wazo skips it (with a message); a
    config.yml that cannot be parsed stops the daemon, so it is an error here too.

    :raises HostError: config.yml is not valid YAML
    """
    main_path = directory / "config.yml"
    def load(path: Path) -> dict[str, Any]:
        """load_yaml, once per file when a cache is given (errors are cached too)."""
        if cache is None:
            return load_yaml(path, packaged)
        if path not in cache:
            try:
                cache[path] = load_yaml(path, packaged)
            except HostError as exc:
                cache[path] = exc
        found = cache[path]
        if isinstance(found, HostError):
            raise found
        return dict(found)

    main = load(main_path) if main_path.is_file() else {}
    extra = deep_merge(main, defaults or {}).get("extra_config_files")
    conf_d = directory / "conf.d"
    if isinstance(extra, str) and extra.startswith("/"):
        conf_d = under(extra)
    layers: list[dict[str, Any]] = []
    skipped: list[str] = []
    computed: list[Hidden] = []
    for path in conf_d_files(conf_d, under, yml_only, skip):
        try:
            layer = load(path)
        except HostError as exc:
            skipped.append(str(exc))
            continue
        hidden = layer.pop(HIDDEN_LAYER, None)
        if isinstance(hidden, Hidden):
            computed.append(hidden)
        layers.append(layer)
    return DaemonConfig(deep_merge(*layers, main, defaults or {}), skipped, computed)


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
    if path.exists() and not path.is_file():
        raise HostError(f"{path}: not a regular file (Wazo's shell variables file must be one)")
    try:
        with open(path, "rb") as stream:  # common.conf is a few hundred bytes
            text = stream.read(MAX_YAML_CHARS).decode("utf-8", errors="replace")
    except OSError as exc:
        raise HostError(f"{path}: cannot be read ({exc.strerror}; is this a Wazo host? "
                        "check --wazo-root)") from None
    values: dict[str, str] = {}
    for line in text.splitlines():
        match = re.match(r"\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)$", line)
        if match:
            values[match.group(1)] = match.group(2).strip().strip("'\"")
    return values


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
