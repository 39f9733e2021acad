"""Which directory definitions a CA-issued certificate breaks, on rows shaped as each release's
model stores them (tests/data/upstream-notes/directories.yml: test_schema, caveats)."""
from __future__ import annotations

from typing import Optional

import pytest

from certbot_wazo import directories
from certbot_wazo.access import Secret
from certbot_wazo.directories import Part

NAME = "wazo.example.com"
CRT = "/usr/share/xivo-certs/server.crt"
CERTS = {CRT, "/usr/share/wazo-certs/server.crt"}


def problems(parts: list[Part]) -> list[str]:
    return [p for p in (part.problem(NAME, CERTS) for part in parts) if p]


def test_the_default_xivo_directory_of_16_16_to_18_03_is_plain_http_and_left_alone() -> None:
    row = {"id": 1, "uri": "http://localhost:9487", "dirtype": "xivo", "name": "xivo",
           "xivo_verify_certificate": False, "xivo_custom_ca_path": None}
    assert problems(directories._directory_parts(row)) == []


@pytest.mark.parametrize("ca_path, expected", [
    (CRT, ["connects to localhost", f"verifies against {CRT}"]),
    ("", ["connects to localhost"]),  # "yes" in the web interface: the system store
])
def test_a_directory_switched_to_https_on_localhost_is_named_with_the_fix(
        ca_path: str, expected: list[str]) -> None:
    row = {"id": 3, "uri": "https://localhost:9486", "dirtype": "xivo", "name": "wazo",
           "xivo_verify_certificate": True, "xivo_custom_ca_path": ca_path}
    [found] = problems(directories._directory_parts(row))
    assert found.startswith("asterisk database, directories 'wazo' (id 3), confd: ")
    assert all(e in found for e in expected)
    assert f"set its host to {NAME}" in found


def test_other_directory_types_are_never_read_as_wazo_ones() -> None:
    row = {"id": 2, "uri": "ldapfilter://x", "dirtype": "ldapfilter", "name": "ldap"}
    assert directories._directory_parts(row) == []


def test_19_17_sources_on_localhost_verifying_server_crt_are_both_named() -> None:
    row = {"uuid": "u-1", "name": "auto_wazo_master", "backend": "wazo", "extra_fields": {
        "auth": {"host": "localhost", "port": 9497, "verify_certificate": CRT},
        "confd": {"host": "localhost", "port": 9486, "https": True, "verify_certificate": CRT}}}
    found = problems(directories._source_parts(row))
    assert [f.split(":")[0] for f in found] == [
        "asterisk database, dird_source 'auto_wazo_master' (u-1), confd",
        "asterisk database, dird_source 'auto_wazo_master' (u-1), auth"]


def test_20_16_plain_http_localhost_sources_are_fine_but_an_nginx_routed_one_is_not() -> None:
    plain = {"uuid": "u-2", "name": "auto_wazo_x", "backend": "wazo", "extra_fields":
             '{"confd": {"host": "localhost", "port": 9486, "https": false, "prefix": null},'
             ' "auth": {"host": "localhost", "port": 9497, "https": false, "prefix": null}}'}
    routed = {"uuid": "u-3", "name": "old", "backend": "wazo", "extra_fields": {
        "confd": {"host": NAME, "https": True, "prefix": "/api/confd",
                  "verify_certificate": CRT}}}
    assert problems(directories._source_parts(plain)) == []
    [found] = problems(directories._source_parts(routed))
    assert f"verifies against {CRT}" in found and "connects to" not in found


def test_damaged_extra_fields_are_skipped_not_fatal() -> None:
    assert directories._source_parts({"uuid": "u", "extra_fields": "{not json"}) == []
    assert directories._source_parts({"uuid": "u", "extra_fields": ["x"]}) == []


def test_changes_keep_the_scheme_port_and_path_and_only_touch_what_breaks() -> None:
    row = {"id": 3, "uri": "https://localhost:9486/1.1", "dirtype": "xivo", "name": "wazo",
           "xivo_verify_certificate": True, "xivo_custom_ca_path": CRT}
    found = directories._directory_changes(row, NAME, CERTS)
    assert [(c.column, c.old, c.new) for c in found] == [
        ("uri", "https://localhost:9486/1.1", f"https://{NAME}:9486/1.1"),
        ("xivo_custom_ca_path", CRT, "")]  # "" is the web interface's "yes": the system store
    assert [c.reverse().new for c in found] == ["https://localhost:9486/1.1", CRT]


def test_a_source_keeps_its_exact_json_text_as_the_old_value() -> None:
    text = ('{"confd": {"host": "localhost", "port": 9486, "https": true, '
            f'"verify_certificate": "{CRT}"}},   "auth": {{"host": "localhost"}}}}')
    [change] = directories._source_changes({"uuid": "u-1", "extra_fields": text}, NAME, CERTS)
    assert change.old == text  # spacing included: the undo gives back the very bytes
    new = __import__("json").loads(str(change.new))
    assert new["confd"] == {"host": NAME, "port": 9486, "https": True,
                            "verify_certificate": True}
    assert new["auth"]["host"] == NAME


class Recorder:
    """A host whose psql only records the SQL it is given."""

    def __init__(self) -> None:
        self.sql: list[str] = []
        self.access = self
        self.root = "/"

    def command(self, name: str) -> str:
        return "/usr/bin/psql"

    def daemon_configs(self) -> dict[str, dict[str, str]]:
        return {"wazo-dird": {"db_uri": "postgresql://asterisk:pw@localhost/asterisk"
                                        "?application_name=wazo-dird"}}

    def run(self, argv: list[str], timeout: float, secret: Optional[Secret] = None) -> str:
        # the password never in argv: in the password file psql is given
        assert argv[argv.index("-d") + 1] == "postgresql://asterisk@localhost/asterisk"
        assert secret == Secret("PGPASSFILE", b"*:*:*:*:pw\n")
        self.sql.append(argv[-1])
        return ""


def test_every_value_reaches_the_database_as_a_literal_in_one_transaction() -> None:
    host = Recorder()
    hostile = "https://localhost:9486/'; DROP TABLE directories; --"
    directories.apply(host, [  # type: ignore[arg-type]
        directories.Change("directories", "3", "uri", hostile, f"https://{NAME}:9486"),
        directories.Change("dird_source", "u'1", "extra_fields", "{}", '{"a": "$$"}')])
    [sql] = host.sql
    assert "'https://localhost:9486/''; DROP TABLE directories; --'" in sql
    assert "uuid = 'u''1'" in sql and "'{\"a\": \"$$\"}'::json" in sql
    assert sql.startswith("SET standard_conforming_strings = on; DO $cw_")
    assert "RAISE EXCEPTION" in sql  # a definition changed meanwhile fails it all


def test_an_undo_leaves_a_later_edit_alone() -> None:
    host = Recorder()
    change = directories.Change("directories", "3", "uri", "a", "b")
    directories.apply(host, [change.reverse()], strict=False)  # type: ignore[arg-type]
    assert "RAISE NOTICE" in host.sql[0] and "RAISE EXCEPTION" not in host.sql[0]


def test_the_password_goes_to_a_password_file_never_to_argv() -> None:
    """libpq's URI decoding, then the password file's escaping of ':' and '\\'."""
    bare, secret = directories._without_password(
        "postgresql://asterisk:p%3Aw%5Cd@localhost:5432/asterisk")
    assert bare == "postgresql://asterisk@localhost:5432/asterisk"
    assert secret == Secret("PGPASSFILE", b"*:*:*:*:p\\:w\\\\d\n")
    assert directories._without_password("postgresql://asterisk@/asterisk?host=/run") == \
        ("postgresql://asterisk@/asterisk?host=/run", None)
