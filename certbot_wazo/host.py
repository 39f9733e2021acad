"""A Wazo host under a root directory: its paths, generation, TLS endpoints, names and commands."""
from __future__ import annotations

import ipaddress
import json
import logging
import os
import socket
from pathlib import Path
from typing import Iterator, Optional

from cryptography.hazmat.primitives.serialization import Encoding

from certbot_wazo import nginxconf, releases, wazoconfig
from certbot_wazo.access import Access, LocalAccess
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
DPKG_INFO = "/var/lib/dpkg/info"
# Consul reads every *.json of its configuration directories: xivo-config's /etc/consul/xivo
# (legacy) and /etc/consul.d (wazo-consul-config).
CONSUL_DIRS = ("/etc/consul/xivo", "/etc/consul.d")
COMMAND_DIRS = ("usr/sbin", "usr/bin", "sbin", "bin")
# Daemons that still serve TLS themselves on a modern (nginx-fronted) Wazo.
MODERN_TLS_UNITS = ("wazo-phoned",)

logger = logging.getLogger(__name__)


class Host:
    """A Wazo host whose every path and command is taken under root."""

    def __init__(self, root: Path | str = "/", access: Optional[Access] = None) -> None:
        self.root = Path(os.path.realpath(root))
        # How its files are changed and its commands run (remote.SshAccess: over SSH, root
        # being a mirror of the remote host's files).
        self.access: Access = access or LocalAccess()
        # Read once per Host: a deployment reads them for the generation, the endpoints and the
        # gentle path; what it writes (010 links) changes no listener.
        self._configs: Optional[dict[str, dict[str, object]]] = None
        self._packaged: Optional[dict[str, dict[str, object]]] = None
        self._yaml: dict[Path, object] = {}  # each YAML file parsed once per Host
        self._nginx: Optional[list[nginxconf.Directive]] = None
        self._owners: Optional[dict[str, str]] = None
        self._version: Optional[releases.Version] = None
        self._version_read = False
        # What Wazo itself would skip or what certbot-wazo cannot know (said, never fatal).
        self.warnings: list[str] = []
        # Whole conf.d files Wazo computes when a daemon starts (`!exec`): not run, not read.
        self.computed: list[wazoconfig.Hidden] = []

    def __repr__(self) -> str:
        return f"Host({str(self.root)!r})"

    def path(self, wazo_path: str) -> Path:
        """Where a Wazo path (e.g. /etc/xivo/common.conf) is under the root."""
        return self.root / wazo_path.lstrip("/")

    # -- layout -------------------------------------------------------------------------------
    def cert_dirs(self) -> list[Path]:
        """The certificate directories present: xivo-certs (legacy) and/or wazo-certs (19.01+)."""
        return [self.path(d) for d in (XIVO_CERTS, WAZO_CERTS) if self.path(d).is_dir()]

    def require_cert_dirs(self, root_option: str = "--root") -> list[Path]:
        """cert_dirs(), which a Wazo host always has.

        :raises HostError: none: not a Wazo host, or a mistyped root
        """
        directories = self.cert_dirs()
        if not directories:
            raise HostError(f"{self.path(XIVO_CERTS)}: no Wazo certificate directory (xivo-certs "
                            f"or wazo-certs; is {self.root} a Wazo host? check {root_option})")
        return directories

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
        """Each daemon's effective configuration, by unit name, merged as Wazo merges it
        (conf.d, config.yml, then the daemon's code defaults at this release).

        :raises HostError: a daemon's config.yml is malformed (the daemon cannot start either)
        """
        if self._configs is None:
            self._configs = self._read_configs()
        return self._configs

    def packaged_configs(self) -> dict[str, dict[str, object]]:
        """Each daemon's configuration without the overrides' 010 link: what the packages (and
        the admin's other files) say, which the overrides' `verify_certificate: True` hides.

        :raises HostError: a daemon's config.yml is malformed
        """
        if self._packaged is None:
            self._packaged = self._read_configs(skip=(LINK_NAME,))
        return self._packaged

    def _read_configs(self, skip: tuple[str, ...] = ()) -> dict[str, dict[str, object]]:
        configs: dict[str, dict[str, object]] = {}
        version = self.version()
        for directory in self.daemon_dirs():
            defaults = releases.code_defaults(directory.name, version)
            if not (defaults or (directory / "config.yml").is_file()
                    or (directory / "conf.d").is_dir()):
                continue
            config = wazoconfig.daemon_config(directory, self.path, defaults,
                                              self.packaged_by,
                                              yml_only=version is None or version >= (15, 16),
                                              skip=skip, cache=self._yaml)
            if not skip:
                self._warn(*(f"{skipped}; Wazo's daemons skip it too" for skipped in
                             config.skipped))
                self.computed.extend(config.computed)
            configs[directory.name] = config.values
        return configs

    def version(self) -> Optional[releases.Version]:
        """The Wazo release the host says it runs (its version file), None when unknown."""
        if not self._version_read:
            self._version, self._version_read = releases.read_version(self.path), True
            if self._version is None and self.cert_dirs():
                self._warn(f"{self.path(releases.VERSION_FILES[0])}: no Wazo release could be "
                           f"read (nor from {releases.VERSION_FILES[1]}); listeners Wazo's "
                           "daemons state only in their code are found by observing what listens "
                           "and serves Wazo's certificate (restore the version file)")
        return self._version

    def family(self) -> Optional[releases.Family]:
        """The release family (and so the upstream procedure) of the host, when known."""
        return releases.family(self.version())

    def packaged_by(self, path: Path) -> Optional[str]:
        """The Debian package that ships path (from the host's dpkg database), if any."""
        if self._owners is None:
            self._owners = {}
            info = self.path(DPKG_INFO)
            for listing in sorted(info.glob("*.list")) if info.is_dir() else []:
                package = listing.name[:-len(".list")].split(":", 1)[0]
                try:
                    text = listing.read_text(encoding="utf-8", errors="replace")
                except OSError:
                    continue
                for line in text.splitlines():
                    self._owners.setdefault(line, package)
        try:
            wazo_path = "/" + str(path.relative_to(self.root)).lstrip("/")
        except ValueError:
            return None
        return self._owners.get(wazo_path)

    def _warn(self, *messages: str) -> None:
        for message in messages:
            if message not in self.warnings:
                self.warnings.append(message)

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
            lines = group_file.read_text(encoding="utf-8", errors="replace").splitlines()
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
        # Read without the overrides: their `verify_certificate: True` hides the server.crt
        # that made the host legacy, and a renewal must take the same path as the migration.
        for unit, conf in self.packaged_configs().items():
            if unit in MODERN_TLS_UNITS:
                continue
            if any(v in cert_paths for v in wazoconfig.walk_values(conf, "verify_certificate")):
                return LEGACY
            if _https_section(conf, cert_paths) is not None:
                return LEGACY
        return MODERN

    def peers_verifying_pair(self) -> list[str]:
        """Daemons that verify their peers against Wazo's server.crt (so a CA-issued pair there
        needs the overrides: host NAME, verification with the system trust store).

        :raises HostError: a daemon configuration is malformed
        """
        return sorted({unit for unit, _, _ in self._verifications()})

    def verifying_sections(self) -> dict[str, str]:
        """Client sections (section name -> its verification key) that some daemon verifies
        against Wazo's server.crt: what the overrides must switch to the system trust store.

        :raises HostError: a daemon configuration is malformed
        """
        found: dict[str, str] = {}
        for _, section, key in self._verifications():
            found.setdefault(section, key)
        return found

    def _verifications(self) -> Iterator[tuple[str, str, str]]:
        """(unit, client section, verification key) for every client section of the packaged
        configuration that verifies against server.crt (wazo-phoned's own excepted)."""
        cert_paths = self.cert_paths()
        for unit, conf in self.packaged_configs().items():
            if unit in MODERN_TLS_UNITS:
                continue
            for section, value in conf.items():
                if isinstance(value, dict):
                    for key in ("verify_certificate", "verify"):
                        if value.get(key) in cert_paths:
                            yield unit, str(section), key

    # -- endpoints ----------------------------------------------------------------------------
    def endpoints(self) -> list[Endpoint]:
        """The TLS endpoints serving the pair, from the host's configuration.

        :raises HostError: a configuration file is malformed
        """
        cert_paths = self.cert_paths()
        found: list[Endpoint] = []
        for unit, conf in self.daemon_configs().items():
            https = _https_section(conf, cert_paths)
            if https is None:
                continue
            hidden = [f"{v.path}: {unit}'s {k} comes from '{v}', which certbot-wazo does not "
                      "run (check that endpoint with --probe/--wazo-probe ADDR:PORT)"
                      for k, v in https.items() if isinstance(v, wazoconfig.Hidden)]
            self._warn(*hidden)
            if not hidden and str(https.get("port", "")).isdigit():
                found.append(Endpoint(loopback(str(https.get("listen", "0.0.0.0"))),
                                      int(str(https["port"])), unit))
        for server in self.nginx_servers():
            if set(server.certificates) & cert_paths:
                found.append(Endpoint(loopback(server.address), server.port, "nginx"))
        http_conf = self.path("/etc/asterisk/http.conf")
        if http_conf.is_file():
            for bind in wazoconfig.asterisk_tls_bind(self._asterisk_text(http_conf), cert_paths):
                found.append(_listen_endpoint(bind, 8089, "asterisk"))
        port = self._consul_https_port(cert_paths)
        if port is not None:
            found.append(Endpoint("127.0.0.1", port, "consul"))
        # One probe per port on loopback: IPv4 first, so "listen [::]:443" adds nothing.
        unique: dict[tuple[str, int], Endpoint] = {}
        for endpoint in sorted(found, key=lambda e: ":" in e.address):
            key = ("loopback" if endpoint.address in ("127.0.0.1", "::1") else endpoint.address,
                   endpoint.port)
            unique.setdefault(key, endpoint)
        return list(unique.values())

    def nginx_servers(self) -> list[nginxconf.TlsServer]:
        """The TLS servers of the host's nginx, read from nginx.conf as nginx reads it.

        :raises HostError: nginx's configuration cannot be read or parsed
        """
        return nginxconf.tls_servers(self._nginx_directives())

    def _nginx_directives(self) -> list[nginxconf.Directive]:
        """nginx's whole configuration, read once per Host."""
        if self._nginx is None:
            self._nginx = nginxconf.load(self.path) \
                if self.path(nginxconf.NGINX_CONF).is_file() else []
        return self._nginx

    def nginx_foreign(self, name: str) -> list[tuple[nginxconf.TlsServer, bytes]]:
        """nginx servers that answer for name on a port Wazo's site serves (443 at least) with a
        certificate that is not Wazo's pair (certbot --nginx, or a hand edit of the site), each
        with the DER of the leaf its file holds (b"" when it cannot be read).

        :raises HostError: nginx's configuration cannot be read or parsed
        """
        cert_paths = self.cert_paths()
        servers = self.nginx_servers()
        ports = {s.port for s in servers if set(s.certificates) & cert_paths} | {443}
        return [(s, self._leaf_in(s.certificates[0])) for s in servers
                if s.port in ports and s.certificates and not set(s.certificates) & cert_paths
                and nginxconf.answers_for(s, name)]

    def _leaf_in(self, wazo_path: str) -> bytes:
        path = self.path(wazo_path)
        try:
            with open(path, "rb") as stream:
                chain = load_chain(stream.read(1024 * 1024), path)
        except Exception as exc:  # unreadable: it cannot be the pair being deployed
            logger.debug("%s: no certificate read (%s)", path, exc)
            return b""
        return chain[0].public_bytes(Encoding.DER)

    def _consul_https_port(self, cert_paths: set[str]) -> Optional[int]:
        """Consul's HTTPS port when it serves the pair (its *.json files merged in name order,
        later files win, as consul merges them).

        :raises HostError: a consul file is not JSON
        """
        merged: dict[str, object] = {}
        for directory in (self.path(d) for d in CONSUL_DIRS):
            for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
                try:
                    data = json.loads(self._read(path))
                except ValueError:
                    raise HostError(f"{path}: not valid JSON (fix it; consul cannot start "
                                    "with it either)") from None
                if isinstance(data, dict):
                    merged = wazoconfig.deep_merge(data, merged)  # later files win
        tls_defaults = _mapping(_mapping(merged.get("tls")).get("defaults"))
        cert = merged.get("cert_file") or tls_defaults.get("cert_file")
        port = _mapping(merged.get("ports")).get("https")
        if cert in cert_paths and isinstance(port, int) and port > 0:
            return port
        return None

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
        try:
            candidates.extend(nginxconf.server_names(self._nginx_directives()))
        except HostError as exc:  # a broken nginx configuration only means fewer names
            logger.debug("no nginx server names: %s", exc)
        for directory in self.cert_dirs():
            crt = directory / "server.crt"
            try:
                candidates.extend(dns_names(load_chain(crt.read_bytes(), crt)[0]))
            except Exception as exc:  # an unreadable certificate only means fewer names
                logger.debug("%s: no names read (%s)", crt, exc)
        return {n.lower() for n in candidates
                if valid_dns_name(n) and "." in n and not n.startswith("*.")
                and n.lower() not in ("localhost", "localhost.localdomain")}

    def pick_name(self, candidates: list[str]) -> Optional[str]:
        """Which of a certificate's names is this host's: its FQDN first, then a name its
        configuration already uses, else the only candidate; None when that is ambiguous."""
        lowered = [c.lower() for c in candidates]
        fqdn = self.fqdn()
        if fqdn in lowered:
            return fqdn
        used = self._names_in_use()
        for name in lowered:
            if name in used:
                return name
        return lowered[0] if len(lowered) == 1 else None

    def _names_in_use(self) -> set[str]:
        """Names the host's configuration already gives itself: the overrides' host values,
        /etc/hostname, nginx's server names, the installed certificate's names."""
        used = set(self.names())
        custom = self.path(CUSTOM_FILE)
        if custom.is_file():
            try:
                data = wazoconfig.load_yaml(custom)
            except HostError:
                data = {}
            used.update(str(v.get("host")).lower() for v in data.values()
                        if isinstance(v, dict) and v.get("host"))
        return used

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
            text = hosts.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return f"nothing ({hosts} is missing)"
        address = wazoconfig.hosts_address(text, name)
        if address is not None:
            return None if address == "127.0.0.1" else address
        return f"nothing (no entry in {hosts})"


def _https_section(conf: dict[str, object], cert_paths: set[str]) -> Optional[dict[str, object]]:
    """The listener that serves the pair: rest_api.https (most daemons), rest_api itself (some
    releases put certificate and port there), or websocket with ssl (xivo-websocketd)."""
    rest_api = conf.get("rest_api")
    candidates = [rest_api.get("https"), rest_api] if isinstance(rest_api, dict) else []
    # wazo-provd (19.03-20.08) spells it rest_api: ip, port, ssl, ssl_certfile, ssl_keyfile.
    if isinstance(rest_api, dict) and rest_api.get("ssl") is True and \
            rest_api.get("ssl_certfile") in cert_paths:
        candidates.append({"listen": rest_api.get("ip", "0.0.0.0"), "port": rest_api.get("port"),
                           "certificate": rest_api["ssl_certfile"],
                           "private_key": rest_api.get("ssl_keyfile")})
    # wazo-admin-ui (17.03-18.13) serves TLS from a top-level `https` section (wazo-pbx/
    # wazo-admin-ui, tags wazo-17.17 and wazo-18.03, etc/wazo-admin-ui/config.yml and
    # wazo_admin_ui/http_server.py).
    candidates.append(conf.get("https"))
    websocket = conf.get("websocket")
    # wazo-websocketd serves TLS whenever its websocket section names a certificate (its code
    # default up to 20.08, wazo-platform/wazo-websocketd */config.py); no `ssl` switch.
    if isinstance(websocket, dict):
        candidates.append(websocket)
    for section in candidates:
        if isinstance(section, dict) and section.get("certificate") in cert_paths and \
                all(section.get(k, True) not in (False, "false", "no") for k in ("enabled", "ssl")):
            return section
    return None


def _mapping(value: object) -> dict[str, object]:
    return value if isinstance(value, dict) else {}


def loopback(address: str) -> str:
    """Where a probe reaches a listen address from the host itself."""
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
        return Endpoint(loopback(value), default_port, unit)
    return Endpoint(loopback(host), int(port), unit)
