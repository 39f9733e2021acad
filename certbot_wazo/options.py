"""Options shared by the installer and the command line, validated before they reach a file or a command."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

from certbot_wazo.deployment import Settings
from certbot_wazo.host import PROFILES
from certbot_wazo.pair import valid_dns_name
from certbot_wazo.tls import Endpoint

DEFAULT_PROBE_TIMEOUT = 60.0

__all__ = ["DEFAULT_PROBE_TIMEOUT", "PROFILES", "settings"]


def settings(root: str | Path = "/", profile: str = "auto", hostname: Optional[str] = None,
             probe: Optional[str] = None, probe_timeout: float = DEFAULT_PROBE_TIMEOUT,
             prefix: str = "--wazo-", force_profile: bool = False) -> Settings:
    """Settings from option values.

    :raises ValueError: an option is invalid; the message names it and the fix
    """
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
    return Settings(root=root_path, profile=profile, hostname=hostname, probes=tuple(probes),
                    probe_timeout=timeout, option_prefix=prefix,
                    force_profile=bool(force_profile))
