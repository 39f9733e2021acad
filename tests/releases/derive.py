"""Re-derive the release corpus (tests/data/releases/<release>.yml) from upstream's tagged files.

    python -m tests.releases.derive --upstream DIR [--check] [RELEASE ...]

DIR holds git checkouts or mirrors of wazo-platform's repositories, as `DIR/NAME` or
`DIR/wazo-platform+NAME/repo` (what the search tool's fetch gives). Every fact written cites its
repository, tag and path; nothing of upstream's files is copied but the values the product
depends on. With --check, the files are compared with what upstream says and nothing is written.
"""
from __future__ import annotations

import argparse
import ast
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator, Optional

import yaml

from certbot_wazo import nginxconf
from certbot_wazo.wazoconfig import HIDDEN_LAYER, Hidden, _Loader, deep_merge

CORPUS = Path(__file__).resolve().parents[1] / "data" / "releases"
ORG = "wazo-platform"
# xivo-ctid (the CTI server of 15.x-19.03) was never moved to wazo-platform.
OLD_ORG = "wazo-pbx"
RELEASES = ("15.12", "16.16", "17.17", "18.03", "19.17", "20.16", "21.16", "22.16", "23.16",
            "24.16", "25.14", "25.17")
# The daemons of a Wazo PBX that have a YAML configuration (repositories under today's names;
# each keeps the tags of its older names).
DAEMON_REPOS = ("wazo-auth", "wazo-confd", "wazo-dird", "wazo-amid", "wazo-agentd", "wazo-calld",
                "wazo-websocketd", "wazo-call-logd", "wazo-plugind", "wazo-webhookd",
                "wazo-phoned", "wazo-provd", "wazo-sysconfd", "wazo-chatd", "wazo-setupd",
                "wazo-agid", "wazo-dxtora", "wazo-confgend", "xivo-confgend", "xivo-ctid",
                # kept outside wazo-platform (wazo-pbx), a dependency of the xivo metapackage
                # from 17.04 to 18.13 (wazo-platform/wazo-platform, debian/control)
                "wazo-admin-ui")
# Keys of a section that make it a TLS listener or a TLS client of a peer.
TLS_KEYS = {"certificate", "private_key", "verify_certificate", "verify", "ssl", "https",
            "ssl_certfile", "ssl_keyfile", "certfile", "keyfile"}
SIBLINGS = {"listen", "ip", "port", "host", "enabled"}
# Debian's own numbering of its codenames (a fact about Debian, not about Wazo).
DEBIAN_NUMBERS = {"wheezy": 7, "jessie": 8, "stretch": 9, "buster": 10, "bullseye": 11,
                  "bookworm": 12, "trixie": 13}


class Upstream:
    """Read-only access to upstream repositories at tags."""

    def __init__(self, base: Path) -> None:
        self.base = base

    def git_dir(self, repo: str) -> Optional[Path]:
        for place in (self.base / f"{ORG}+{repo}" / "repo",
                      self.base / f"{OLD_ORG}+{repo}" / "repo", self.base / repo):
            for candidate in (place, place / ".git"):
                if (candidate / "HEAD").is_file():
                    return candidate
        return None

    def _git(self, repo: str, *args: str) -> Optional[str]:
        git_dir = self.git_dir(repo)
        if git_dir is None:
            return None
        result = subprocess.run(["git", "--git-dir", str(git_dir), *args], capture_output=True,
                                text=True, timeout=60, check=False)
        return result.stdout if result.returncode == 0 else None

    def show(self, repo: str, tag: str, path: str) -> Optional[str]:
        return self._git(repo, "show", f"{tag}:{path}")

    def files(self, repo: str, tag: str) -> list[str]:
        out = self._git(repo, "ls-tree", "-r", "--name-only", tag)
        return out.splitlines() if out else []

    def commit_before(self, repo: str, date: str) -> Optional[str]:
        """The commit of repo's default branch in force on date (for untagged repositories)."""
        out = self._git(repo, "rev-list", "-1", f"--before={date}", "HEAD")
        return out.strip() or None if out else None

    def date(self, repo: str, tag: str) -> Optional[str]:
        out = self._git(repo, "log", "-1", "--format=%cI", tag)
        return out.strip() or None if out else None

    def tag(self, repo: str, release: str) -> Optional[str]:
        """The tag a host of release has of repo: the release's own, else the newest before it
        (a repository is not tagged at a release in which it did not change)."""
        out = self._git(repo, "tag") or ""
        best: Optional[tuple[tuple[int, int], str]] = None
        wanted = _version(release)
        for tag in out.split():
            prefix, _, number = tag.partition("-")
            version = _version(number) if prefix in ("xivo", "wazo") else None
            if version is not None and version <= wanted and (best is None or version > best[0]):
                best = (version, tag)
        return best[1] if best else None


def _version(text: str) -> Optional[tuple[int, int]]:
    major, dot, minor = text.partition(".")
    return (int(major), int(minor)) if dot and major.isdigit() and minor.isdigit() else None


def tag_of(release: str) -> str:
    return ("xivo-" if release < "16.16" else "wazo-") + release


def source(repo: str, tag: str, path: str, key: str = "") -> dict[str, str]:
    cited = {"repo": f"{ORG}/{repo}", "tag": tag, "path": path}
    return cited | ({"key": key} if key else {})


# -- YAML and Python facts -----------------------------------------------------------------------
def load(text: str) -> Any:
    loader = _Loader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def tls_leaves(data: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of the TLS-relevant leaves of a configuration mapping."""
    if not isinstance(data, dict):
        return
    relevant = any(k in TLS_KEYS for k in data) and prefix != ""
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from tls_leaves(value, dotted + ".")
        elif isinstance(value, Hidden):
            yield dotted, {"computed": str(value)}
        elif key in TLS_KEYS or (relevant and key in SIBLINGS):
            yield dotted, value


def literal(node: ast.AST) -> Any:
    """A Python literal from code defaults; names and calls become None (unknown)."""
    if isinstance(node, ast.Dict):
        return {literal(k): literal(v) for k, v in zip(node.keys, node.values)
                if isinstance(k, ast.Constant)}
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.List, ast.Tuple)):
        return [literal(e) for e in node.elts]
    return None


def code_defaults(text: str) -> Optional[dict[str, Any]]:
    """The _DEFAULT_CONFIG (or DEFAULT_CONFIG) mapping of a daemon's module, constants folded."""
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return None
    constants: dict[str, Any] = {}
    found: Optional[dict[str, Any]] = None
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and \
                isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            if isinstance(node.value, ast.Constant):
                constants[name] = node.value.value
            if name in ("_DEFAULT_CONFIG", "DEFAULT_CONFIG", "_default_config"):
                folded = _fold(node.value, constants)
                found = folded if isinstance(folded, dict) else found
    return found


def _fold(node: ast.AST, constants: dict[str, Any]) -> Any:
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict":
        return {k.arg: _fold(k.value, constants) for k in node.keywords if k.arg}
    if isinstance(node, ast.Dict):
        return {k.value: _fold(v, constants) for k, v in zip(node.keys, node.values)
                if isinstance(k, ast.Constant)}
    if isinstance(node, ast.Name) and node.id in constants:
        return constants[node.id]
    return literal(node)


def listener(config: dict[str, Any]) -> Optional[dict[str, Any]]:
    """The TLS listener of an effective daemon configuration (None: no TLS with a pair)."""
    rest = config.get("rest_api") if isinstance(config.get("rest_api"), dict) else {}
    candidates = [("rest_api.https", rest.get("https")), ("rest_api", rest),
                  ("https", config.get("https")), ("websocket", config.get("websocket"))]
    if rest.get("ssl") is True and isinstance(rest.get("ssl_certfile"), str):  # wazo-provd
        return {"section": "rest_api", "listen": rest.get("ip", "0.0.0.0"),
                "port": rest.get("port"), "certificate": rest["ssl_certfile"],
                "private_key": rest.get("ssl_keyfile")}
    for section, value in candidates:
        if isinstance(value, dict) and isinstance(value.get("certificate"), str) and \
                value.get("enabled", True) not in (False, "false") and \
                value.get("ssl", True) not in (False, "false"):
            return {"section": section, "listen": value.get("listen", "0.0.0.0"),
                    "port": value.get("port"), "certificate": value["certificate"],
                    "private_key": value.get("private_key")}
    return None


def daemons(up: Upstream, repo: str, tag: str) -> list[dict[str, Any]]:
    """One entry per /etc/<unit> directory of YAML configuration the repository ships."""
    files = up.files(repo, tag)
    configs = sorted(f for f in files if f.startswith("etc/") and f.endswith(".yml")
                     and f.split("/")[1].startswith(("xivo-", "wazo-")))
    return [daemon(up, repo, tag, unit, files, [f for f in configs if f.split("/")[1] == unit])
            for unit in sorted({f.split("/")[1] for f in configs})]


def daemon(up: Upstream, repo: str, tag: str, unit: str, files: list[str],
           configs: list[str]) -> dict[str, Any]:
    org = OLD_ORG if f"{OLD_ORG}+{repo}" in str(up.git_dir(repo)) else ORG
    entry: dict[str, Any] = {"unit": unit, "repo": f"{org}/{repo}", "tag": tag, "files": []}
    layers: dict[str, dict[str, Any]] = {}
    for path in configs:
        data = load(up.show(repo, tag, path) or "") or {}
        if isinstance(data, Hidden):
            data = {HIDDEN_LAYER: data}
        record: dict[str, Any] = {"path": "/" + path, "file": path,
                                  "values": dict(tls_leaves(data))}
        if isinstance(data.get(HIDDEN_LAYER), Hidden):
            record["computed"] = str(data.pop(HIDDEN_LAYER))
        layers[path] = data
        entry["files"].append(record)
    package = unit.replace("-", "_")
    module = next((f for f in (f"{package}/config.py", f"{package}/bin/config.py",
                               "provd/config.py", "xivo_cti/cti_config.py") if f in files), None)
    defaults: dict[str, Any] = {}
    if module:
        found = code_defaults(up.show(repo, tag, module) or "")
        if found:
            defaults = found
            entry["code_defaults"] = {"file": module, "values": dict(tls_leaves(found))}
    conf_d = [layers[p] for p in configs if "/conf.d/" in p]
    main = next((layers[p] for p in configs if p.endswith(f"{unit}/config.yml")), {})
    effective = deep_merge(*conf_d, main, defaults)
    found_listener = listener(effective)
    if found_listener is not None:
        where = "code default" if listener(deep_merge(*conf_d, main)) is None else "files"
        found_listener["decided_by"] = where
    entry["listener"] = found_listener
    main_section = effective.get("main") if isinstance(effective.get("main"), dict) else {}
    client = effective.get("client") if isinstance(effective.get("client"), dict) else {}
    if isinstance(main_section.get("certfile"), str) and client.get("port"):
        # xivo-ctid: STARTTLS on its client port, the pair read at every upgrade
        # (xivo_cti/client_connection.py upgrade_ssl), so a renewal needs no restart there.
        entry["starttls"] = {"port": client["port"], "certificate": main_section["certfile"]}
    links = consul_links(up, repo, tag, unit)
    if links:
        entry["consul_links"] = links
    entry["verifies_server_crt"] = sorted(
        k for k, v in tls_leaves(effective)
        if k.endswith(("verify_certificate", ".verify")) and isinstance(v, str)
        and v.endswith("/server.crt"))
    return entry


# -- platform facts ------------------------------------------------------------------------------
def nginx_site(up: Upstream, tag: str) -> Optional[dict[str, Any]]:
    for repo, path in ((r, f"etc/nginx/sites-available/{n}") for r in
                       ("wazo-nginx", "xivo-web-interface") for n in ("wazo", "xivo")):
        found = _site(up, repo, tag, path)
        if found is not None:
            return found
    return None


def extra_sites(up: Upstream, repo: str, tag: str) -> list[dict[str, Any]]:
    """nginx sites a daemon's package ships and enables itself (xivo-confd's at 15.12)."""
    links = " ".join(up.show(repo, tag, f) or "" for f in up.files(repo, tag)
                     if f.startswith("debian/") and f.endswith("links"))
    found = []
    for path in up.files(repo, tag):
        if path.startswith("etc/nginx/sites-available/"):
            site = _site(up, repo, tag, path)
            name = path.rsplit("/", 1)[-1]
            if site is not None and f"etc/nginx/sites-enabled/{name}" in links:
                found.append(site)
    return found


def _site(up: Upstream, repo: str, tag: str, path: str) -> Optional[dict[str, Any]]:
    text = up.show(repo, tag, path)
    if text is None:
        return None
    directives = nginxconf.parse(text, path)
    servers = []
    for server in (d for d in directives if d.name == "server" and d.block is not None):
        block = server.block or []
        servers.append({
            "listen": [" ".join(d.args) for d in block if d.name == "listen"],
            "ssl_on": any(d.name == "ssl" and d.args[:1] == ["on"] for d in block),
            "ssl_certificate": next((d.args[0] for d in block
                                     if d.name == "ssl_certificate"), None),
            "ssl_certificate_key": next((d.args[0] for d in block
                                         if d.name == "ssl_certificate_key"), None),
            "includes": [d.args[0] for d in block if d.name == "include"],
            "redirect": any(d.name == "return" and d.args[:1] == ["301"] for d in block),
        })
    return {"path": "/" + path, "source": source(repo, tag, path), "servers": servers}


def asterisk(up: Upstream, tag: str) -> Optional[dict[str, Any]]:
    for repo in ("wazo-asterisk-config", "xivo-config"):
        text = up.show(repo, tag, "etc/asterisk/http.conf")
        if text is None:
            continue
        files = {"etc/asterisk/http.conf": text}
        for path in up.files(repo, tag):
            if path.startswith("etc/asterisk/http.d/"):
                files[path] = up.show(repo, tag, path) or ""
        values: dict[str, str] = {}
        cited: dict[str, dict[str, str]] = {}
        for path, content in files.items():
            for line in content.splitlines():
                key, sep, value = line.split(";", 1)[0].partition("=")
                if sep and key.strip().lower().startswith(("tls", "bind", "enabled")):
                    values[key.strip().lower()] = value.strip().lstrip(">").strip()
                    cited[key.strip().lower()] = source(repo, tag, path)
        return {"files": ["/" + p for p in files], "values": values, "sources": cited,
                "includes": [line.strip() for line in text.splitlines()
                             if line.startswith("#include")]}
    return None


def certs(up: Upstream, tag: str) -> Optional[dict[str, Any]]:
    """The package that makes Wazo's pair, where, and the modes its postinst sets."""
    files = up.files("wazo-certs", tag)
    for package in ("wazo-certs", "xivo-certs"):
        postinst = f"debian/{package}.postinst"
        if postinst not in files:
            continue
        text = up.show("wazo-certs", tag, postinst) or ""
        variables = dict(re.findall(r"^\s*(new_key|new_cert)=(\S+)", text, re.M))
        modes = {name: mode for mode, names in re.findall(r"^\s*chmod\s+(\d+)\s+(.*)$", text,
                                                           re.M)
                 for name in re.findall(r"new_key|new_cert", names)}
        return {"package": package, "crt": variables.get("new_cert"),
                "key": variables.get("new_key"),
                "crt_mode": modes.get("new_cert"), "key_mode": modes.get("new_key"),
                "source": source("wazo-certs", tag, postinst)}
    return None


def certs_from_nginx(up: Upstream, tag: str) -> Optional[dict[str, Any]]:
    """Where the pair is when no wazo-certs tag covers the release: the path nginx serves."""
    site = nginx_site(up, tag)
    for server in site["servers"] if site else []:
        if server["ssl_certificate"]:
            return {"crt": server["ssl_certificate"], "key": server["ssl_certificate_key"],
                    "source": site["source"]}
    return None


def hosts_template(up: Upstream, tag: str) -> Optional[dict[str, Any]]:
    path = "templates/system/etc/hosts"
    text = up.show("xivo-config", tag, path)
    if text is None:
        return None
    header = text.splitlines()[0].split(":", 1)[0].lstrip("# ") if text else ""
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    return {"path": "/usr/share/xivo-config/" + path, "header": header, "lines": lines,
            "source": source("xivo-config", tag, path)}


def version_file(up: Upstream, tag: str) -> Optional[dict[str, Any]]:
    """Where the metapackage (xivo, then wazo-platform) writes the release on a host."""
    rules = up.show("wazo-platform", tag, "debian/rules") or ""
    control = up.show("wazo-platform", tag, "debian/control") or ""
    package = next(iter(re.findall(r"^Package:\s*(\S+)", control, re.M)), "")
    match = re.search(r"(usr/share/\S+-VERSION)\b", rules.replace("$(cdbs_curpkg)", package))
    if match is None:
        return None
    return {"path": "/" + match.group(1), "package": package,
            "source": source("wazo-platform", tag, "debian/rules")}


def consul(up: Upstream, release: str) -> Optional[dict[str, Any]]:
    """consul's TLS listener: the configuration wazo-consul-config's postinst writes (the
    repository has no tags: the commit in force at the release's xivo-config tag is cited)."""
    tag = up.tag("wazo-platform", release)
    control = up.show("wazo-platform", tag, "debian/control") if tag else None
    if not control or not re.search(r"[\s,](consul|wazo-consul-config)[\s,(]", control):
        return None
    date = up.date("xivo-config", tag_of(release))
    commit = up.commit_before("wazo-consul-config", date) if date else None
    if commit is None:
        return None
    for path in ("debian/wazo-consul-config.postinst", "debian/consul.postinst"):
        text = up.show("wazo-consul-config", commit, path)
        if not text:
            continue
        config = re.search(r'DEFAULT_CONFIG="([^"]+)"', text)
        port = re.search(r'"https": (\d+)', text)
        cert = re.search(r'"cert_file": "([^"]+)"', text)
        key = re.search(r'"key_file": "([^"]+)"', text)
        client = re.search(r'DEFAULT_XIVO_CONSUL_CONFIG="[^"]*?([^/"]+)"', text)
        verify = re.search(r"verify: (\S+)", text)
        if not (config and port and cert):
            return None
        return {"config_file": config.group(1), "https_port": int(port.group(1)),
                "cert_file": cert.group(1), "key_file": key.group(1) if key else None,
                "client_file": f"/var/lib/consul/{client.group(1)}" if client else None,
                "client_verify": verify.group(1) if verify else None,
                "source": {"repo": f"{ORG}/wazo-consul-config", "commit": commit, "path": path}}
    return None


def consul_links(up: Upstream, repo: str, tag: str, unit: str) -> list[str]:
    """conf.d links a daemon's package ships to consul's generated client file."""
    text = up.show(repo, tag, f"debian/{unit}.links") or up.show(repo, tag, "debian/links") or ""
    return [line.split()[1] for line in text.splitlines()
            if len(line.split()) == 2 and "default_xivo_consul_config" in line.split()[0]]


def debian(up: Upstream, release: str) -> Optional[dict[str, Any]]:
    """The Debian release a host of release runs: the distribution wazo-upgrade switches to
    (`wazo-dist -m pelican-CODENAME`), else the installer the installation page points at."""
    for repo, path, pattern in (
            ("wazo-upgrade", "bin/wazo-upgrade", r"wazo-dist -m pelican-(\w+)"),
            ("wazo-doc", "source/installation/installsystem.rst",
             r"releases/(\w+)/debian-installer")):
        tag = up.tag(repo, release)
        match = re.search(pattern, up.show(repo, tag, path) or "") if tag else None
        if match and match.group(1) in DEBIAN_NUMBERS:
            return {"codename": match.group(1), "version": DEBIAN_NUMBERS[match.group(1)],
                    "source": dict(source(repo, tag, path), pattern=pattern)}
    return None


_SERVICES = re.compile(r"""^\s*([A-Za-z_]+services)=["']([^"'`]*)["']""", re.M)
_REFERENCE = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?")


def wazo_service(up: Upstream, release: str) -> Optional[dict[str, Any]]:
    """The groups of the release's wazo-service (xivo-service, shipped by xivo-upgrade before
    wazo-service had a repository of its own): each `*_services` list, references expanded."""
    for repo, path in (("wazo-service", "bin/wazo-service"), ("wazo-service", "bin/xivo-service"),
                       ("wazo-upgrade", "bin/xivo-service")):
        tag = up.tag(repo, release)
        text = up.show(repo, tag, path) if tag else None
        if not text:
            continue
        variables: dict[str, str] = {}
        for name, value in _SERVICES.findall(text):
            variables[name] = _REFERENCE.sub(
                lambda ref, known=variables: known.get(ref.group(1), ""), value)
        if variables:
            return {"source": source(repo, str(tag), path),
                    "groups": {name[:-len("_services")].rstrip("_") or name: value.split()
                               for name, value in variables.items()}}
    return None


# Packages built from a repository of another name (xivo-ctid-ng became wazo-calld, ...).
RENAMED = {"xivo-ctid-ng": "wazo-calld", "xivo-dird-phoned": "wazo-phoned",
           "xivo-call-logs": "wazo-call-logd", "xivo-nginx": "wazo-nginx"}


def _stanzas(control: str) -> dict[str, list[str]]:
    """Each binary package of a debian/control with the names it Depends on (first alternative,
    no version, no substitution variable)."""
    found: dict[str, list[str]] = {}
    for block in re.split(r"\n\s*\n", control):
        package = re.search(r"^Package:\s*(\S+)", block, re.M)
        depends = re.search(r"^Depends:(.*(?:\n[ \t].*)*)", block, re.M)
        if package:
            names = []
            for item in (depends.group(1) if depends else "").replace("\n", " ").split(","):
                name = item.split("|")[0].split("(")[0].strip()
                if name and not name.startswith("${"):
                    names.append(name)
            found[package.group(1)] = names
    return found


def metapackage(up: Upstream, release: str) -> Optional[dict[str, Any]]:
    """What the release's metapackage (xivo, then wazo-platform) pulls in, its sibling
    metapackages (xivo-base) expanded, and which of those packages are daemons built by Wazo:
    their repository ships a systemd unit or an init script at its tag."""
    tag = up.tag("wazo-platform", release)
    control = up.show("wazo-platform", tag, "debian/control") if tag else None
    if not control:
        return None
    stanzas = _stanzas(control)
    main = "wazo-platform" if "wazo-platform" in stanzas else "xivo"
    depends: list[str] = []
    pending = list(stanzas.get(main, []))
    while pending:
        name = pending.pop(0)
        if name in stanzas and name != main:
            pending = stanzas.pop(name) + pending
        elif name not in depends:
            depends.append(name)
    daemons, unread = [], []
    for package in sorted(depends):
        base = package.removesuffix("-python3")  # a client library's Python 3 build
        # today's repository first (it keeps the tags of its older names)
        candidates = tuple(dict.fromkeys((RENAMED.get(package, base.replace("xivo-", "wazo-", 1)),
                                          base.replace("xivo-", "wazo-", 1), base,
                                          base.replace("wazo-", "xivo-", 1))))
        if package.startswith(("xivo-", "wazo-")) and \
                not any(up.tag(repo, release) for repo in candidates):
            unread.append(package)  # its repository was not given to derive
        for repo in candidates:
            repo_tag = up.tag(repo, release)
            if repo_tag is None:
                continue
            units = [f for f in up.files(repo, repo_tag) if re.fullmatch(
                r"debian/([\w.-]+\.)?(service|init)", f)]
            if units:
                org = OLD_ORG if f"{OLD_ORG}+{repo}" in str(up.git_dir(repo)) else ORG
                daemons.append({"package": package, "repo": f"{org}/{repo}", "tag": repo_tag,
                                "path": units[0]})
            break
    return {"package": main, "source": source("wazo-platform", str(tag), "debian/control"),
            "depends": sorted(depends), "daemons": daemons, "not_read": unread}


def endpoints(facts: dict[str, Any]) -> list[dict[str, Any]]:
    """The table: every TLS endpoint the release's services serve with the Wazo pair."""
    table = []
    wazo_dirs = ("/usr/share/xivo-certs/", "/usr/share/wazo-certs/")
    for entry in facts["daemons"]:
        found = entry.get("listener")
        if found and str(found["certificate"]).startswith(wazo_dirs) and found.get("port"):
            where = entry.get("code_defaults", {}).get("file") \
                if found["decided_by"] == "code default" else \
                next((f["file"] for f in entry["files"] if f["file"].endswith("config.yml")),
                     entry["files"][0]["file"])
            table.append({"unit": entry["unit"], "port": found["port"],
                          "address": found["listen"],
                          "source": {"repo": entry["repo"], "tag": entry["tag"], "path": where,
                                     "key": f"{found['section']}.port"}})
    sites = ([facts["nginx"]] if facts.get("nginx") else []) + facts.get("nginx_extra", [])
    for site in sites:
        for server in site["servers"]:
            if not str(server.get("ssl_certificate", "")).startswith(wazo_dirs):
                continue
            for listen in server["listen"]:
                words = listen.split()
                if server["ssl_on"] or "ssl" in words[1:]:
                    port = int(words[0].rsplit(":", 1)[-1])
                    table.append({"unit": "nginx", "port": port, "address": words[0],
                                  "source": dict(site["source"], key=f"listen {listen}")})
    consul_facts = facts.get("consul")
    if consul_facts and str(consul_facts["cert_file"]).startswith(wazo_dirs):
        table.append({"unit": "consul", "port": consul_facts["https_port"], "address": "0.0.0.0",
                      "source": dict(consul_facts["source"], key='"https"')})
    ast_facts = facts.get("asterisk")
    if ast_facts and ast_facts["values"].get("tlsenable", "no").lower() in ("yes", "true") and \
            ast_facts["values"].get("tlscertfile", "").startswith(wazo_dirs):
        bind = ast_facts["values"].get("tlsbindaddr", "0.0.0.0:8089")
        table.append({"unit": "asterisk", "port": int(bind.rsplit(":", 1)[-1]),
                      "address": bind.rsplit(":", 1)[0],
                      "source": dict(ast_facts["sources"]["tlsbindaddr"], key="tlsbindaddr")})
    return table


def derive(up: Upstream, release: str) -> dict[str, Any]:
    facts: dict[str, Any] = {"release": release, "tag": tag_of(release),
                             "debian": debian(up, release)}
    for name, reader, repos in (
            ("version_file", version_file, ("wazo-platform",)),
            ("certs", certs, ("wazo-certs",)), ("hosts_template", hosts_template, ("xivo-config",)),
            ("nginx", nginx_site, ("wazo-nginx", "xivo-web-interface")),
            ("certs_fallback", certs_from_nginx, ("wazo-nginx", "xivo-web-interface")),
            ("asterisk", asterisk, ("wazo-asterisk-config", "xivo-config"))):
        for repo in repos:
            tag = up.tag(repo, release)
            value = reader(up, tag) if tag else None
            if value is not None:
                facts[name] = value
                break
    found_consul = consul(up, release)
    if found_consul:
        facts["consul"] = found_consul
    fallback = facts.pop("certs_fallback", None)
    if "certs" not in facts and fallback:
        facts["certs"] = fallback
    found_service = wazo_service(up, release)
    if found_service:
        facts["wazo_service"] = found_service
    found_meta = metapackage(up, release)
    if found_meta:
        facts["metapackage"] = found_meta
    facts["daemons"] = []
    seen: set[str] = set()
    platform_tag = up.tag("wazo-platform", release)
    control = (up.show("wazo-platform", platform_tag, "debian/control") or "") \
        if platform_tag else ""
    for repo in DAEMON_REPOS:
        tag = up.tag(repo, release)
        extra = extra_sites(up, repo, tag) if tag else []
        if extra:
            facts.setdefault("nginx_extra", []).extend(extra)
        for entry in daemons(up, repo, tag) if tag else []:
            # A repository not tagged at the release is there at its newest earlier tag, if
            # the metapackage still depends on it (xivo-ctid went away in 19.12).
            if tag != tag_of(release) and not re.search(
                    rf"(^|[\s,]){re.escape(entry['unit'])}([\s,(]|$)", control, re.M):
                continue
            if entry["unit"] not in seen:
                seen.add(entry["unit"])
                facts["daemons"].append(entry)
    if found_consul and found_consul["client_verify"]:
        for entry in facts["daemons"]:  # the packaged 050 link gives them consul's client file
            if entry.get("consul_links") and "consul.verify" not in entry["verifies_server_crt"]:
                entry["verifies_server_crt"] = sorted([*entry["verifies_server_crt"],
                                                       "consul.verify"])
    facts["endpoints"] = endpoints(facts)
    return facts


HEADER = ("# Facts of a Wazo {release} host, read from upstream's tag {tag} by\n"
          "# tests/releases/derive.py (python -m tests.releases.derive --upstream DIR {release}).\n"
          "# Each value cites its repository, tag and path; no upstream file is copied.\n")


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", type=Path, required=True)
    parser.add_argument("--check", action="store_true")
    parser.add_argument("releases", nargs="*", default=list(RELEASES))
    args = parser.parse_args(argv)
    up = Upstream(args.upstream)
    differ = 0
    for release in args.releases:
        facts = derive(up, release)
        text = HEADER.format(release=release, tag=facts["tag"]) + yaml.safe_dump(
            facts, sort_keys=False, default_flow_style=False, width=100)
        target = CORPUS / f"{release}.yml"
        if args.check:
            same = target.is_file() and target.read_text() == text
            print(f"{target}: {'up to date' if same else 'DIFFERS from upstream'}")
            differ += not same
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
            print(f"{target}: {len(facts['daemons'])} daemons, "
                  f"{len(facts['endpoints'])} TLS endpoints")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
