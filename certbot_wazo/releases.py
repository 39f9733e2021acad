"""What each Wazo release is, as upstream ships it: its version, family, procedure, code defaults.

Every fact here is checked against the corpus of upstream's tagged files (tests/data/releases/,
each fact citing repository, tag and path) by tests/unit/test_releases.py.
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any, Callable, Optional

from certbot_wazo.wazoconfig import deep_merge

Version = tuple[int, int]

# wazo-platform/wazo-platform debian/rules (19.08+) installs VERSION as WAZO-VERSION; the xivo
# metapackage it replaced wrote XIVO-VERSION (wazo-platform/wazo-platform, tag wazo-19.08).
VERSION_FILES = ("/usr/share/wazo/WAZO-VERSION", "/usr/share/xivo/XIVO-VERSION")


@dataclasses.dataclass(frozen=True)
class Family:
    """A range of releases for which upstream documented one HTTPS certificate procedure."""

    name: str
    first: Version
    last: Optional[Version]
    generation: str
    procedure: str
    doc: str

    @property
    def overrides(self) -> bool:
        """Whether upstream's procedure for this range writes the services' overrides."""
        return self.name == "legacy-overrides"

    def covers(self, version: Version) -> bool:
        """Whether version is in this range."""
        return self.first <= version and (self.last is None or version <= self.last)

    @property
    def releases(self) -> str:
        """The range as people write it (15.12-18.03, 19.01+)."""
        first = _text(self.first)
        return f"{first}-{_text(self.last)}" if self.last else f"{first}+"


def _text(version: Version) -> str:
    return f"{version[0]}.{version[1]:02d}"


FAMILIES = (
    Family("replace-files", (15, 12), (15, 17), "legacy",
           "replace server.crt and server.key in /usr/share/xivo-certs (no overrides)",
           "wazo-platform/wazo-doc xivo-15.12 source/system/https_certificate.rst"),
    Family("legacy-overrides", (15, 18), (18, 14), "legacy",
           "replace the pair; custom-certificate.yml (host NAME, verification on) linked as "
           "010-custom-certificate.yml into every conf.d; NAME on 127.0.0.1 in the hosts "
           "template; restart all",
           "wazo-platform/wazo-doc wazo-18.05 source/system/https_certificate.rst"),
    Family("nginx-only", (19, 1), None, "modern",
           "nginx serves the new pair (certbot --nginx or its own ssl_certificate); Wazo's own "
           "pair and the daemons stay as packaged; earlier overrides are reverted",
           "wazo-platform/wazo-doc wazo-19.01 source/system/https_certificate.rst; "
           "wazo-platform/wazo-platform.org website/uc-doc/system/https_certificate.md"),
)


def parse_version(text: str) -> Optional[Version]:
    """The release of a version file's content ("19.17", "25.14.1", "xivo-15.12")."""
    match = re.search(r"(\d{2})\.(\d{2})", text)
    return (int(match.group(1)), int(match.group(2))) if match else None


def read_version(under: Callable[[str], Path]) -> Optional[Version]:
    """The release a host says it runs, from its version file (None when it has none)."""
    for wazo_path in VERSION_FILES:
        try:
            with open(under(wazo_path), "rb") as stream:
                version = parse_version(stream.read(256).decode("ascii", "replace"))
        except OSError:
            continue
        if version is not None:
            return version
    return None


def family(version: Optional[Version]) -> Optional[Family]:
    """The family of a release, None when the release is unknown or older than any we know."""
    if version is None:
        return None
    return next((f for f in FAMILIES if f.covers(version)), None)


# Listeners and peers that exist only in a daemon's code defaults (no packaged file states them):
# unit -> [(first release, last release, the defaults as a nested mapping)]. Layered under
# config.yml, as xivo-lib-python's ChainMap puts the daemon's _DEFAULT_CONFIG last.
def _listener(section: str, port: int) -> dict[str, Any]:
    listen = {"listen": "0.0.0.0", "port": port,
              "certificate": "/usr/share/xivo-certs/server.crt",
              "private_key": "/usr/share/xivo-certs/server.key"}
    if section == "websocket":
        return {"websocket": listen}
    return {"rest_api": {"https": listen} if section == "rest_api.https" else listen}


_PROVD = {"rest_api": {"ip": "127.0.0.1", "port": 8666, "ssl": True,
                        "ssl_certfile": "/usr/share/xivo-certs/server.crt",
                        "ssl_keyfile": "/usr/share/xivo-certs/server.key"}}

_CONFD_PROVD = {"provd": {"host": "localhost", "port": 8666,
                          "verify_certificate": "/usr/share/xivo-certs/server.crt"}}

CODE_DEFAULTS: dict[str, list[tuple[Version, Version, dict[str, Any]]]] = {
    # wazo-platform/wazo-websocketd xivo_websocketd/config.py _DEFAULT_CONFIG['websocket'],
    # tags xivo-16.02 .. wazo-20.08 (wazo_websocketd/config.py from 19.xx): the packaged
    # config.yml never names the listener.
    "xivo-websocketd": [((16, 2), (20, 8), _listener("websocket", 9502))],
    "wazo-websocketd": [((16, 2), (20, 8), _listener("websocket", 9502))],
    # wazo-platform/wazo-plugind wazo_plugind/config.py _DEFAULT_CONFIG rest_api.https (17.05 ..
    # 20.04), certificate directly under rest_api (20.05 .. 20.08).
    "wazo-plugind": [((17, 5), (20, 4), _listener("rest_api.https", 9503)),
                     ((20, 5), (20, 8), _listener("rest_api", 9503))],
    # wazo-platform/wazo-provd provd/config.py rest_api (wazo-19.03 .. wazo-20.08): HTTPS on
    # 8666 with the pair, under its own key names; the packaged config.yml sets only ip/port.
    "xivo-provd": [((19, 3), (20, 8), _PROVD)],
    "wazo-provd": [((19, 3), (20, 8), _PROVD)],
    # wazo-platform/wazo-confd wazo_confd/config.py _DEFAULT_CONFIG['provd'] (wazo-19.02 ..
    # wazo-20.08): confd calls provd on 8666 verifying server.crt, which no packaged file says
    # and upstream's custom-certificate.yml never listed.
    "wazo-confd": [((19, 2), (20, 8), _CONFD_PROVD)],
    "xivo-confd": [((19, 2), (20, 8), _CONFD_PROVD)],
}


def code_defaults(unit: str, version: Optional[Version]) -> dict[str, Any]:
    """The code defaults of unit at a release that matter here (none at an unknown release: a
    default of another release would name listeners and peers this host may not have, and
    change its generation; what listens is observed instead)."""
    merged: dict[str, Any] = {}
    if version is None:  # what listens is observed instead (discovery.observe)
        return merged
    for first, last, defaults in CODE_DEFAULTS.get(unit, []):
        if first <= version <= last:
            merged = deep_merge(merged, defaults)
    return merged
