"""What each Wazo release is, as upstream ships it: its version, family, procedure, code defaults.

Every fact here is checked against the corpus of upstream's tagged files (tests/data/releases/,
each fact citing repository, tag and path) by tests/unit/test_releases.py.
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any, Callable, Optional

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
    Family("xivo-legacy", (15, 12), (18, 3), "legacy",
           "every daemon serves TLS with the pair: overrides (host NAME, verify with the system "
           "trust store) linked into every conf.d, NAME on 127.0.0.1 in the hosts template, "
           "restart all",
           "wazo-platform/wazo-doc wazo-18.03 source/system/https_certificate.rst"),
    Family("nginx-front", (19, 1), None, "modern",
           "nginx serves the public certificate; daemons talk to each other on the loopback "
           "with Wazo's own certificate; earlier overrides are removed",
           "wazo-platform/wazo-doc wazo-19.01 source/system/https_certificate.rst"),
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
CODE_DEFAULTS: dict[str, list[tuple[Version, Version, dict[str, Any]]]] = {}


def code_defaults(unit: str, version: Optional[Version]) -> dict[str, Any]:
    """The code defaults of unit at a release (empty when unknown)."""
    if version is None:
        return {}
    for first, last, defaults in CODE_DEFAULTS.get(unit, []):
        if first <= version <= last:
            return defaults
    return {}
