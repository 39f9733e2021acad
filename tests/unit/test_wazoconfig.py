"""Wazo's configuration read as Wazo reads it: the tag-tolerant YAML loader (nothing ever run),
the daemons' merge order, the files Wazo skips, hostile files bounded, links kept in the root."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Optional

import pytest

from certbot_wazo import wazoconfig
from certbot_wazo.errors import HostError
from certbot_wazo.wazoconfig import HIDDEN_LAYER, Hidden


def under(root: Path) -> Callable[[str], Path]:
    """Wazo path -> path under root, as Host.path does."""
    return lambda wazo_path: root / wazo_path.lstrip("/")


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


# -- load_yaml: tags are read, never run ---------------------------------------------------------
def test_exec_is_never_run_and_reads_as_hidden(tmp_path: Path) -> None:
    witness = tmp_path / "ran"
    path = write(tmp_path / "a.yml", f"rest_api:\n  port: !exec\n    command: touch {witness}\n"
                 f"  subnets: !exec touch {witness}\n")
    data = wazoconfig.load_yaml(path)
    assert not witness.exists()
    port = data["rest_api"]["port"]
    assert isinstance(port, Hidden)
    assert (str(port), port.path) == (f"!exec touch {witness}", str(path))
    assert str(data["rest_api"]["subnets"]) == f"!exec touch {witness}"


@pytest.mark.parametrize("text", ["a: !!python/object/apply:os.system ['touch {w}']\n",
                                  "a: !!python/name:os.system\n", "a: !custom {{x: 1}}\n"])
def test_python_and_unknown_tags_are_hidden_values(tmp_path: Path, text: str) -> None:
    witness = tmp_path / "ran"
    data = wazoconfig.load_yaml(write(tmp_path / "a.yml", text.format(w=witness)))
    assert isinstance(data["a"], Hidden)
    assert not witness.exists()


def test_a_whole_file_computed_at_load_time_is_one_hidden_layer(tmp_path: Path) -> None:
    data = wazoconfig.load_yaml(write(tmp_path / "a.yml", "!exec\ncommand: wazo-confgen x\n"))
    assert list(data) == [HIDDEN_LAYER] and str(data[HIDDEN_LAYER]) == "!exec wazo-confgen x"


@pytest.mark.parametrize("text", ["", "# only a comment\n", "---\n"])
def test_an_empty_file_is_an_empty_mapping(tmp_path: Path, text: str) -> None:
    assert wazoconfig.load_yaml(write(tmp_path / "a.yml", text)) == {}


@pytest.mark.parametrize("text, problem", [
    ("auth: [\n", "not valid YAML at line 2"), ("a: 1\n  b: 2\n", "not valid YAML at line 2"),
    ("- a\n- b\n", "not a YAML mapping of sections"), ("just text\n", "not a YAML mapping"),
])
def test_malformed_files_are_one_line_naming_the_file(tmp_path: Path, text: str,
                                                      problem: str) -> None:
    path = write(tmp_path / "a.yml", text)
    with pytest.raises(HostError) as raised:
        wazoconfig.load_yaml(path)
    message = str(raised.value)
    assert message.startswith(f"{path}: {problem}") and message.endswith("fix it)")
    assert "\n" not in message


def test_a_packaged_file_is_restored_never_removed(tmp_path: Path) -> None:
    path = write(tmp_path / "config.yml", "auth: [\n")
    with pytest.raises(HostError) as raised:
        wazoconfig.load_yaml(path, packaged=lambda p: "wazo-auth" if p == path else None)
    assert str(raised.value).endswith("(it belongs to wazo-auth: restore it with 'apt-get "
                                      "install --reinstall wazo-auth')")


def test_non_utf8_names_the_byte(tmp_path: Path) -> None:
    path = write(tmp_path / "a.yml", b"# r\xe9seau\na: 1\n")
    with pytest.raises(HostError, match=f"^{path}: not UTF-8 text at byte 3 \\(Wazo reads its "
                       "configuration as UTF-8; fix it\\)$"):
        wazoconfig.load_yaml(path)


def test_a_file_larger_than_the_bound_is_refused(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wazoconfig, "MAX_YAML_CHARS", 20)
    path = write(tmp_path / "a.yml", "a: " + "x" * 30 + "\n")
    with pytest.raises(HostError, match=f"^{path}: larger than 0 KiB"):
        wazoconfig.load_yaml(path)
    assert wazoconfig.load_yaml(write(tmp_path / "b.yml", "a: 1\n")) == {"a": 1}


def test_aliases_expanding_past_the_bound_are_refused(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wazoconfig, "MAX_YAML_VALUES", 50)
    path = write(tmp_path / "a.yml", "a: &a [x, x, x, x, x, x, x, x]\nb: [*a, *a, *a, *a, *a, *a, *a]\n")
    with pytest.raises(HostError, match=f"^{path}: its YAML aliases expand to more than 50 values"):
        wazoconfig.load_yaml(path)
    small = write(tmp_path / "b.yml", "a: &a [x, x]\nb: [*a, *a]\n")
    assert wazoconfig.load_yaml(small) == {"a": ["x", "x"], "b": [["x", "x"], ["x", "x"]]}


def test_a_recursive_alias_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "a.yml", "a: &a [*a]\n")
    with pytest.raises(HostError, match="its YAML aliases expand"):
        wazoconfig.load_yaml(path)


def test_special_and_missing_files_are_refused_unread(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.yml"
    os.mkfifo(fifo)
    with pytest.raises(HostError, match=f"^{fifo}: not a regular file"):
        wazoconfig.load_yaml(fifo)
    with pytest.raises(HostError, match=f"^{tmp_path / 'none.yml'}: cannot be read \\(No such "
                       "file or directory; fix it\\)$"):
        wazoconfig.load_yaml(tmp_path / "none.yml")


# -- deep_merge: first layer wins, like xivo-lib-python's ChainMap -------------------------------
def test_deep_merge_first_layer_wins_and_nested_mappings_merge() -> None:
    merged = wazoconfig.deep_merge({"a": {"port": 1}, "b": 1}, {"a": {"port": 2, "listen": "x"}},
                                   {"b": {"c": 3}, "d": 4})
    assert merged == {"a": {"port": 1, "listen": "x"}, "b": 1, "d": 4}


def test_deep_merge_leaves_its_layers_unchanged() -> None:
    first, second = {"a": {"x": 1}}, {"a": {"y": 2}}
    wazoconfig.deep_merge(first, second)
    assert (first, second) == ({"a": {"x": 1}}, {"a": {"y": 2}})


# -- daemon_config: conf.d, then config.yml, then the code defaults ------------------------------
@pytest.fixture
def daemon(tmp_path: Path) -> Path:
    """/etc/xivo-auth under tmp_path: config.yml says port 9497 and listen 0.0.0.0."""
    directory = tmp_path / "etc/xivo-auth"
    write(directory / "config.yml", "rest_api:\n  https:\n    port: 9497\n    listen: 0.0.0.0\n")
    (directory / "conf.d").mkdir()
    return directory


def test_merge_order_is_conf_d_by_name_then_config_yml_then_defaults(daemon: Path,
                                                                     tmp_path: Path) -> None:
    write(daemon / "conf.d/020-b.yml", "rest_api:\n  https:\n    port: 2\n    certificate: b\n")
    write(daemon / "conf.d/010-a.yml", "rest_api:\n  https:\n    port: 1\n")
    config = wazoconfig.daemon_config(daemon, under(tmp_path),
                                      defaults={"rest_api": {"https": {"port": 3, "x": "d"}}})
    assert config.values == {"rest_api": {"https": {"port": 1, "certificate": "b",
                                                    "listen": "0.0.0.0", "x": "d"}}}
    assert config.skipped == []


def test_a_bad_conf_d_file_is_skipped_with_a_warning(daemon: Path, tmp_path: Path) -> None:
    bad = write(daemon / "conf.d/010-bad.yml", "rest_api: [\n")
    write(daemon / "conf.d/020-good.yml", "debug: true\n")
    config = wazoconfig.daemon_config(daemon, under(tmp_path))
    assert config.values["debug"] is True and config.values["rest_api"]["https"]["port"] == 9497
    assert len(config.skipped) == 1 and config.skipped[0].startswith(f"{bad}: not valid YAML")


def test_a_bad_config_yml_stops_the_daemon_and_the_reading(daemon: Path, tmp_path: Path) -> None:
    write(daemon / "config.yml", "rest_api: [\n")
    with pytest.raises(HostError, match=f"^{daemon / 'config.yml'}: not valid YAML"):
        wazoconfig.daemon_config(daemon, under(tmp_path))


def test_only_yml_files_that_are_not_dotfiles_count(daemon: Path, tmp_path: Path) -> None:
    write(daemon / "conf.d/010-a.yml.bak", "rest_api:\n  https:\n    port: 1\n")
    write(daemon / "conf.d/.010-b.yml", "rest_api:\n  https:\n    port: 2\n")
    assert wazoconfig.daemon_config(daemon, under(tmp_path)).values["rest_api"]["https"]["port"] \
        == 9497
    every = wazoconfig.daemon_config(daemon, under(tmp_path), yml_only=False)
    assert every.values["rest_api"]["https"]["port"] == 1  # before XiVO 15.16: every file


def test_skipped_names_are_not_read(daemon: Path, tmp_path: Path) -> None:
    write(daemon / "conf.d/010-custom-certificate.yml", "rest_api:\n  https:\n    port: 1\n")
    config = wazoconfig.daemon_config(daemon, under(tmp_path), skip=("010-custom-certificate.yml",))
    assert config.values["rest_api"]["https"]["port"] == 9497


def test_extra_config_files_names_the_conf_d_as_a_wazo_path(daemon: Path, tmp_path: Path) -> None:
    write(daemon / "config.yml", "extra_config_files: /etc/elsewhere.d\n")
    write(tmp_path / "etc/elsewhere.d/01.yml", "debug: true\n")
    write(daemon / "conf.d/01.yml", "debug: false\n")
    assert wazoconfig.daemon_config(daemon, under(tmp_path)).values["debug"] is True


def test_computed_conf_d_files_are_collected_not_merged(daemon: Path, tmp_path: Path) -> None:
    write(daemon / "conf.d/50-subnets.yml", "!exec\ncommand: wazo-confgen auth\n")
    config = wazoconfig.daemon_config(daemon, under(tmp_path))
    assert [str(h) for h in config.computed] == ["!exec wazo-confgen auth"]
    assert HIDDEN_LAYER not in config.values


def test_each_file_is_parsed_once_with_a_cache(daemon: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    write(daemon / "conf.d/010-bad.yml", "a: [\n")
    calls: list[Path] = []
    load = wazoconfig.load_yaml

    def counting(path: Path, packaged: Optional[wazoconfig.Owner] = None) -> dict[str, object]:
        calls.append(path)
        return load(path, packaged)

    monkeypatch.setattr(wazoconfig, "load_yaml", counting)
    cache: dict[Path, object] = {}
    first = wazoconfig.daemon_config(daemon, under(tmp_path), cache=cache)
    second = wazoconfig.daemon_config(daemon, under(tmp_path), cache=cache, skip=("x",))
    assert sorted(calls) == sorted({*calls}) and len(calls) == 2
    assert first.values == second.values and first.skipped == second.skipped


# -- links are followed inside the root ----------------------------------------------------------
def test_absolute_links_are_read_under_the_root(tmp_path: Path) -> None:
    target = write(tmp_path / "var/lib/consul/client.yml", "consul: {}\n")
    link = tmp_path / "etc/wazo-auth/conf.d/050-consul.yml"
    link.parent.mkdir(parents=True)
    link.symlink_to("/var/lib/consul/client.yml")
    assert wazoconfig.in_root(link, under(tmp_path)) == target


def test_relative_links_that_climb_out_are_brought_back_under_the_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    outside = write(tmp_path / "secret.yml", "a: 1\n")
    link = root / "etc/wazo-auth/conf.d/01.yml"
    link.parent.mkdir(parents=True)
    link.symlink_to("../../../../secret.yml")
    resolved = wazoconfig.in_root(link, under(root))
    assert resolved != outside and str(resolved).startswith(f"{root}/")


def test_a_link_loop_ends(tmp_path: Path) -> None:
    a, b = tmp_path / "a.yml", tmp_path / "b.yml"
    a.symlink_to("b.yml")
    b.symlink_to("a.yml")
    assert wazoconfig.in_root(a, under(tmp_path)) in (a, b)
    assert wazoconfig.conf_d_files(tmp_path, under(tmp_path)) == []


def test_conf_d_files_sorted_existing_and_missing_directory(tmp_path: Path) -> None:
    write(tmp_path / "conf.d/20.yml", "")
    write(tmp_path / "conf.d/10.yml", "")
    (tmp_path / "conf.d/15.yml").symlink_to("/nonexistent.yml")
    assert [p.name for p in wazoconfig.conf_d_files(tmp_path / "conf.d", under(tmp_path))] == \
        ["10.yml", "20.yml"]
    assert wazoconfig.conf_d_files(tmp_path / "none") == []


# -- common.conf, asterisk's http.conf, hosts files ----------------------------------------------
def test_shell_variables(tmp_path: Path) -> None:
    path = write(tmp_path / "common.conf", b"# r\xe9seau\nXIVO_HOSTNAME=wazo\nexport XIVO_DOMAIN="
                 b"'example.test'\n  XIVO_X=\"1\"\nnot a variable\n")
    assert wazoconfig.read_shell_vars(path) == {"XIVO_HOSTNAME": "wazo",
                                                "XIVO_DOMAIN": "example.test", "XIVO_X": "1"}


def test_missing_or_special_shell_variables_file(tmp_path: Path) -> None:
    with pytest.raises(HostError, match=f"^{tmp_path / 'none'}: cannot be read \\(No such file "
                       "or directory; is this a Wazo host\\? check --wazo-root\\)$"):
        wazoconfig.read_shell_vars(tmp_path / "none")
    with pytest.raises(HostError, match=f"^{tmp_path}: not a regular file"):
        wazoconfig.read_shell_vars(tmp_path)


CRT = "/usr/share/xivo-certs/server.crt"


@pytest.mark.parametrize("text, expected", [
    (f"tlsenable=yes\ntlsbindaddr=0.0.0.0:5040\ntlscertfile={CRT}\n", ["0.0.0.0:5040"]),
    (f"tlsenable = yes ; on\ntlscertfile => {CRT}\n", ["0.0.0.0:8089"]),
    (f"tlsenable=yes\ntlsbindaddr=127.0.0.1\ntlscertfile={CRT}\n", ["127.0.0.1:8089"]),
    (f"tlsenable=no\ntlscertfile={CRT}\n", []),
    (f";tlsenable=yes\ntlscertfile={CRT}\n", []),
    ("tlsenable=yes\ntlscertfile=/etc/asterisk/keys/other.pem\n", []),
])
def test_asterisk_tls_bind(text: str, expected: list[str]) -> None:
    assert wazoconfig.asterisk_tls_bind(text, {CRT}) == expected


def test_hosts_address_is_the_first_line_naming_the_name() -> None:
    text = ("# 127.0.0.9 wazo.example.test\n::1 wazo.example.test\n"
            "127.0.1.1\tWAZO.example.test wazo # the FQDN\n127.0.0.1 wazo.example.test\n")
    assert wazoconfig.hosts_address(text, "wazo.example.test") == "127.0.1.1"
    assert wazoconfig.hosts_address(text, "other.example.test") is None


def test_walk_values_finds_every_nested_value() -> None:
    data = {"a": {"verify_certificate": 1, "b": {"verify_certificate": 2}}, "verify_certificate": 3}
    assert sorted(wazoconfig.walk_values(data, "verify_certificate")) == [1, 2, 3]
