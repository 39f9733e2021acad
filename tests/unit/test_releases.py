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
