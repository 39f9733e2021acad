"""Wazo's commands: xivo-update-config and the restarts each generation needs, run without a shell."""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Sequence

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


def restart_commands(host: Host, generation: str, directories: bool = False) -> list[list[str]]:
    """The documented restart of a generation: legacy `wazo-service restart all`; modern nginx
    reload and wazo-phoned restart (asterisk is never restarted there).

    :param directories: the directory definitions changed: wazo-dird, which reads them at
        start, is restarted too (`restart all` does it on legacy)
    :raises HostError: a needed command is not installed
    """
    if generation == LEGACY:
        return [[str(require(host, "wazo-service", "xivo-service")), "restart", "all"]]
    systemctl = str(require(host, "systemctl"))
    commands = [[systemctl, "reload", "nginx"]]
    if directories and host.path("/etc/wazo-dird").is_dir():
        commands.append([systemctl, "restart", "wazo-dird"])
    if host.path("/etc/wazo-phoned").is_dir():
        commands.append([systemctl, "restart", "wazo-phoned"])
    endpoints = host.endpoints()
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
