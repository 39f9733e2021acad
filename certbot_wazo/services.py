"""Wazo's commands: xivo-update-config and the restarts each generation needs, run without a shell."""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Optional, Sequence

from certbot_wazo.access import run
from certbot_wazo.errors import CommandError, HostError
from certbot_wazo.host import LEGACY, Host
from certbot_wazo.tls import Endpoint

# A systemd unit name as Wazo's daemons have them (validated before it reaches systemctl).
UNIT = re.compile(r"^[a-z0-9][a-z0-9_.@-]{0,99}$")
__all__ = [
    "gentle_commands",
    "require",
    "restart_commands",
    "run",
    "run_restart",
    "update_config",
    "update_config_command",
    "wazo_service_units",
]

logger = logging.getLogger(__name__)


def require(host: Host, *names: str) -> Path:
    """The path of the first of names the host has.

    :raises HostError: none of them is installed under the root
    """
    path = host.command(*names)
    if path is None:
        where = ", ".join(str(host.root / d) for d in ("usr/sbin", "usr/bin", "sbin", "bin"))
        raise HostError(f"{host.root}: command {' or '.join(names)} not found in {where} "
                        "(is this a Wazo host? check --wazo-root)")
    return path


def update_config_command(host: Host) -> list[str]:
    """xivo-update-config, which renders /etc/hosts from the templates.

    :raises HostError: not installed
    """
    return [str(require(host, "xivo-update-config"))]


def run_restart(host: Host, argv: Sequence[str], timeout: float) -> None:
    """Run one restart or reload command.

    Asterisk before 13.24 / 15.7 / 16.1 skips `module reload http` when http.conf is unchanged
    (main/http.c __ast_http_load and CONFIG_FLAG_FILEUNCHANGED): its mtime is bumped first so
    every version builds a new TLS context from the new pair.

    :raises CommandError: the command failed or timed out
    """
    if list(argv[1:]) == ["-rx", "module reload http"]:
        host.access.touch(host.path("/etc/asterisk/http.conf"))
    host.access.run(argv, timeout)


def update_config(host: Host, timeout: float) -> None:
    """Run xivo-update-config, which renders /etc/hosts from the templates.

    It exits 0 even when a template fails to render (it prints "ERROR: generation from template
    ... failed" and skips that module), so its output is read too.

    :raises CommandError: it failed, or reported a template it could not render
    """
    argv = update_config_command(host)
    output = host.access.run(argv, timeout)
    for line in output.splitlines():
        if line.startswith("ERROR"):
            raise CommandError(f"{argv[0]}: {line.strip()} (fix the template it names)")


# Services whose restart is not a `systemctl restart` of their own: nginx is reloaded, asterisk's
# HTTPS is reloaded, consul has its own line (modern), and a directory lookup's port is not a unit.
_SPECIAL = ("nginx", "asterisk", "consul")
# `wazo-service` names its groups in shell variables (wazo_services="...", default_services=
# "dahdi ... $wazo_services", all_services="rabbitmq-server ... $default_services"): wazo-platform/
# wazo-service, tags wazo-16.16 .. wazo-25.17, bin/wazo-service.
_ASSIGNMENT = re.compile(r"""^\s*([A-Za-z_][A-Za-z0-9_]*)=["']([^"'`]*)["']\s*(?:#.*)?$""")
_REFERENCE = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?")
MAX_SCRIPT = 256 * 1024


def wazo_service_units(host: Host) -> Optional[set[str]]:
    """The units `wazo-service restart all` (or xivo-service's) restarts, read from the host's
    own script as data, once (its *_services variables, references expanded; nothing is run).
    A script whose lists cannot be read gives every word it holds that could be a unit.

    :returns: None when there is no such script
    """
    path = host.command("wazo-service", "xivo-service")
    if path is None:
        return None
    try:
        with open(path, "rb") as stream:
            text = stream.read(MAX_SCRIPT).decode("utf-8", "replace")
    except OSError:
        return None
    variables: dict[str, str] = {}
    for line in text.splitlines():
        match = _ASSIGNMENT.match(line)
        if match:
            variables[match.group(1)] = _REFERENCE.sub(
                lambda ref, known=variables: known.get(ref.group(1), ""), match.group(2))
    lists = {name: value.split() for name, value in variables.items()
             if name.endswith("services") and value.split()}
    chosen = lists.get("all_services") or [unit for words in lists.values() for unit in words] \
        or re.split(r"[^A-Za-z0-9_.@-]+", text)
    return {unit for unit in chosen if UNIT.match(unit)}


def _own_units(endpoints: Sequence[Endpoint]) -> list[str]:
    """The systemd units of endpoints that are restarted by their own name."""
    return sorted({e.unit for e in endpoints if e.unit not in _SPECIAL and UNIT.match(e.unit)})


def restart_commands(host: Host, generation: str, directories: bool = False,
                     endpoints: Optional[Sequence[Endpoint]] = None) -> list[list[str]]:
    """The documented restart of a generation: legacy `wazo-service restart all`; modern nginx
    reload and wazo-phoned restart (asterisk is never restarted there); then `systemctl restart`
    of every unit serving the pair that these leave out (wazo-setupd is in no group of
    wazo-service at 19.17; a daemon only observation found is in none).

    :param directories: the directory definitions changed: wazo-dird, which reads them at
        start, is restarted too (`restart all` does it on legacy)
    :param endpoints: every endpoint serving the pair (default: those the configuration names)
    :raises HostError: a needed command is not installed
    """
    if endpoints is None:
        endpoints = host.endpoints()
    units = _own_units(endpoints)
    if generation == LEGACY:
        commands = [[str(require(host, "wazo-service", "xivo-service")), "restart", "all"]]
        covered = wazo_service_units(host) or set()
        left = [unit for unit in units if unit not in covered]
        if left:
            commands.append([str(require(host, "systemctl")), "restart", *left])
        return commands
    systemctl = str(require(host, "systemctl"))
    commands = [[systemctl, "reload", "nginx"]]
    restarted = []
    if directories and host.path("/etc/wazo-dird").is_dir():
        restarted.append("wazo-dird")
    if host.path("/etc/wazo-phoned").is_dir():
        restarted.append("wazo-phoned")
    restarted += [unit for unit in units if unit not in restarted]
    if restarted:
        commands.append([systemctl, "restart", *restarted])
    asterisk = host.command("asterisk")
    if asterisk is not None and any(e.unit == "asterisk" for e in endpoints):
        commands.append([str(asterisk), "-rx", "module reload http"])  # a reload, not a restart
    if any(e.unit == "consul" for e in endpoints):  # consul 8501 (wazo-consul-config, < 22.17)
        commands.append([systemctl, "restart", "consul"])
    return commands


def gentle_commands(host: Host, endpoints: Sequence[Endpoint]) -> list[list[str]]:
    """Reload or restart only what serves the pair, the gentlest way each supports: nginx
    reload (old workers drain), asterisk `module reload http` (a new TLS context for new
    connections, calls untouched), a restart of each Wazo daemon that serves TLS.

    :returns: [] when an endpoint's service is unknown (then only the documented restart will do)
    """
    units = [e.unit for e in endpoints]
    if not units or any(not UNIT.match(u) for u in units):
        return []
    commands: list[list[str]] = []
    systemctl = host.command("systemctl")
    asterisk = host.command("asterisk")
    if systemctl is None or ("asterisk" in units and asterisk is None):
        return []
    if "nginx" in units:
        commands.append([str(systemctl), "reload", "nginx"])
    if "asterisk" in units and asterisk is not None:
        commands.append([str(asterisk), "-rx", "module reload http"])
    daemons = sorted({u for u in units if u not in ("nginx", "asterisk")})
    if daemons:
        commands.append([str(systemctl), "restart", *daemons])
    return commands
