"""The product's release knowledge agrees with the corpus of upstream's tagged files."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from certbot_wazo import overrides, releases, wazoconfig

CORPUS = Path(__file__).resolve().parents[1] / "data" / "releases"
RELEASES = sorted(p.stem for p in CORPUS.glob("*.yml"))


def _facts(release: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((CORPUS / f"{release}.yml").read_text())
    return data


def test_corpus_covers_every_series() -> None:
    series = {r.split(".")[0] for r in RELEASES}
    assert {str(n) for n in range(15, 26)} <= series


@pytest.mark.parametrize("release", RELEASES)
def test_code_default_listeners_are_known_to_the_product(release: str) -> None:
    """Every listener that only a daemon's code defaults state (so no file on the host shows
    it) is in releases.CODE_DEFAULTS with the same port and section."""
    version = releases.parse_version(release)
    for daemon in _facts(release)["daemons"]:
        listener = daemon.get("listener")
        defaults = releases.code_defaults(daemon["unit"], version)
        if listener and listener["decided_by"] == "code default":
            section: Any = defaults
            for part in listener["section"].split("."):
                section = section[part]
            assert (section["port"], section.get("certificate", section.get("ssl_certfile"))) \
                == (listener["port"], listener["certificate"]), daemon["unit"]
        elif listener is None:
            assert not defaults, f"{daemon['unit']} has no TLS listener at {release}"


@pytest.mark.parametrize("release", RELEASES)
def test_family_of_each_release(release: str) -> None:
    family = releases.family(releases.parse_version(release))
    assert family is not None
    assert family.generation == ("legacy" if release <= "18.14" else "modern")
    assert family.overrides == ("15.18" <= release <= "18.14")


def test_families_follow_upstream_procedure_ranges() -> None:
    """Each family's range is a union of the ranges of tests/data/procedure.yml (upstream's
    page at each tag) with the same family name."""
    ranges = yaml.safe_load((CORPUS.parent / "procedure.yml").read_text())["ranges"]
    names = {"legacy-replace-files": "replace-files", "legacy-overrides": "legacy-overrides",
             "nginx-only": "nginx-only"}
    for entry in ranges:
        for end in (entry["first"], entry["last"]):
            family = releases.family(releases.parse_version(str(end)))
            assert family is not None and family.name == names[entry["family"]], entry


def test_version_files(tmp_path: Path) -> None:
    (tmp_path / "usr/share/xivo").mkdir(parents=True)
    (tmp_path / "usr/share/xivo/XIVO-VERSION").write_text("15.12\n")
    assert releases.read_version(lambda p: tmp_path / p.lstrip("/")) == (15, 12)
    (tmp_path / "usr/share/wazo").mkdir(parents=True)
    (tmp_path / "usr/share/wazo/WAZO-VERSION").write_text("25.14.1\n")
    assert releases.read_version(lambda p: tmp_path / p.lstrip("/")) == (25, 14)


@pytest.mark.parametrize("release", RELEASES)
def test_version_file_path_matches_upstream(release: str) -> None:
    assert _facts(release)["version_file"]["path"] in releases.VERSION_FILES


def test_hidden_values_are_never_run() -> None:
    loaded = wazoconfig._Loader("a: !exec\n  command: rm -rf /\nb: !!python/name:os.system\n")
    try:
        data = loaded.get_single_data()
    finally:
        loaded.dispose()
    assert str(data["a"]) == "!exec rm -rf /"
    assert isinstance(data["b"], wazoconfig.Hidden)


@pytest.mark.parametrize("release", RELEASES)
def test_every_section_verifying_server_crt_is_known(release: str) -> None:
    """What the overrides must switch (every client section verifying server.crt, in files or
    code defaults) is what the product can see on a host: upstream's list, the packaged files,
    or releases.CODE_DEFAULTS."""
    version = releases.parse_version(release)
    for daemon in _facts(release)["daemons"]:
        in_files = {k.rsplit(".", 1)[0] for record in daemon["files"]
                    for k, v in record["values"].items()
                    if k.endswith(("verify_certificate", ".verify")) and
                    str(v).endswith("/server.crt")}
        known = set(overrides.SECTIONS) | in_files | set(
            releases.code_defaults(daemon["unit"], version))
        for dotted in daemon["verifies_server_crt"]:
            assert dotted.rsplit(".", 1)[0] in known, (daemon["unit"], dotted)


@pytest.mark.parametrize("release", RELEASES)
def test_every_platform_fact_cites_its_upstream_file(release: str) -> None:
    facts = _facts(release)
    for name in ("debian", "version_file", "certs", "hosts_template", "nginx"):
        cited = facts[name]["source"]
        assert cited["repo"].startswith(("wazo-platform/", "wazo-pbx/")) and cited["path"], name
        assert cited.get("tag") or cited.get("commit"), name


@pytest.mark.parametrize("text, version", [
    ("19.17\n", (19, 17)), ("25.14.1", (25, 14)), ("xivo-15.12", (15, 12)), ("", None),
    ("unknown", None), ("1.2", None),
])
def test_parse_version(text: str, version: Any) -> None:
    assert releases.parse_version(text) == version


def test_wazo_version_file_wins_and_a_garbled_one_is_skipped(tmp_path: Path) -> None:
    def under(path: str) -> Path:
        return tmp_path / path.lstrip("/")

    assert releases.read_version(under) is None
    (tmp_path / "usr/share/wazo").mkdir(parents=True)
    (tmp_path / "usr/share/wazo/WAZO-VERSION").write_bytes(b"\xff\xfe garbage")
    (tmp_path / "usr/share/xivo").mkdir(parents=True)
    (tmp_path / "usr/share/xivo/XIVO-VERSION").write_text("18.03\n")
    assert releases.read_version(under) == (18, 3)
    (tmp_path / "usr/share/wazo/WAZO-VERSION").write_text("19.01\n")
    assert releases.read_version(under) == (19, 1)


@pytest.mark.parametrize("version, name", [
    ((15, 11), None), ((15, 12), "replace-files"), ((15, 17), "replace-files"),
    ((15, 18), "legacy-overrides"), ((18, 14), "legacy-overrides"), ((18, 15), None),
    ((19, 1), "nginx-only"), ((99, 99), "nginx-only"), (None, None),
])
def test_family_boundaries(version: Any, name: Any) -> None:
    family = releases.family(version)
    assert (family.name if family else None) == name


def test_family_ranges_as_people_write_them() -> None:
    assert [f.releases for f in releases.FAMILIES] == ["15.12-15.17", "15.18-18.14", "19.01+"]


@pytest.mark.parametrize("unit, version, port", [
    ("xivo-websocketd", (16, 2), 9502), ("xivo-websocketd", (20, 8), 9502),
    ("xivo-websocketd", (16, 1), None), ("xivo-websocketd", (20, 9), None),
    ("xivo-websocketd", None, None), ("nginx", (19, 17), None),
])
def test_code_defaults_only_within_their_releases(unit: str, version: Any, port: Any) -> None:
    defaults = releases.code_defaults(unit, version)
    assert (defaults["websocket"]["port"] if defaults else None) == port


def test_plugind_listener_moves_at_20_05() -> None:
    assert releases.code_defaults("wazo-plugind", (20, 4))["rest_api"]["https"]["port"] == 9503
    moved = releases.code_defaults("wazo-plugind", (20, 5))["rest_api"]
    assert moved["port"] == 9503 and "https" not in moved


# Daemons of the metapackage's dependencies whose TLS the corpus reads from a section of its own
# rather than from a daemon's YAML files (the repository packaging them is not a daemon's).
OWN_SECTIONS = {"asterisk": "asterisk", "consul": "consul", "xivo-nginx": "nginx",
                "wazo-nginx": "nginx"}


@pytest.mark.parametrize("release", RELEASES)
def test_every_daemon_the_metapackage_pulls_in_is_read_by_the_corpus(release: str) -> None:
    """Each package the release's metapackage depends on (its sibling metapackages expanded)
    whose repository ships a systemd unit or an init script is a daemon: its repository must be
    one derive reads (tests/releases/derive.py DAEMON_REPOS), wherever it lives (wazo-admin-ui
    is kept in wazo-pbx), or its TLS must have its own section of the corpus. A release that
    pulls in a daemon nobody read fails here; and derive says which dependencies it could not
    classify for want of their repository (not_read: every one must be a known non-daemon)."""
    from tests.releases.derive import DAEMON_REPOS
    facts = _facts(release)
    meta = facts["metapackage"]
    assert meta["depends"] and meta["daemons"], meta["source"]
    units = {d["unit"] for d in facts["daemons"]}
    for daemon in meta["daemons"]:
        repo = daemon["repo"].split("/", 1)[1]
        section = OWN_SECTIONS.get(daemon["package"])
        assert repo in DAEMON_REPOS or (section and facts.get(section)), \
            f"{release}: {daemon['package']} ({daemon['repo']} {daemon['path']}) is a daemon " \
            "the corpus has not read: add its repository to derive.DAEMON_REPOS"
        if repo in DAEMON_REPOS and daemon["package"] in units:
            assert daemon["package"] in units
    if release in ("17.17", "18.03"):
        assert "wazo-admin-ui" in units and "wazo-admin-ui" in meta["depends"]
    unknown = [name for name in meta["not_read"] if name.split("-", 1)[1] not in NOT_DAEMONS]
    assert unknown == [], f"{release}: derive could not tell whether {unknown} are daemons " \
        "(give it their repositories)"


# Dependencies whose repository has no tag at the release (derive cannot read them there), and
# why none is a daemon serving TLS.
NOT_DAEMONS = {"keyring": "the apt keyring", "sounds-en-us": "sound files",
               "sounds-fr-fr": "sound files", "sounds-main": "sound files",
               "dist-upgrade": "the Debian upgrade script", "auth-keys": "service keys files",
               "consul-config": "consul's configuration (the corpus's consul section)",
               "res-freeze-check": "an asterisk module", "swagger-doc": "API documentation"}
