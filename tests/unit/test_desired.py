"""The desired state: what deploy leaves on a host, the one answer deploy and status share."""
from __future__ import annotations

from pathlib import Path

import pytest

from certbot_wazo import desired
from certbot_wazo.errors import HostError
from certbot_wazo.files import LINK, FileState, apply_state, read_state
from certbot_wazo.host import CUSTOM_FILE, HOSTS_CUSTOM, LINK_NAME, Host
from certbot_wazo.pair import Pair
from tests.pki import CA
from tests.unit.fakepbx import install

NAME = "wazo.example.test"


@pytest.fixture
def pair(ca: CA, tmp_path: Path) -> Pair:
    return Pair.load(*ca.issue(tmp_path / "le", names=[NAME]))


def test_a_legacy_host_wants_the_pair_the_overrides_their_links_and_the_mapping(
        monkeypatch: pytest.MonkeyPatch, legacy_root: Path, pair: Pair) -> None:
    install(monkeypatch, legacy_root)
    host = Host(legacy_root)
    state = desired.desired(host, pair, NAME, "auto")
    paths = [p for p, _ in state.files]
    certs = host.cert_dirs()[0]
    assert paths[:2] == [certs / "server.key", certs / "server.crt"]
    assert host.path(CUSTOM_FILE) in paths and host.path(HOSTS_CUSTOM) in paths
    assert {p for p in paths if p.name == LINK_NAME} == \
        {d / LINK_NAME for d in host.conf_d_dirs()}
    assert state.overrides and state.generation == "legacy" and not state.removing
    key = dict(state.files)[certs / "server.key"]
    assert (key.mode, key.uid, key.gid) == (0o640, 0, host.www_data_gid())


def test_a_modern_host_wants_only_the_pair(monkeypatch: pytest.MonkeyPatch, modern_root: Path,
                                            pair: Pair) -> None:
    install(monkeypatch, modern_root)
    state = desired.desired(Host(modern_root), pair, NAME, "auto")
    assert [p.name for p, _ in state.files] == ["server.key", "server.crt"]
    assert not state.overrides


def test_drift_is_empty_once_applied(monkeypatch: pytest.MonkeyPatch, legacy_root: Path,
                                     pair: Pair) -> None:
    install(monkeypatch, legacy_root)
    host = Host(legacy_root)
    state = desired.desired(host, pair, NAME, "auto")
    assert state.drift()
    for path, wanted in state.files:
        apply_state(path, wanted)
    assert desired.desired(host, pair, NAME, "auto").drift() == []


def test_the_certificate_keeps_the_mode_its_package_gives_it(
        monkeypatch: pytest.MonkeyPatch, modern_root: Path, pair: Pair) -> None:
    install(monkeypatch, modern_root)
    host = Host(modern_root)
    crt = host.cert_dirs()[0] / "server.crt"
    crt.chmod(0o640)
    assert dict(desired.pair_files(host, pair))[crt].mode == 0o640
    crt.chmod(0o600)  # not a mode Wazo's packages use: the services could not read it
    assert dict(desired.pair_files(host, pair))[crt].mode == 0o644


def test_not_a_wazo_host_names_the_directory_and_the_option(tmp_path: Path, pair: Pair) -> None:
    with pytest.raises(HostError) as err:
        desired.pair_files(Host(tmp_path), pair)
    assert str(err.value).startswith(f"{tmp_path}/usr/share/xivo-certs: no Wazo certificate "
                                     "directory") and "check --root" in str(err.value)


@pytest.mark.parametrize("current, wanted, says", [
    (FileState.absent(), FileState.file(b"x", 0o644), "missing (certbot-wazo deploy writes it)"),
    (FileState.file(b"y", 0o644), FileState.file(b"x", 0o644), "differs from what certbot-wazo"),
    (FileState.file(b"x", 0o600), FileState.file(b"x", 0o644), "owner or mode is"),
    (FileState.file(b"x", 0o644), FileState.absent(), "left by the pre-19.01 procedure"),
])
def test_each_drift_says_what_differs_and_the_fix(tmp_path: Path, current: FileState,
                                                  wanted: FileState, says: str) -> None:
    path = tmp_path / "file"
    if current.kind != "absent":
        path.write_bytes(current.data)
        path.chmod(current.mode)
        wanted = FileState(wanted.kind, wanted.data, wanted.mode, read_state(path).uid,
                           read_state(path).gid) if wanted.kind != "absent" else wanted
    line = desired.describe_drift(Host(tmp_path), path, wanted)
    assert line.startswith(f"{path}: ") and says in line


def test_a_link_drift_names_where_it_points(tmp_path: Path) -> None:
    link = tmp_path / LINK_NAME
    link.symlink_to("/etc/other.yml")
    assert read_state(link).kind == LINK
    line = desired.describe_drift(Host(tmp_path), link, FileState.link("../x"))
    assert line == f"{link}: links to /etc/other.yml, not to {CUSTOM_FILE} (certbot-wazo " \
                   "deploy fixes it)"
