"""A sandbox Wazo host of one real release, rendered from the corpus (tests/data/releases/).

Files are written from the facts upstream's tags state (paths, the keys the product depends on,
the YAML tag forms, nginx's listen/ssl forms, asterisk's TLS keys, the code defaults the
stand-in daemons apply); every endpoint of the release's table gets a stand-in serving the pair.
Real ports (443, 9497, ...) are used: build and start these hosts only inside a private network
namespace (`unshare --net`).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import yaml

from .common import STATE_FILE, sandbox_dir
from .host import SandboxHost
from .layout import Layout, make_certs, make_nginx, make_stubs, make_system, write

CORPUS = Path(__file__).resolve().parents[1] / "data" / "releases"
EXEC = "__exec__:"


def facts(release: str) -> dict[str, Any]:
    """The corpus entry of a release."""
    data: dict[str, Any] = yaml.safe_load((CORPUS / f"{release}.yml").read_text())
    return data


def releases() -> list[str]:
    """Every release of the corpus."""
    return sorted(p.stem for p in CORPUS.glob("*.yml"))


def nested(values: dict[str, Any]) -> dict[str, Any]:
    """Dotted keys to nested mappings; computed values become `!exec` placeholders."""
    result: dict[str, Any] = {}
    for dotted, value in values.items():
        node = result
        parts = dotted.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                break
        else:
            if isinstance(value, dict) and "computed" in value:
                value = EXEC + value["computed"].split(" ", 1)[-1]
            node.setdefault(parts[-1], value)
    return result


def render_yaml(values: dict[str, Any], computed: str | None) -> str:
    """A daemon file in the forms upstream's use: `!exec` + `command:` for computed values."""
    if computed:
        return f"!exec\ncommand: {computed.split(' ', 1)[-1]}\n"
    text = yaml.safe_dump(nested(values), sort_keys=False, default_flow_style=False)
    lines = []
    for line in text.splitlines():
        key, sep, value = line.partition(": ")
        if sep and value.startswith(EXEC):
            indent = len(key) - len(key.lstrip()) + 2
            line = f"{key}: !exec\n{' ' * indent}command: {value[len(EXEC):]}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def _daemons(root: Path, release: dict[str, Any], layout: Layout) -> list[str]:
    units = []
    owned: dict[str, list[str]] = {}
    for daemon in release["daemons"]:
        unit = daemon["unit"]
        for record in daemon["files"]:
            write(root / record["path"].lstrip("/"),
                  render_yaml(record["values"], record.get("computed")))
            owned.setdefault(unit, []).append(record["path"])
        (root / f"etc/{unit}/conf.d").mkdir(parents=True, exist_ok=True)
        defaults = nested(daemon.get("code_defaults", {}).get("values", {}))
        write(sandbox_dir(root) / "defaults" / f"{unit}.json", json.dumps(defaults))
        units.append(unit)
        listener = daemon.get("listener")
        layout.units[unit] = "daemon" if listener else "noop"
    info = root / "var/lib/dpkg/info"
    for unit, paths in owned.items():
        write(info / f"{unit}.list", "\n".join([f"/etc/{unit}", *paths]) + "\n")
    return units


def _nginx_site(site: dict[str, Any]) -> str:
    blocks = []
    for server in site["servers"]:
        lines = [f"    listen {listen};" for listen in server["listen"]]
        lines.append("    server_name _;")
        if server["ssl_on"]:
            lines.append("    ssl on;")
        if server["ssl_certificate"]:
            lines += [f"    ssl_certificate {server['ssl_certificate']};",
                      f"    ssl_certificate_key {server['ssl_certificate_key']};"]
        if server["redirect"]:
            lines.append("    return 301 https://$host$request_uri;")
        lines += [f"    include {include};" for include in server["includes"]]
        blocks.append("server {\n" + "\n".join(lines) + "\n}\n")
    return "\n".join(blocks)


def _consul(root: Path, release: dict[str, Any], layout: Layout) -> None:
    """consul's JSON configuration and the client file the daemons' packaged links point at."""
    consul = release.get("consul")
    if not consul:
        return
    write(root / consul["config_file"].lstrip("/"), json.dumps({
        "ports": {"https": consul["https_port"]}, "cert_file": consul["cert_file"],
        "key_file": consul["key_file"], "addresses": {"https": "0.0.0.0"}}))
    client: dict[str, Any] = {"host": "localhost", "scheme": "http", "port": 8500}
    if consul["client_verify"]:
        client = {"host": "localhost", "scheme": "https", "port": consul["https_port"],
                  "verify": consul["client_verify"]}
    if consul["client_file"]:
        write(root / consul["client_file"].lstrip("/"), yaml.safe_dump({"consul": client}))
        for daemon in release["daemons"]:
            for link in daemon.get("consul_links", []):
                (root / link.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
                (root / link.lstrip("/")).symlink_to(consul["client_file"])
    layout.units["consul"] = "daemon"


def _asterisk(root: Path, release: dict[str, Any], layout: Layout) -> None:
    values = dict(release.get("asterisk", {}).get("values", {}))
    text = "[general]\n" + "".join(f"{k}={v}\n" for k, v in values.items())
    write(root / "etc/asterisk/http.conf", text)
    if values.get("tlsenable", "no") in ("yes", "true"):
        layout.units["asterisk"] = "asterisk"


# The name release hosts answer to unless told otherwise.
NAME = "wazo.example.test"


def build_release(root: Path, release: str, name: str = NAME) -> SandboxHost:
    """Build the host tree of a release under root (not started)."""
    data = facts(release)
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    crt_dir = os.path.dirname(data["certs"]["crt"])
    generation = "legacy" if crt_dir.endswith("xivo-certs") else "modern"
    layout = Layout()
    make_system(root, "legacy" if data["hosts_template"]["header"] == "XIVO" else "modern", name)
    make_certs(root, generation)
    if data["certs"].get("crt_mode"):
        (root / data["certs"]["crt"].lstrip("/")).chmod(int(data["certs"]["crt_mode"], 8))
    write(root / data["version_file"]["path"].lstrip("/"), f"{release}\n")
    units = _daemons(root, data, layout)
    _asterisk(root, data, layout)
    _consul(root, data, layout)
    make_nginx(root, f"/{crt_dir.lstrip('/')}", 443, layout)
    (root / "etc/nginx/sites-available/wazo").write_text(_nginx_site(data["nginx"]))
    # The directories the site includes exist on every release: wazo-nginx ships them from
    # 16.16 on (wazo-platform/wazo-nginx wazo-16.16..wazo-25.14, debian/*-nginx.dirs), and
    # before, xivo-web-interface's links live in them (wazo-platform/xivo-web-interface
    # xivo-15.12, debian/links: etc/nginx/locations/http/xivo-web-interface).
    for server in data["nginx"]["servers"]:
        for include in server["includes"]:
            (root / include.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
    for site in data.get("nginx_extra", []):  # sites a daemon's package enables itself
        name = site["path"].rsplit("/", 1)[-1]
        write(root / site["path"].lstrip("/"), _nginx_site(site))
        (root / "etc/nginx/sites-enabled" / name).symlink_to(f"../sites-available/{name}")
    served = [u for u, kind in layout.units.items() if kind != "noop"]
    groups = {"all": ["nginx", *(["consul"] if "consul" in layout.units else []), *units,
                      *(["asterisk"] if "asterisk" in layout.units else [])]}
    groups["default"] = groups["wazo"] = groups["xivo"] = [u for u in groups["all"]
                                                           if u not in ("nginx", "consul")]
    if data.get("wazo_service"):
        # the release's own lists (wazo-platform/wazo-service at its tag, bin/wazo-service):
        # a daemon in none of them (wazo-setupd at 19.17) is left alone by `restart all`
        groups = {name: list(members) for name, members in data["wazo_service"]["groups"].items()}
        if "xivo" not in groups and "wazo" in groups:
            groups["xivo"] = groups["wazo"]  # the deprecated alias every release keeps
    make_stubs(root, groups)
    for directory in ("run/sandbox/faults", "var/log/sandbox", "var/lib/sandbox"):
        (root / directory).mkdir(parents=True, exist_ok=True)
    endpoints = {}
    for row in data["endpoints"]:
        # One probe per port: an IPv6 listen ([::]:443) of the same server adds no endpoint.
        key = row["unit"] if row["unit"] not in endpoints else f"{row['unit']}:{row['port']}"
        if not any(a.endswith(f":{row['port']}") for a in endpoints.values()):
            endpoints[key] = f"127.0.0.1:{row['port']}" \
                if str(row["address"]).strip("[]") in ("0.0.0.0", "*", "::") or \
                str(row["address"]).isdigit() else f"{row['address'].rsplit(':', 1)[0]}:{row['port']}"
    layout.endpoints = endpoints
    write(root / STATE_FILE, json.dumps({
        "generation": generation, "name": name, "units": layout.units, "served": served,
        "endpoints": endpoints, "groups": groups, "release": release}, indent=2))
    return SandboxHost(root, generation, name, endpoints)
