"""Directory definitions in the asterisk database that a CA-issued certificate breaks.

wazo-dird (xivo-dird) reaches wazo-confd and wazo-auth through "directory definitions" (contact
sources) kept in the asterisk database, read here with the host's own psql:

- 16.16-19.13: table `directories`, rows of dirtype xivo (wazo from 19.01): `uri`
  (http://localhost:9487 by default, https://localhost:9486 once an admin switched it),
  `xivo_verify_certificate` + `xivo_custom_ca_path`, and from 18.05 `auth_host`,
  `auth_verify_certificate`, `auth_custom_ca_path` (wazo-platform/xivo-dao
  xivo_dao/alchemy/directories.py at wazo-16.16..wazo-19.13; xivo-confgend turns them into
  xivo-dird's sources at its start, so xivo-dird must restart).
- 19.02 on: table `dird_source`, `extra_fields` json with `confd` and `auth` parts: host,
  https, verify_certificate (true/false or a CA file) (wazo-platform/wazo-dird
  wazo_dird/database/models.py at wazo-19.17..wazo-25.17).

A part that connects with TLS to localhost and verifies, or that verifies against Wazo's
server.crt, fails once server.crt holds a certificate for the host's name issued by a CA (the
upstream page's last step: "replace localhost in the definition of your directories").
The database's address is the db_uri of wazo-dird's configuration, else xivo-confgend's
(wazo-platform/xivo-confgend wazo-18.03 etc/xivo-confgend/config.yml:
postgresql://asterisk:proformatique@localhost/asterisk).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from typing import Any, Optional
from urllib.parse import unquote, urlsplit, urlunsplit

from certbot_wazo.access import Secret
from certbot_wazo.errors import CommandError, HostError
from certbot_wazo.host import Host
from certbot_wazo.records import ROW_COLUMNS

logger = logging.getLogger(__name__)

LOCALHOST = ("localhost", "127.0.0.1", "::1", "localhost.localdomain")
TABLES = ("directories", "dird_source")
TABLES_QUERY = ("SELECT coalesce(string_agg(relname::text, ','), '') FROM pg_class WHERE relkind "
                "= 'r' AND pg_table_is_visible(oid) AND relname IN ('directories', 'dird_source')")
ROWS_QUERY = {
    "directories": "SELECT coalesce(json_agg(row_to_json(r)), '[]'::json) FROM directories r",
    # extra_fields as its exact text: an undo must give back the very bytes it found
    "dird_source": "SELECT coalesce(json_agg(json_build_object('uuid', uuid, 'name', name, "
                   "'backend', backend, 'extra_fields', extra_fields::text)), '[]'::json) "
                   "FROM dird_source",
}
# The daemons whose configuration names the asterisk database, in the order they are asked.
DB_URI_UNITS = ("wazo-dird", "xivo-dird", "wazo-confgend", "xivo-confgend")
QUERY_TIMEOUT = 60.0


@dataclasses.dataclass(frozen=True)
class Part:
    """How one definition reaches one service (confd or auth)."""

    table: str
    key: str
    name: str
    service: str
    host: str
    tls: bool
    verify: object  # True, False or the CA file it verifies against
    port: int = 443  # where it connects (nginx's 443 when a source names none)

    def where(self) -> str:
        """The definition, as an admin finds it."""
        return f"asterisk database, {self.table} {self.name!r} ({self.key}), {self.service}"

    def problem(self, hostname: str, cert_paths: set[str]) -> Optional[str]:
        """What a CA-issued certificate for hostname breaks here, with the fix (None: nothing)."""
        if not self.tls or self.verify is False:
            return None
        wrong = []
        if self.host.lower() in LOCALHOST:
            wrong.append(f"connects to {self.host}, but the certificate is for {hostname}")
        if isinstance(self.verify, str) and self.verify in cert_paths:
            wrong.append(f"verifies against {self.verify}, not the system trust store")
        if not wrong:
            return None
        return (f"{self.where()}: {'; '.join(wrong)} (in the web interface's Configuration → "
                f"Directories, or with wazo-dird's API, set its host to {hostname} and its "
                "certificate verification to the system trust store, then restart wazo-dird)")


def read(host: Host, timeout: float = QUERY_TIMEOUT) -> Optional[list[Part]]:
    """Every confd/auth part of the host's directory definitions.

    :returns: None when the host keeps none in a database certbot-wazo can read (no psql, no
        db_uri, no such table)
    :raises HostError: the database cannot be read (psql failed)
    """
    data = _rows(host, timeout)
    if data is None:
        return None
    parts: list[Part] = []
    for row in _mapping_list(data.get("directories")):
        parts += _directory_parts(row)
    for row in _mapping_list(data.get("dird_source")):
        parts += _source_parts(row)
    return parts


def _database(host: Host) -> Optional[tuple[str, str]]:
    """The host's psql and the asterisk database's URI, when both are known."""
    psql = host.command("psql")
    uri = _db_uri(host)
    return (str(psql), uri) if psql is not None and uri is not None else None


def _rows(host: Host, timeout: float) -> Optional[dict[str, Any]]:
    """The rows of the definitions' tables, by table (None: no database, no table).

    :raises HostError: the database cannot be read
    """
    database = _database(host)
    if database is None:
        return None
    psql, uri = database
    # the last line: psql prints the server's warnings too (a collation version mismatch)
    lines = _query(host, [psql], uri, TABLES_QUERY, timeout).strip().splitlines()
    tables = lines[-1].split(",") if lines else []
    present = [t for t in TABLES if t in tables]
    if not present:
        return None
    data: dict[str, Any] = {}
    for table in present:
        answer = _query(host, [psql], uri, ROWS_QUERY[table], timeout).strip().splitlines()
        try:
            data[table] = json.loads(answer[-1] if answer else "")
        except ValueError:
            raise HostError(f"{psql}: unreadable answer about the directory definitions of "
                            f"{table} (check the asterisk database)") from None
    return data


@dataclasses.dataclass(frozen=True)
class Change:
    """One column of one definition: what it holds (old) and what it must hold (new).
    dird_source's extra_fields are compared and written as their exact JSON text."""

    table: str
    key: str
    column: str
    old: Optional[object]
    new: Optional[object]

    def reverse(self) -> Change:
        """The change that puts old back."""
        return dataclasses.replace(self, old=self.new, new=self.old)

    def to_json(self) -> dict[str, Any]:
        """For the undo log."""
        return dataclasses.asdict(self)


def changes(host: Host, hostname: str,
            timeout: float = QUERY_TIMEOUT) -> tuple[list[Change], list[int]]:
    """What the definitions need for a CA-issued certificate for hostname: host NAME instead
    of localhost, the system trust store instead of server.crt (other rows, other types and
    plain-HTTP parts untouched); and the ports those definitions connect to (what a directory
    lookup's TLS connection to hostname reaches, through the hosts mapping: 127.0.0.1).

    :raises HostError: the database cannot be read
    """
    data = _rows(host, timeout)
    if data is None:
        return [], []
    cert_paths = host.cert_paths()
    found: list[Change] = []
    ports: set[int] = set()
    for row in _mapping_list(data.get("directories")):
        found += _directory_changes(row, hostname, cert_paths)
        ports |= _broken_ports(_directory_parts(row), hostname, cert_paths)
    for row in _mapping_list(data.get("dird_source")):
        found += _source_changes(row, hostname, cert_paths)
        ports |= _broken_ports(_source_parts(row), hostname, cert_paths)
    return found, sorted(ports)


def _broken_ports(parts: list[Part], hostname: str, cert_paths: set[str]) -> set[int]:
    return {p.port for p in parts if p.problem(hostname, cert_paths)}


def apply(host: Host, wanted: list[Change], strict: bool = True,
          timeout: float = QUERY_TIMEOUT) -> None:
    """Make every change in one database transaction: all or none. A column that no longer
    holds its old value (an admin's edit meanwhile) fails the whole transaction when strict,
    and is left as it is otherwise (an undo never overwrites a later edit).

    :raises HostError: psql failed, or (strict) a definition changed meanwhile; the database
        is as it was
    """
    database = _database(host)
    if not wanted:
        return
    if database is None:
        raise HostError(f"{host.root}: the asterisk database cannot be reached any more (no psql "
                        "or db_uri; put the directory definitions back by hand)")
    psql, uri = database
    tag = "$cw_" + hashlib.sha256(repr(wanted).encode()).hexdigest()[:12] + "$"
    body = []
    for change in wanted:
        column = _IDENT[change.column]
        key = f"id = {int(change.key)}" if change.table == "directories" else \
            f"uuid = {_literal(change.key)}"
        cast = "::text" if change.column == "extra_fields" else ""
        new = _literal(change.new) + ("::json" if cast else "")
        missed = (f"RAISE EXCEPTION 'certbot-wazo: {change.table} {_safe(change.key)} changed "
                  "meanwhile'" if strict else f"RAISE NOTICE 'left as is: {change.table} "
                  f"{_safe(change.key)}'")
        # identifiers come from fixed tables, every value through _literal()
        body.append(f"UPDATE {_TABLE[change.table]} SET {column} = {new} WHERE {key} AND "  # noqa: S608
                    f"{column}{cast} IS NOT DISTINCT FROM {_literal(change.old)}; "
                    f"IF NOT FOUND THEN {missed}; END IF;")
    sql = f"SET standard_conforming_strings = on; DO {tag} BEGIN {' '.join(body)} END {tag};"
    if sql.count(tag) != 2:
        raise HostError(f"{host.root}: a directory definition holds {tag} (change it by hand)")
    _query(host, [psql], uri, sql, timeout, what="changed")
    logger.debug("directory definitions: %d change(s) made (strict %s)", len(wanted), strict)


def pending(host: Host, wanted: list[Change], timeout: float = QUERY_TIMEOUT) -> list[Change]:
    """The changes whose column still holds their old value (what apply() would change).

    :raises HostError: the database cannot be read
    """
    data = _rows(host, timeout) or {}
    current: dict[tuple[str, str, str], object] = {}
    for table, key in (("directories", "id"), ("dird_source", "uuid")):
        for row in _mapping_list(data.get(table)):
            for column, value in row.items():
                current[(table, str(row.get(key)), column)] = value
    return [c for c in wanted if (c.table, c.key, c.column) in current
            and current[(c.table, c.key, c.column)] == c.old]


_IDENT = {c: c for c in ROW_COLUMNS}
_TABLE = {t: t for t in TABLES}


def _literal(value: object) -> str:
    """An SQL literal (standard_conforming_strings on: only ' needs doubling)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    text = str(value)
    if "\0" in text:
        raise HostError("a directory definition holds a NUL byte (change it by hand)")
    return "'" + text.replace("'", "''") + "'"


def _safe(key: str) -> str:
    return "".join(c for c in key if c.isalnum() or c in "-_")


def _directory_changes(row: dict[str, Any], hostname: str,
                       cert_paths: set[str]) -> list[Change]:
    found = []
    key = str(row.get("id"))
    for part in _directory_parts(row):
        if part.problem(hostname, cert_paths) is None:
            continue
        if part.service == "confd":
            uri = str(row.get("uri") or "")
            if part.host.lower() in LOCALHOST:
                try:
                    found.append(Change("directories", key, "uri", uri,
                                        _with_host(uri, hostname)))
                except ValueError:  # a port out of range: wazo-dird cannot use it either
                    logger.info("directories %s: %r left as it is (bad port)", key, uri)
                    continue
            if part.verify in cert_paths:
                found.append(Change("directories", key, "xivo_custom_ca_path",
                                    row.get("xivo_custom_ca_path"), ""))
        else:
            if part.host.lower() in LOCALHOST:
                found.append(Change("directories", key, "auth_host", row.get("auth_host"),
                                    hostname))
            if part.verify in cert_paths:
                found.append(Change("directories", key, "auth_custom_ca_path",
                                    row.get("auth_custom_ca_path"), ""))
    return found


def _source_changes(row: dict[str, Any], hostname: str, cert_paths: set[str]) -> list[Change]:
    text = row.get("extra_fields")
    old = text if isinstance(text, str) else json.dumps(text)
    try:
        extra = json.loads(old)
    except ValueError:
        return []
    fixed = False
    for part in _source_parts(row):
        if part.problem(hostname, cert_paths) is None:
            continue
        section = extra[part.service]
        if part.host.lower() in LOCALHOST:
            section["host"] = hostname
        if part.verify in cert_paths:
            section["verify_certificate"] = True
        fixed = True
    return [Change("dird_source", str(row.get("uuid")), "extra_fields", old,
                   json.dumps(extra))] if fixed else []


def _with_host(uri: str, hostname: str) -> str:
    """uri with its host replaced (scheme, port and path kept)."""
    parts = urlsplit(uri)
    netloc = hostname + (f":{parts.port}" if parts.port is not None else "")
    if parts.username:
        netloc = parts.netloc.rsplit("@", 1)[0] + "@" + netloc
    return urlunsplit(parts._replace(netloc=netloc))


def problems(host: Host, hostname: str, timeout: float = QUERY_TIMEOUT) -> tuple[str, list[str]]:
    """A one-line summary of the host's directory definitions, and what needs the admin.

    :returns: ("not checked (why)", []) when they cannot be read
    """
    try:
        parts = read(host, timeout)
    except HostError as exc:
        return f"not checked ({exc})", []
    if parts is None:
        return "none in a database certbot-wazo can read", []
    cert_paths = host.cert_paths()
    found = [p for p in (part.problem(hostname, cert_paths) for part in parts) if p]
    return (f"{len(parts)} confd/auth part(s), {len(found)} to fix" if parts
            else "no confd/auth definition"), found


def _db_uri(host: Host) -> Optional[str]:
    try:
        configs = host.daemon_configs()
    except HostError:
        return None
    for unit in DB_URI_UNITS:
        uri = configs.get(unit, {}).get("db_uri")
        if isinstance(uri, str) and uri.startswith(("postgresql:", "postgres:")):
            return uri.split("?application_name", 1)[0]
    return None


def _query(host: Host, psql: list[str], uri: str, sql: str, timeout: float,
           what: str = "read") -> str:
    bare, secret = _without_password(uri)
    try:
        return host.access.run([*psql, "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-v",
                                "VERBOSITY=terse", "-d",
                                bare, "-c", sql], timeout, secret)
    except CommandError as exc:
        message = str(exc).replace(uri, _redacted(uri)).replace(sql, "SQL")
        raise HostError(f"the asterisk database cannot be {what} ({message})") from None


def _without_password(uri: str) -> tuple[str, Optional[Secret]]:
    """The URI without its password, and the password as the password file libpq reads
    (PGPASSFILE: one `*:*:*:*:password` line, `:` and `\\` escaped): psql's argv is readable by
    every user of the host, and ssh's by every user of the controller."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri, None
    userinfo, _, address = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    password = unquote(parts.password).replace("\\", "\\\\").replace(":", "\\:")
    bare = urlunsplit(parts._replace(netloc=f"{user}@{address}" if user else address))
    return bare, Secret("PGPASSFILE", f"*:*:*:*:{password}\n".encode())


def _redacted(uri: str) -> str:
    """The URI without its password (messages and records never carry it)."""
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _mapping_list(value: object) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _directory_parts(row: dict[str, Any]) -> list[Part]:
    """A `directories` row of dirtype xivo/wazo: its uri (confd) and, from 18.05, its auth."""
    if row.get("dirtype") not in ("xivo", "wazo"):
        return []
    key, name = f"id {row.get('id')}", str(row.get("name") or "")
    uri = urlsplit(str(row.get("uri") or ""))
    try:
        port = uri.port or 443
    except ValueError:
        port = 443
    parts = [Part("directories", key, name, "confd", uri.hostname or "", uri.scheme == "https",
                  _verify(row.get("xivo_verify_certificate"), row.get("xivo_custom_ca_path")),
                  port)]
    if "auth_host" in row:
        parts.append(Part("directories", key, name, "auth", str(row.get("auth_host") or ""),
                          True, _verify(row.get("auth_verify_certificate"),
                                        row.get("auth_custom_ca_path")),
                          _port(row.get("auth_port"), 9497)))
    return parts


def _source_parts(row: dict[str, Any]) -> list[Part]:
    """A `dird_source` row whose extra_fields reach confd or auth."""
    extra = row.get("extra_fields")
    if isinstance(extra, str):
        try:
            extra = json.loads(extra)
        except ValueError:
            return []
    if not isinstance(extra, dict):
        return []
    parts = []
    for service in ("confd", "auth"):
        section = extra.get(service)
        if isinstance(section, dict) and section.get("host"):
            verify = section.get("verify_certificate", True)
            parts.append(Part("dird_source", str(row.get("uuid")), str(row.get("name") or ""),
                              service, str(section["host"]), section.get("https", True) is not
                              False, verify if isinstance(verify, (bool, str)) else True,
                              _port(section.get("port"), 443)))
    return parts


def _port(value: object, default: int) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and \
        0 < value < 65536 else default


def _verify(flag: object, ca_path: object) -> object:
    """The web interface's pair: verification off, on with the system store ('' or NULL CA), or
    on with a CA file."""
    if not flag:
        return False
    return str(ca_path) if ca_path else True
