"""A real PostgreSQL (Debian's) holding the `asterisk` database of one Wazo/XiVO release, for the
directory definitions of issue 15 (contact sources wazo-dird / xivo-dird use to reach confd and auth).

The cluster is the tests' own: initdb into a private directory as an unprivileged user, no TCP at
all (listen_addresses=''), one Unix socket in a private directory; the machine's PostgreSQL service,
/etc/postgresql and /var/lib/postgresql are never used. The schema of each release family is
written here from the facts of tests/data/upstream-notes/directories.yml (no upstream code is
copied; each function cites repo, tag and path of the fact it follows); rows are seeded the way a
fresh install (populate.sql / wazo-dird's config_service) or the web interface writes them.
"""
# SQL is built from this module's constants, every value through quote(): no untrusted input.
# ruff: noqa: S608
from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

SERVER_CRT = "/usr/share/xivo-certs/server.crt"
KEY_FILE = "/var/lib/wazo-auth-keys/wazo-dird-wazo-backend-key.yml"
# wazo-dird's db_uri postgresql://asterisk:proformatique@localhost/asterisk
# (wazo-platform/wazo-dird, tags wazo-19.17 .. wazo-25.17, etc/wazo-dird/config.yml, `db_uri:`)
ASTERISK_PASSWORD = "proformatique"
NAME = "wazo.example.test"  # the host's public name in legacy rows (ours)
TENANT_UUID = "6a5d3a0e-5b43-4a8e-9d8c-2f1f0a0b0c01"  # ours, fixed so that dumps are reproducible
TENANT_NAME = "acme"  # ours
PORT = 5432  # only names the socket file (.s.PGSQL.5432 in the private directory): no TCP

# Which variants seed_variant() knows, per family.
VARIANTS = {
    "15.12": (),
    "directories": ("custom", "yes", "no", "other"),
    "dird-19": ("legacy", "other"),
    "dird-20": ("legacy", "other"),
}


def server_bin() -> Optional[Path]:
    """The newest Debian PostgreSQL server's bin directory (/usr/lib/postgresql/<N>/bin)."""
    found = []
    for path in Path("/usr/lib/postgresql").glob("*/bin"):
        if path.parent.name.isdigit() and (path / "initdb").is_file() and (path / "postgres").is_file():
            found.append((int(path.parent.name), path))
    return max(found)[1] if found else None


def unavailable() -> Optional[str]:
    """Why a cluster cannot be made here, or None."""
    if server_bin() is None:
        return ("Debian's PostgreSQL server is not installed (/usr/lib/postgresql/*/bin/initdb;"
                " run .ci/bootstrap)")
    for tool in ("/usr/bin/psql", "/usr/bin/pg_dump"):
        if not Path(tool).is_file():
            return f"{tool} missing (Debian's postgresql-client-common)"
    if os.geteuid() == 0 and _system_user() is None:
        return "no unprivileged user to run PostgreSQL as (neither postgres nor nobody exists)"
    return None


def _system_user() -> Optional[pwd.struct_passwd]:
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    return None


def _children(pid: int) -> set[int]:
    """Processes whose parent is pid (from /proc/*/stat)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid:
            found.add(int(stat.parent.name))
    return found


def version(release: str) -> tuple[int, int]:
    major, minor = release.split(".")
    return int(major), int(minor)


def family(release: str) -> str:
    """The schema family of a release: '15.12', 'directories' (16.16-18.03), 'dird-19' (19.17),
    'dird-20' (20.16 and later). Releases the notes do not cover (e.g. 18.05-19.03 with auth_*
    columns) raise ValueError."""
    v = version(release)
    if v == (15, 12):
        return "15.12"
    if (16, 16) <= v <= (18, 3):
        return "directories"
    if (19, 17) <= v < (20, 6):
        return "dird-19"
    if v >= (20, 16):
        return "dird-20"
    raise ValueError(f"no asterisk schema for release {release} (not covered by the notes)")


def quote(value: Optional[str]) -> str:
    """An SQL literal."""
    return "NULL" if value is None else "'" + value.replace("'", "''") + "'"


class Postgres:
    """A private PostgreSQL cluster; a context manager (stopped, and its directory removed when
    it made it, on exit, also on failure)."""

    def __init__(self, root: Optional[Path] = None) -> None:
        bin_dir = server_bin()
        if bin_dir is None:
            raise RuntimeError(unavailable() or "no PostgreSQL")
        self.bin = bin_dir
        self._own_root = root is None
        # The unprivileged user must reach the directory: tmp_path (/tmp/pytest-of-root, 0700) is not.
        self.root = Path(tempfile.mkdtemp(prefix="certbot-wazo-pg-")) if root is None else root
        self.data = self.root / "data"
        self.socket_dir = self.root / "run"
        self.log = self.root / "postgres.log"
        self.release: Optional[str] = None
        self._proc: Optional[subprocess.Popen[bytes]] = None
        self._user = _system_user() if os.geteuid() == 0 else None

    # -- lifecycle -------------------------------------------------------------------------------

    def __enter__(self) -> Postgres:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pid(self) -> Optional[int]:
        """The postmaster's pid while it runs."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def _as_user(self) -> dict[str, Any]:
        if self._user is None:
            return {}
        return {"user": self._user.pw_uid, "group": self._user.pw_gid, "extra_groups": []}

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(LC_ALL="C", HOME=str(self.root), TZ="UTC")
        return env

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        for path in (self.data, self.socket_dir):
            path.mkdir(mode=0o700)
        self.log.touch()
        if self._user is not None:
            for path in (self.root, self.data, self.socket_dir, self.log):
                os.chown(path, self._user.pw_uid, self._user.pw_gid)
        subprocess.run([str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust",
                        "--no-locale", "-E", "UTF8", "--no-sync"],
                       check=True, capture_output=True, env=self._env(), cwd=self.root, **self._as_user())
        with self.log.open("ab") as log:
            self._proc = subprocess.Popen(
                [str(self.bin / "postgres"), "-D", str(self.data), "-p", str(PORT),
                 "-c", "listen_addresses=", "-c", f"unix_socket_directories={self.socket_dir}",
                 "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=self._env(), cwd=self.root,
                **self._as_user())
        deadline = time.monotonic() + 30
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"postgres exited ({self._proc.returncode}): "
                                   f"{self.log.read_text()[-2000:]}")
            ready = subprocess.run([str(self.bin / "pg_isready"), "-q", "-h", str(self.socket_dir),
                                    "-p", str(PORT)], env=self._env(), check=False)
            if ready.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"postgres not ready after 30 s: {self.log.read_text()[-2000:]}")
            time.sleep(0.05)

    def processes(self) -> set[int]:
        """The postmaster and its children (each child calls setsid(): a process group would miss them)."""
        pid = self.pid
        return set() if pid is None else {pid, *_children(pid)}

    def stop(self) -> None:
        """Fast shutdown (SIGINT), then immediate (SIGQUIT), then SIGKILL, the children the
        postmaster had included: no process is left. Idempotent."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            children = _children(proc.pid)
            for sig, wait in ((signal.SIGINT, 20.0), (signal.SIGQUIT, 5.0), (signal.SIGKILL, 5.0)):
                try:
                    proc.send_signal(sig)
                    proc.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
            deadline = time.monotonic() + 5
            while children and time.monotonic() < deadline:
                children = {pid for pid in children if Path(f"/proc/{pid}").exists()}
                time.sleep(0.02)
            for pid in children:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        if proc is not None:
            proc.wait()
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    # -- clients -------------------------------------------------------------------------------

    def uri(self, database: str = "asterisk", user: str = "asterisk") -> str:
        """A libpq URI over the private socket (psql accepts it; the password is not needed:
        local connections are trusted)."""
        return f"postgresql://{user}@/{database}?host={self.socket_dir}&port={PORT}"

    def psql(self, sql: str, database: str = "asterisk", user: str = "postgres") -> str:
        """Run SQL with Debian's /usr/bin/psql (-X -A -t, ON_ERROR_STOP); its stdout."""
        done = subprocess.run(["/usr/bin/psql", "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1",
                               "-h", str(self.socket_dir), "-p", str(PORT), "-U", user, "-d", database,
                               "-f", "-"],
                              input=sql, capture_output=True, text=True, env=self._env(), check=False)
        if done.returncode != 0:
            raise RuntimeError(f"psql failed ({done.returncode}): {done.stderr.strip()}\n{sql}")
        return done.stdout

    def dump(self, database: str = "asterisk") -> str:
        """The data of the whole database as Debian's `pg_dump --data-only --inserts` writes it, the
        INSERT lines of each table sorted: an UPDATE moves a row to the end of its table's heap,
        so pg_dump's (physical) order would change on a byte-identical restore. The \\restrict /
        \\unrestrict lines (a random key per run) are left out."""
        done = subprocess.run(["/usr/bin/pg_dump", "--data-only", "--inserts", "-h", str(self.socket_dir),
                               "-p", str(PORT), "-U", "postgres", database],
                              capture_output=True, text=True, env=self._env(), check=False)
        if done.returncode != 0:
            raise RuntimeError(f"pg_dump failed: {done.stderr.strip()}")
        out: list[str] = []
        block: list[str] = []
        for line in done.stdout.splitlines(keepends=True):
            if line.startswith(("\\restrict ", "\\unrestrict ")):
                continue  # a random key per run (pg_dump 15.14+, CVE-2025-8714)
            if line.startswith("INSERT INTO "):
                block.append(line)
                continue
            out.extend(sorted(block))
            block = []
            out.append(line)
        out.extend(sorted(block))
        return "".join(out)

    # -- the asterisk database -----------------------------------------------------------------

    def create_asterisk(self, release: str) -> None:
        """(Re)create role asterisk (password as in wazo-dird's db_uri) and database asterisk owned
        by it, with the schema and the fresh-install rows of the release's family."""
        kind = family(release)
        self.psql(f"""
            DO $$ BEGIN
              IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'asterisk') THEN
                CREATE ROLE asterisk LOGIN PASSWORD {quote(ASTERISK_PASSWORD)};
              END IF;
            END $$;
            DROP DATABASE IF EXISTS asterisk WITH (FORCE);
            CREATE DATABASE asterisk OWNER asterisk;
        """, database="postgres")
        self.release = release
        if kind == "15.12":
            self.psql(_schema_15_12(), user="asterisk")
        elif kind == "directories":
            self.psql(_schema_directories(), user="asterisk")
        else:
            extensions = self.psql("SELECT count(*) FROM pg_available_extensions "
                                   "WHERE name IN ('hstore', 'uuid-ossp')").strip() == "2"
            if extensions:
                self.psql('CREATE EXTENSION hstore; CREATE EXTENSION "uuid-ossp";')
            self.psql(_schema_dird(release, extensions), user="asterisk")
        self.psql(_seed(release), user="asterisk")

    def seed_variant(self, kind: str, host: str = NAME) -> None:
        """Add the rows an admin (web interface / dird API) or an upgrade leaves, on the release
        of the last create_asterisk(): see VARIANTS and _variant()."""
        if self.release is None:
            raise RuntimeError("create_asterisk() first")
        self.psql(_variant(self.release, kind, host), user="asterisk")

    def rows(self, release: Optional[str] = None) -> list[dict[str, Any]]:
        """The directory definitions as dicts (json columns parsed): asterisk.directories by id
        up to 18.03, dird_source by name from 19.17."""
        release = release or self.release
        if release is None:
            raise RuntimeError("create_asterisk() first")
        table, order = ("directories", "id") if family(release) in ("15.12", "directories") else \
            ("dird_source", "name")
        text = self.psql(f"SELECT coalesce(json_agg(t ORDER BY t.{order}), '[]') FROM {table} t")
        rows: list[dict[str, Any]] = json.loads(text)
        return rows

    def columns(self, table: str) -> list[tuple[str, str]]:
        """(name, type) of a table's columns in order, from information_schema."""
        text = self.psql("SELECT column_name || '|' || CASE WHEN data_type = 'USER-DEFINED' THEN udt_name "
                         "ELSE data_type END FROM information_schema.columns "
                         f"WHERE table_name = {quote(table)} ORDER BY ordinal_position")
        return [(name, kind) for name, _, kind in (line.partition("|") for line in text.splitlines() if line)]


# -- schemas ------------------------------------------------------------------------------------

def _schema_15_12() -> str:
    # Facts: xivo-dao model (wazo-platform/xivo-dao, xivo-15.12, xivo_dao/alchemy/directories.py),
    # created by metadata.create_all (wazo-platform/xivo-manage-db, xivo-15.12, xivo_db/bin/init_db.py).
    # No xivo dirtype, no verify/CA column: nothing TLS.
    return """
        CREATE TABLE directories (
            id serial PRIMARY KEY,
            uri varchar(255),
            dirtype varchar(20),
            name varchar(255),
            tablename varchar(255),
            description text NOT NULL
        );
    """


def _schema_directories() -> str:
    # Facts (16.16, 17.17, 18.03): xivo-dao models (wazo-platform/xivo-dao, wazo-16.16 / wazo-17.17 /
    # wazo-18.03, xivo_dao/alchemy/directories.py, ctidirectories.py, ctidirectoryfields.py);
    # xivo_* columns from 2f7e5c4119bc (wazo-platform/xivo-manage-db, wazo-19.17,
    # alembic/versions/2f7e5c4119bc_add_xivo_directory_fields.py: xivo_verify_certificate boolean
    # NOT NULL server_default False); description's '' default is ORM-side only (not in the DDL);
    # ldapfilter_id's FK to ldapfilter is left out (the notes' test_schema allows it).
    return """
        CREATE TABLE directories (
            id serial PRIMARY KEY,
            uri varchar(255),
            dirtype varchar(20) NOT NULL,
            name varchar(255),
            description text NOT NULL,
            xivo_username text,
            xivo_password text,
            xivo_verify_certificate boolean NOT NULL DEFAULT false,
            xivo_custom_ca_path text,
            dird_tenant text,
            dird_phonebook text,
            ldapfilter_id integer
        );
        CREATE TABLE ctidirectories (
            id serial PRIMARY KEY,
            name varchar(255),
            delimiter varchar(20),
            match_direct text NOT NULL,
            match_reverse text NOT NULL DEFAULT '',
            description varchar(255),
            deletable integer,
            directory_id integer REFERENCES directories(id) ON DELETE CASCADE
        );
        CREATE TABLE ctidirectoryfields (
            dir_id integer,
            fieldname varchar(255),
            value varchar(255),
            PRIMARY KEY (dir_id, fieldname)
        );
    """


def _schema_dird(release: str, extensions: bool) -> str:
    # Facts: wazo-dird's models (wazo-platform/wazo-dird, tag wazo-<release>,
    # wazo_dird/database/models.py: dird_source, dird_tenant), columns added by 9a38ab587987,
    # 25e9a6782cac, 0279b94ee7c6 (wazo-platform/wazo-dird, wazo-19.17, alembic/versions/...);
    # phonebook_uuid by a3a7212e29b8 (wazo-platform/wazo-dird, wazo-23.16,
    # alembic/versions/a3a7212e29b8_source_add_phonebook_uuid.py; its FK to dird_phonebook left
    # out); name DEFAULT uuid_generate_v4() and dird_tenant.country from the 25.14 baseline
    # (wazo-platform/wazo-dird, wazo-25.17, alembic/versions/baseline-2514.sql).
    # extra_fields is json, not jsonb (models.py `extra_fields = Column(JSON)`).
    # Without hstore/uuid-ossp (reduced schema the notes allow): format_columns text, no uuid default.
    v = version(release)
    uuid_default = " DEFAULT uuid_generate_v4()" if extensions else ""
    hstore = "hstore" if extensions else "text"
    country = ",\n            country varchar(2)" if v >= (25, 14) else ""
    name_default = uuid_default if v >= (25, 14) else ""
    phonebook = ",\n            phonebook_uuid uuid" if v >= (23, 14) else ""
    index = "CREATE INDEX dird_source_tenant_uuid_idx ON dird_source (tenant_uuid);" if v >= (23, 14) else ""
    return f"""
        CREATE TABLE dird_tenant (
            uuid varchar(36){uuid_default} PRIMARY KEY{country}
        );
        CREATE TABLE dird_source (
            uuid varchar(36){uuid_default} PRIMARY KEY,
            name text{name_default} NOT NULL,
            tenant_uuid varchar(36) REFERENCES dird_tenant(uuid),
            searched_columns text[],
            first_matched_columns text[],
            format_columns {hstore},
            extra_fields json,
            backend text NOT NULL{phonebook},
            UNIQUE (uuid, tenant_uuid),
            UNIQUE (name, tenant_uuid)
        );
        {index}
    """


# -- rows ---------------------------------------------------------------------------------------

def _directory(uri: str, dirtype: str, name: str, description: str, verify: bool = False,
               ca: Optional[str] = None) -> str:
    """A directories row and the ctidirectories row that makes confgend emit it (confgend joins
    ctidirectories -> directories: wazo-platform/xivo-dao, wazo-16.16, xivo_dao/directory_dao.py).
    The ctidirectories values other than directory_id are ours."""
    return f"""
        INSERT INTO directories (uri, dirtype, name, description, xivo_verify_certificate,
                                 xivo_custom_ca_path)
        VALUES ({quote(uri)}, {quote(dirtype)}, {quote(name)}, {quote(description)},
                {'true' if verify else 'false'}, {quote(ca)});
        INSERT INTO ctidirectories (name, delimiter, match_direct, match_reverse, description, deletable,
                                    directory_id)
        VALUES ({quote(name)}, ' ', '', '', {quote(description)}, 1, currval('directories_id_seq'));
    """


def _source(name: str, backend: str, extra_fields: dict[str, Any], uuid: str) -> str:
    """A dird_source row as wazo-dird writes it: extra_fields serialized by json.dumps (as
    SQLAlchemy's JSON type does). searched/first_matched/format columns are ours (illustrative)."""
    return f"""
        INSERT INTO dird_source (uuid, name, tenant_uuid, searched_columns, first_matched_columns,
                                 format_columns, extra_fields, backend)
        VALUES ({quote(uuid)}, {quote(name)}, {quote(TENANT_UUID)}, ARRAY['firstname', 'lastname'],
                ARRAY['exten'], 'name=>"{{firstname}} {{lastname}}", phone=>"{{exten}}"',
                {quote(json.dumps(extra_fields))}, {quote(backend)});
    """


def auto_wazo_fields(release: str) -> dict[str, Any]:
    """extra_fields of the auto_wazo_<tenant> source wazo-dird's config_service creates."""
    if family(release) == "dird-19":
        # wazo-platform/wazo-dird, wazo-19.17, wazo_dird/plugins/config_service/plugin.py (WAZO_SOURCE_BODY)
        return {"auth": {"host": "localhost", "port": 9497, "verify_certificate": SERVER_CRT,
                         "key_file": KEY_FILE, "version": "0.1"},
                "confd": {"host": "localhost", "port": 9486, "https": True, "verify_certificate": SERVER_CRT,
                          "version": "1.1"}}
    # wazo-platform/wazo-dird, wazo-20.16 .. wazo-25.17, wazo_dird/plugins/config_service/plugin.py
    # (WAZO_SOURCE_BODY: plain HTTP on localhost, no confd verify_certificate)
    return {"auth": {"host": "localhost", "port": 9497, "prefix": None, "https": False, "key_file": KEY_FILE},
            "confd": {"host": "localhost", "port": 9486, "prefix": None, "https": False}}


def _seed(release: str) -> str:
    kind = family(release)
    if kind == "15.12":
        # wazo-platform/xivo-manage-db, xivo-15.12, populate/populate.sql (INSERT INTO "directories")
        return """
            INSERT INTO directories (uri, dirtype, name, tablename, description)
            VALUES ('internal', NULL, 'internal', '', 'XiVO internal users'),
                   ('phonebook', NULL, 'phonebook', '', 'XiVO phonebook');
        """
    if kind == "directories":
        # wazo-platform/xivo-manage-db, wazo-16.16 / wazo-17.17 / wazo-18.03, populate/populate.sql
        # (INSERT INTO "directories" + its INSERT INTO "ctidirectories"); verify false = server default
        return _directory("http://localhost:9487", "xivo", "wazo", "wazo internal users")
    return f"INSERT INTO dird_tenant (uuid) VALUES ({quote(TENANT_UUID)});" + _source(
        f"auto_wazo_{TENANT_NAME}", "wazo", auto_wazo_fields(release), "0b9f5c1e-0000-4000-8000-000000000001")


def _variant(release: str, kind: str, host: str) -> str:
    fam = family(release)
    if kind not in VARIANTS[fam]:
        raise ValueError(f"no variant {kind!r} for release {release} (known: {', '.join(VARIANTS[fam])})")
    if fam == "directories":
        # The web interface's verify select (wazo-platform/xivo-web-interface, wazo-16.16,
        # src/action/www/xivo/configuration/manage/directories.php, set_xivo_verify_certificate):
        # yes -> true + '', custom -> true + path, no -> false + ''.
        if kind == "custom":
            return _directory("https://localhost:9486", "xivo", "wazo_https_custom", "", True, SERVER_CRT)
        if kind == "yes":
            return _directory("https://localhost:9486", "xivo", "wazo_https_yes", "", True, "")
        if kind == "no":
            return _directory("https://localhost:9486", "xivo", "wazo_https_no", "", False, "")
        # other: the phonebook row of a host installed before 15.13 (xivo-manage-db xivo-15.12
        # populate/populate.sql; dirtype filled by 4a80d0e24028): never to be touched
        return _directory("phonebook", "phonebook", "phonebook", "XiVO phonebook")
    if kind == "other":
        # a non-wazo source on localhost (ours): never to be touched
        return _source("ldap_localhost", "ldap",
                       {"ldap_uri": "ldaps://localhost:636", "ldap_base_dn": "ou=people,dc=example,dc=test",
                        "ldap_custom_filter": "", "verify_certificate": SERVER_CRT},
                       "0b9f5c1e-0000-4000-8000-000000000003")
    if fam == "dird-19":
        # a source an admin pointed at the host's name (the pre-19.01 HTTPS procedure), as the dird
        # API stores it (wazo-platform/wazo-dird, wazo-19.17, wazo_dird/schemas.py)
        fields: dict[str, Any] = {
            "auth": {"host": host, "port": 9497, "verify_certificate": SERVER_CRT, "key_file": KEY_FILE,
                     "version": "0.1"},
            "confd": {"host": host, "port": 9486, "https": True, "verify_certificate": SERVER_CRT,
                      "version": "1.1"}}
    else:
        # the same source after 69698e576ad7 (auth: prefix /api/auth, https true, port kept) and
        # 0542e068b5ef (confd: prefix /api/confd, port removed, https/verify kept)
        # (wazo-platform/wazo-dird, wazo-20.16, alembic/versions/69698e576ad7_..., 0542e068b5ef_...):
        # routed through nginx, still verifying against server.crt
        fields = {
            "auth": {"host": host, "port": 9497, "verify_certificate": SERVER_CRT, "key_file": KEY_FILE,
                     "version": "0.1", "prefix": "/api/auth", "https": True},
            "confd": {"host": host, "https": True, "verify_certificate": SERVER_CRT, "version": "1.1",
                      "prefix": "/api/confd"}}
    return _source(f"wazo_{re.sub(r'[^a-z0-9]+', '_', host.lower())}", "wazo", fields,
                   "0b9f5c1e-0000-4000-8000-000000000002")
