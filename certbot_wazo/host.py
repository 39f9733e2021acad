"""A Wazo host under a root directory: its paths, generation, TLS endpoints, names and commands."""
from __future__ import annotations

import ipaddress
import json
import logging
import os
import socket
from pathlib import Path
from typing import Optional

from certbot_wazo import wazoconfig
from certbot_wazo.errors import HostError
from certbot_wazo.pair import dns_names, load_chain, valid_dns_name
from certbot_wazo.tls import Endpoint

LEGACY = "legacy"
MODERN = "modern"
PROFILES = ("auto", LEGACY, MODERN)

XIVO_CERTS = "/usr/share/xivo-certs"
WAZO_CERTS = "/usr/share/wazo-certs"
CUSTOM_FILE = "/etc/xivo/custom/custom-certificate.yml"
LINK_NAME = "010-custom-certificate.yml"
HOSTS_BASE = "/usr/share/xivo-config/templates/system/etc/hosts"
HOSTS_CUSTOM = "/etc/xivo/custom-templates/system/etc/hosts"
HOSTS_FILE = "/etc/hosts"
COMMON_CONF = "/etc/xivo/common.conf"
STATE_DIR = "/var/lib/certbot-wazo"
COMMAND_DIRS = ("usr/sbin", "usr/bin", "sbin", "bin")
# Daemons that still serve TLS themselves on a modern (nginx-fronted) Wazo.
MODERN_TLS_UNITS = ("wazo-phoned",)

logger = logging.getLogger(__name__)


class Host:
    """A Wazo host whose every path and command is taken under root."""

    def __init__(self, root: Path | str = "/") -> None:
        self.root = Path(os.path.realpath(root))
        # Read once per Host: a deployment reads them for the generation, the endpoints and the
        # gentle path; what it writes (010 links) changes no listener.
        self._configs: Optional[dict[str, dict[str, object]]] = None

    def __repr__(self) -> str:
        return f"Host({str(self.root)!r})"

    def path(self, wazo_path: str) -> Path:
        """Where a Wazo path (e.g. /etc/xivo/common.conf) is under the root."""
        return self.root / wazo_path.lstrip("/")

    # -- layout -------------------------------------------------------------------------------
    def cert_dirs(self) -> list[Path]:
        """The certificate directories present: xivo-certs (legacy) and/or wazo-certs (19.01+)."""
        return [self.path(d) for d in (XIVO_CERTS, WAZO_CERTS) if self.path(d).is_dir()]

    def cert_paths(self) -> set[str]:
        """Wazo paths of server.crt as configuration files name them."""
        return {f"{d}/server.crt" for d in (XIVO_CERTS, WAZO_CERTS)}

    def daemon_dirs(self) -> list[Path]:
        """Every /etc/xivo-* and /etc/wazo-* directory (one per daemon or tool)."""
        etc = self.path("/etc")
        if not etc.is_dir():
            return []
        return sorted(p for p in etc.iterdir()
                      if p.name.startswith(("xivo-", "wazo-")) and p.is_dir()
                      and not p.is_symlink())

    def conf_d_dirs(self) -> list[Path]:
        """Every daemon's conf.d, where the overrides must be linked.

        :raises HostError: a conf.d is not a directory
        """
        found = []
        for directory in self.daemon_dirs():
            conf_d = directory / "conf.d"
            if conf_d.is_symlink() or (conf_d.exists() and not conf_d.is_dir()):
                raise HostError(f"{conf_d}: is not a directory (Wazo daemons read their "
                                "overrides from a conf.d directory: move the file away)")
            if conf_d.is_dir():
                found.append(conf_d)
        return found

    def daemon_configs(self) -> dict[str, dict[str, object]]:
        """Each daemon's effective configuration, by unit name.

        :raises HostError: a configuration file is malformed
        """
        if self._configs is None:
            self._configs = {d.name: wazoconfig.daemon_config(d) for d in self.daemon_dirs()
                             if (d / "config.yml").is_file() or (d / "conf.d").is_dir()}
        return self._configs

    def common_conf(self) -> dict[str, str]:
        """The XIVO_* variables of /etc/xivo/common.conf.

        :raises HostError: the file is missing
        """
        return wazoconfig.read_shell_vars(self.path(COMMON_CONF))

    def fqdn(self) -> Optional[str]:
        """XIVO_HOSTNAME.XIVO_DOMAIN, the name the base hosts template maps."""
        try:
            conf = self.common_conf()
        except HostError:
            return None
        host, domain = conf.get("XIVO_HOSTNAME", ""), conf.get("XIVO_DOMAIN", "")
        return f"{host}.{domain}".lower() if host and domain else (host.lower() or None)

    def www_data_gid(self) -> int:
        """The www-data group of the host (from ROOT/etc/group).

        :raises HostError: the group is missing
        """
        group_file = self.path("/etc/group")
        try:
            lines = group_file.read_text(encoding="utf-8").splitlines()
        except OSError:
            lines = []
        for line in lines:
            fields = line.split(":")
            if len(fields) >= 3 and fields[0] == "www-data" and fields[2].isdigit():
                return int(fields[2])
        raise HostError(f"{group_file}: no www-data group (Wazo's services read the certificate "
                        "as www-data: create it with 'groupadd --system www-data')")

    def command(self, *names: str) -> Optional[Path]:
        """The first of names found as an executable in ROOT/usr/sbin, usr/bin, sbin, bin."""
        for name in names:
            for directory in COMMAND_DIRS:
                candidate = self.root / directory / name
                if candidate.is_file() and os.access(candidate, os.X_OK):
                    return candidate
        return None

    # -- generation ---------------------------------------------------------------------------
    def generation(self, profile: str = "auto") -> str:
        """legacy when Wazo daemons serve TLS with the pair or verify peers against server.crt.

        :raises HostError: a daemon configuration is malformed
        """
        if profile in (LEGACY, MODERN):
            return profile
        cert_paths = self.cert_paths()
        for unit, conf in self.daemon_configs().items():
            if unit in MODERN_TLS_UNITS:
                continue
            if any(v in cert_paths for v in wazoconfig.walk_values(conf, "verify_certificate")):
                return LEGACY
            if _https_section(conf, cert_paths) is not None:
                return LEGACY
        return MODERN

    # -- endpoints ----------------------------------------------------------------------------
    def endpoints(self) -> list[Endpoint]:
        """The TLS endpoints serving the pair, from the host's configuration.

        :raises HostError: a configuration file is malformed
        """
        cert_paths = self.cert_paths()
        found: list[Endpoint] = []
        for unit, conf in self.daemon_configs().items():
            https = _https_section(conf, cert_paths)
            if https is not None and str(https.get("port", "")).isdigit():
                found.append(Endpoint(_loopback(str(https.get("listen", "0.0.0.0"))),
                                      int(str(https["port"])), unit))
        sites = self.path("/etc/nginx/sites-enabled")
        for site in sorted(sites.iterdir()) if sites.is_dir() else []:
            for listen in wazoconfig.nginx_tls_listens(self._read(site), cert_paths):
                found.append(_listen_endpoint(listen, 443, "nginx"))
        http_conf = self.path("/etc/asterisk/http.conf")
        if http_conf.is_file():
            for bind in wazoconfig.asterisk_tls_bind(self._asterisk_text(http_conf), cert_paths):
                found.append(_listen_endpoint(bind, 8089, "asterisk"))
        consul = self.path("/etc/consul/xivo/config.json")
        if consul.is_file():
            try:
                data = json.loads(self._read(consul))
                port = data.get("ports", {}).get("https")
                if data.get("cert_file") in cert_paths and isinstance(port, int):
                    found.append(Endpoint("127.0.0.1", port, "consul"))
            except (ValueError, AttributeError):
                raise HostError(f"{consul}: not valid JSON (fix it)") from None
        # One probe per port on loopback: IPv4 first, so "listen [::]:443" adds nothing.
        unique: dict[tuple[str, int], Endpoint] = {}
        for endpoint in sorted(found, key=lambda e: ":" in e.address):
            key = ("loopback" if endpoint.address in ("127.0.0.1", "::1") else endpoint.address,
                   endpoint.port)
            unique.setdefault(key, endpoint)
        return list(unique.values())

    def _asterisk_text(self, conf: Path) -> str:
        """An asterisk configuration file with its #include / #tryinclude files inlined (Wazo
        18.13-22.06 ship http.conf as `#include http.d/*.conf`)."""
        lines = []
        for line in self._read(conf).splitlines():
            words = line.split(None, 1)
            if len(words) == 2 and words[0] in ("#include", "#tryinclude"):
                pattern = words[1].strip().strip('"<>')
                base = self.path(pattern) if pattern.startswith("/") else conf.parent / pattern
                lines += [self._read(p) for p in sorted(base.parent.glob(base.name))
                          if p.is_file()]
            else:
                lines.append(line)
        return "\n".join(lines)

    def _read(self, path: Path) -> str:
        try:
            return path.read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            raise HostError(f"{path}: cannot be read ({exc.strerror})") from None

    # -- names --------------------------------------------------------------------------------
    def names(self) -> set[str]:
        """Names this Wazo answers to: its FQDN, hostname, nginx server names, installed certificate."""
        candidates: list[str] = []
        fqdn = self.fqdn()
        if fqdn:
            candidates.append(fqdn)
        hostname = self.path("/etc/hostname")
        if hostname.is_file():
            candidates.extend(self._read(hostname).split())
        sites = self.path("/etc/nginx/sites-enabled")
        for site in sorted(sites.iterdir()) if sites.is_dir() else []:
            candidates.extend(wazoconfig.nginx_server_names(self._read(site)))
        for directory in self.cert_dirs():
            crt = directory / "server.crt"
            try:
                candidates.extend(dns_names(load_chain(crt.read_bytes(), crt)[0]))
            except Exception as exc:  # an unreadable certificate only means fewer names
                logger.debug("%s: no names read (%s)", crt, exc)
        return {n.lower() for n in candidates
                if valid_dns_name(n) and "." in n and not n.startswith("*.")
                and n.lower() not in ("localhost", "localhost.localdomain")}

    def resolves_to_loopback(self, name: str) -> Optional[str]:
        """None when name resolves to 127.0.0.1 on this host, else what it resolves to.

        With root "/", the system resolver answers; under another root, the host's own
        ROOT/etc/hosts (as xivo-update-config wrote it) is read the way the resolver reads it.
        """
        if self.root == Path("/"):
            try:
                infos = socket.getaddrinfo(name, None, socket.AF_INET)
            except socket.gaierror as exc:
                return f"nothing ({exc.strerror})"
            first = str(infos[0][4][0])
            return None if first == "127.0.0.1" else first
        hosts = self.path(HOSTS_FILE)
        try:
            text = hosts.read_text(encoding="utf-8")
        except OSError:
            return f"nothing ({hosts} is missing)"
        address = wazoconfig.hosts_address(text, name)
        if address is not None:
            return None if address == "127.0.0.1" else address
        return f"nothing (no entry in {hosts})"


def _https_section(conf: dict[str, object], cert_paths: set[str]) -> Optional[dict[str, object]]:
    """The listener that serves the pair: rest_api.https (most daemons) or websocket with
    ssl (xivo-websocketd)."""
    rest_api = conf.get("rest_api")
    candidates = [rest_api.get("https") if isinstance(rest_api, dict) else None]
    websocket = conf.get("websocket")
    if isinstance(websocket, dict) and websocket.get("ssl") in (True, "true", "yes"):
        candidates.append(websocket)
    for section in candidates:
        if isinstance(section, dict) and section.get("enabled", True) not in (False, "false", "no") \
                and section.get("certificate") in cert_paths:
            return section
    return None


def _loopback(address: str) -> str:
    address = address.strip("[]")
    if address in ("", "*", "0.0.0.0"):
        return "127.0.0.1"
    if address == "::":
        return "::1"
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return "127.0.0.1"
    return address


def _listen_endpoint(value: str, default_port: int, unit: str) -> Endpoint:
    if value.isdigit():
        return Endpoint("127.0.0.1", int(value), unit)
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        return Endpoint(_loopback(value), default_port, unit)
    return Endpoint(_loopback(host), int(port), unit)
