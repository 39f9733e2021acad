"""Options shared by the installer and the command line, validated before they reach a file or a command."""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Optional

from certbot_wazo.deployment import Settings
from certbot_wazo.host import PROFILES
from certbot_wazo.pair import valid_dns_name
from certbot_wazo.tls import Endpoint

DEFAULT_PROBE_TIMEOUT = 60.0

__all__ = ["DEFAULT_PROBE_TIMEOUT", "PROFILES", "destinations", "settings"]

# [USER@]HOST as ssh takes it; never an option ("-oProxyCommand=…" would run a command here).
DESTINATION = re.compile(r"^(?:[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}@)?[A-Za-z0-9_][A-Za-z0-9_.:-]{0,252}$")


def destinations(values: list[str], hosts_file: Optional[str] = None,
                 prefix: str = "--") -> list[str]:
    """The SSH destinations of --ssh (each may be a comma-separated list) and of a hosts file
    (one per line, # comments), in order, without repeats; [USER@]HOST:/PATH gives that host
    its own root.

    :raises ValueError: a destination is not [USER@]HOST, or the hosts file cannot be read
    """
    found: list[str] = []
    items = [item for value in values for item in value.split(",")]
    if hosts_file is not None:
        try:
            with open(hosts_file, encoding="utf-8") as stream:
                lines = stream.read(1024 * 1024).splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"{hosts_file}: cannot be read ({getattr(exc, 'strerror', exc)}; "
                             "give one [USER@]HOST per line)") from None
        items += [line.split("#", 1)[0] for line in lines]
    for item in (i.strip() for i in items):
        if not item:
            continue
        if not DESTINATION.match(item.split(":/", 1)[0]):
            where = hosts_file if hosts_file and item not in values else f"{prefix}ssh"
            raise ValueError(f"{where}: {item[:80]!r} is not [USER@]HOST (e.g. "
                             "root@pbx.example.com, or a Host of your ssh configuration)")
        if item not in found:
            found.append(item)
    return found


def settings(root: str | Path = "/", profile: str = "auto", hostname: Optional[str] = None,
             probe: Optional[str] = None, probe_timeout: float = DEFAULT_PROBE_TIMEOUT,
             prefix: str = "--wazo-", force_profile: bool = False, ssh: Optional[str] = None,
             ssh_config: Optional[str] = None, sudo: bool = False) -> Settings:
    """Settings from option values.

    :raises ValueError: an option is invalid; the message names it and the fix
    """
    if ssh is not None and ":/" in ssh:  # HOST:/ROOT: this host's own root
        ssh, _, rest = ssh.partition(":/")
        root = "/" + rest
    if str(root) == "":
        raise ValueError(f"{prefix}root: empty (give the directory Wazo is installed under, "
                         "/ on the Wazo host itself)")
    root_path = Path(root)
    if not root_path.is_absolute():
        root_path = root_path.absolute()
    if profile not in PROFILES:
        raise ValueError(f"{prefix}profile: {profile!r} is not one of {', '.join(PROFILES)}")
    if hostname is not None:
        hostname = hostname.strip().lower().rstrip(".")
        if not valid_dns_name(hostname) or hostname.startswith("*."):
            raise ValueError(f"{prefix}hostname: {hostname!r} is not a DNS name (give one of the "
                             "certificate's names, e.g. wazo.example.com)")
    probes: list[Endpoint] = []
    for item in (probe or "").split(","):
        if item.strip():
            try:
                probes.append(Endpoint.parse(item))
            except ValueError:
                raise ValueError(f"{prefix}probe: {item.strip()!r} is not ADDR:PORT (e.g. "
                                 "127.0.0.1:443 or [::1]:443)") from None
    timeout = float(probe_timeout)
    if not math.isfinite(timeout) or timeout <= 0:
        raise ValueError(f"{prefix}probe-timeout: {probe_timeout!r} must be a positive number "
                         "of seconds")
    if sudo and not ssh:
        raise ValueError(f"{prefix}sudo: only with {prefix}ssh (it is how commands run on a "
                         "remote host reached as an unprivileged user; drop it, or give "
                         f"{prefix}ssh USER@HOST)")
    if ssh is not None and not DESTINATION.match(ssh):
        raise ValueError(f"{prefix}ssh: {ssh[:80]!r} is not [USER@]HOST (e.g. "
                         "root@pbx.example.com)")
    config = None
    if ssh_config:
        config = Path(ssh_config).absolute()
        if not config.is_file():
            raise ValueError(f"{prefix}ssh-config: {ssh_config} is not a file (give an ssh "
                             "client configuration, as ssh -F takes it)")
    return Settings(root=root_path, profile=profile, hostname=hostname, probes=tuple(probes),
                    probe_timeout=timeout, option_prefix=prefix,
                    force_profile=bool(force_profile), ssh=ssh or None, ssh_config=config,
                    sudo=bool(sudo))
