"""The PostgreSQL harness of issue 15: every corpus release's asterisk schema is created and seeded
with the facts of tests/data/upstream-notes/directories.yml, the cluster has no TCP socket, dumps
are stable, and no process outlives the cluster."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.sandbox.database import (
    ASTERISK_PASSWORD,
    NAME,
    SERVER_CRT,
    VARIANTS,
    Postgres,
    family,
    quote,
)
from tests.sandbox.release import releases

NOTES = Path(__file__).resolve().parents[1] / "data" / "upstream-notes" / "directories.yml"


@pytest.fixture(scope="module")
def notes() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(NOTES.read_text())
    return data


def facts_of(section: dict[str, Any]) -> dict[str, Any]:
    """A notes mapping without its cite* entries."""
    return {k: v for k, v in section.items() if not k.startswith("cite")}


def table_of(release: str) -> str:
    return "directories" if family(release) in ("15.12", "directories") else "dird_source"


def socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    return inodes


@pytest.mark.parametrize("release", releases())
def test_schema_and_seed_follow_the_notes(postgres: Postgres, notes: dict[str, Any], release: str) -> None:
    postgres.create_asterisk(release)
    entry = notes["releases"][release]
    names = [name for name, _ in postgres.columns(table_of(release))]
    assert names == [column["name"] for column in entry["storage"]["columns"]]
    rows = postgres.rows(release)
    fam = family(release)
    if fam == "15.12":
        expected = [facts_of(row) for row in entry["storage"]["default_rows"]]
        assert [{k: row[k] for k in expected[0]} for row in rows] == expected
    elif fam == "directories":
        default = entry["default_row"]
        [row] = rows
        assert (row["uri"], row["dirtype"], row["name"], row["description"]) == (
            default["uri"], default["dirtype"], default["name"], default["description"])
        assert row["xivo_verify_certificate"] is False and row["xivo_custom_ca_path"] is None
        # the ctidirectories row that makes confgend emit it
        assert postgres.psql("SELECT directory_id FROM ctidirectories").split() == [str(row["id"])]
    else:
        assert dict(postgres.columns("dird_source"))["extra_fields"] == "json"
        [row] = rows
        assert (row["name"], row["backend"]) == ("auto_wazo_acme", entry["backend_value"])
        for part in ("confd", "auth"):
            for key, value in facts_of(entry["auto_created_source"][part]).items():
                if value == "absent":
                    assert key not in row["extra_fields"][part]
                else:
                    assert row["extra_fields"][part][key] == value, (part, key)
        if release == "19.17":
            assert row["extra_fields"]["confd"]["verify_certificate"] == SERVER_CRT
            assert row["extra_fields"]["auth"]["verify_certificate"] == SERVER_CRT


@pytest.mark.parametrize("release", [r for r in releases() if VARIANTS[family(r)]])
def test_variants_are_what_an_admin_or_an_upgrade_leaves(postgres: Postgres, release: str) -> None:
    postgres.create_asterisk(release)
    for kind in VARIANTS[family(release)]:
        postgres.seed_variant(kind)
    with pytest.raises(ValueError, match="no variant"):
        postgres.seed_variant("nonsense")
    rows = {row["name"]: row for row in postgres.rows()}
    if family(release) == "directories":
        verify = {name: (row["uri"], row["xivo_verify_certificate"], row["xivo_custom_ca_path"])
                  for name, row in rows.items() if row["dirtype"] == "xivo"}
        assert verify == {"wazo": ("http://localhost:9487", False, None),
                          "wazo_https_custom": ("https://localhost:9486", True, SERVER_CRT),
                          "wazo_https_yes": ("https://localhost:9486", True, ""),
                          "wazo_https_no": ("https://localhost:9486", False, "")}
        assert rows["phonebook"]["dirtype"] == "phonebook"
        linked = postgres.psql("SELECT count(DISTINCT directory_id) FROM ctidirectories").strip()
        assert linked == str(len(rows))
        return
    legacy = rows["wazo_" + NAME.replace(".", "_")]["extra_fields"]
    assert legacy["confd"]["host"] == legacy["auth"]["host"] == NAME
    assert legacy["confd"]["https"] is True and legacy["confd"]["verify_certificate"] == SERVER_CRT
    if family(release) == "dird-20":
        assert legacy["confd"]["prefix"] == "/api/confd" and "port" not in legacy["confd"]
        assert (legacy["auth"]["prefix"], legacy["auth"]["port"]) == ("/api/auth", 9497)
    assert rows["ldap_localhost"]["backend"] == "ldap"


@pytest.mark.parametrize("release", ["15.12", "17.17", "19.17", "25.17"])
def test_dump_is_stable_and_survives_an_undone_update(postgres: Postgres, release: str) -> None:
    postgres.create_asterisk(release)
    for kind in VARIANTS[family(release)]:
        postgres.seed_variant(kind)
    first = postgres.dump()
    assert first == postgres.dump()
    assert "INSERT INTO public." in first and "\\restrict" not in first
    table = table_of(release)
    # an update and its exact undo move the row in the heap: the dump must not see it
    if table == "directories":
        where, column = "id = 1", "name"
    else:
        where, column = "name = 'auto_wazo_acme'", "extra_fields"
    original = postgres.psql(f"SELECT {column}::text FROM {table} WHERE {where}").rstrip("\n")  # noqa: S608
    change = f"UPDATE {table} SET {column} = '{{}}' WHERE {where}"  # noqa: S608
    undo = f"UPDATE {table} SET {column} = {quote(original)} WHERE {where}"  # noqa: S608
    postgres.psql(change)
    assert postgres.dump() != first
    postgres.psql(undo)
    assert postgres.dump() == first


def test_uri_is_accepted_by_psql(postgres: Postgres) -> None:
    postgres.create_asterisk("25.17")
    uri = postgres.uri("asterisk", "asterisk")
    assert uri.startswith("postgresql://asterisk@/asterisk?host=")
    with_password = uri.replace("asterisk@", f"asterisk:{ASTERISK_PASSWORD}@", 1)
    for target in (uri, with_password):
        done = subprocess.run(["/usr/bin/psql", "-X", "-A", "-t", target, "-c",
                               "SELECT current_user || ' ' || current_database()"],
                              capture_output=True, text=True, check=True)
        assert done.stdout.strip() == "asterisk asterisk"
    owner = postgres.psql("SELECT tableowner FROM pg_tables WHERE tablename = 'dird_source'")
    assert owner.strip() == "asterisk"


def test_no_tcp_and_not_root(postgres: Postgres) -> None:
    assert postgres.psql("SHOW listen_addresses", database="postgres").strip() == ""
    assert postgres.pid is not None
    ours = set().union(*(socket_inodes(pid) for pid in postgres.processes()))
    listening = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(name).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":  # LISTEN
                listening.add(fields[9])
    assert not ours & listening
    unix = Path("/proc/net/unix").read_text()
    assert str(postgres.socket_dir / ".s.PGSQL.5432") in unix
    uid = next(line for line in Path(f"/proc/{postgres.pid}/status").read_text().splitlines()
               if line.startswith("Uid:")).split()[1]
    assert uid != "0" or os.geteuid() != 0


def test_stopped_on_failure_with_no_process_left() -> None:
    pids: set[int] = set()
    root = None
    with pytest.raises(RuntimeError, match="boom"), Postgres() as cluster:
        root = cluster.root
        assert cluster.pid is not None
        pids = cluster.processes()
        assert len(pids) > 1  # the postmaster and its background processes
        raise RuntimeError("boom")
    assert cluster.pid is None
    assert not [pid for pid in pids if Path(f"/proc/{pid}").exists()]
    assert root is not None and not root.exists()


@pytest.mark.parametrize("release", ["15.13", "18.05", "19.03", "20.06"])
def test_releases_the_notes_do_not_cover_are_refused(release: str) -> None:
    with pytest.raises(ValueError, match="no asterisk schema"):
        family(release)


def test_a_password_in_the_db_uri_reaches_psql_in_its_password_file(postgres: Postgres) -> None:
    """A role that must give its password (scram over the socket): certbot-wazo's query gets
    in with the db_uri's password, from the password file (':' and '\\' in it), is refused
    with a wrong one, and the password is never on psql's command line."""
    from types import SimpleNamespace
    from urllib.parse import quote as percent

    from certbot_wazo import directories
    from certbot_wazo.access import LocalAccess
    from certbot_wazo.errors import HostError
    from tests.sandbox.database import PORT
    password = "p:a\\ss w0rd"
    postgres.psql(f"DROP ROLE IF EXISTS cwpass; CREATE ROLE cwpass LOGIN PASSWORD "
                  f"{quote(password)}", database="postgres")
    hba = postgres.data / "pg_hba.conf"
    original = hba.read_text()
    hba.write_text("local all cwpass scram-sha-256\n" + original)
    postgres.psql("SELECT pg_reload_conf()", database="postgres")
    argvs: list[list[str]] = []

    class Recording(LocalAccess):
        def run(self, argv, timeout, secret=None):  # type: ignore[no-untyped-def]
            argvs.append(list(argv))
            return super().run(argv, timeout, secret)

    host = SimpleNamespace(access=Recording())
    try:
        for given, works in ((password, True), ("wrong", False)):
            uri = (f"postgresql://cwpass:{percent(given, safe='')}@/postgres"
                   f"?host={postgres.socket_dir}&port={PORT}")
            if works:
                assert directories._query(host, ["/usr/bin/psql"], uri,  # type: ignore[arg-type]
                                          "SELECT current_user", 30).strip() == "cwpass"
            else:
                with pytest.raises(HostError, match="cannot be read .* exited with status 2"):
                    directories._query(host, ["/usr/bin/psql"], uri,  # type: ignore[arg-type]
                                       "SELECT current_user", 30)
    finally:
        hba.write_text(original)
        postgres.psql("SELECT pg_reload_conf(); DROP ROLE cwpass", database="postgres")
    assert len(argvs) == 2
    assert not any("w0rd" in a or "wrong" in a for argv in argvs for a in argv)
