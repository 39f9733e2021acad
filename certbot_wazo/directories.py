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
import json
import logging
from typing import Any, Optional
from urllib.parse import urlsplit

from certbot_wazo.errors import CommandError, HostError
from certbot_wazo.host import Host

logger = logging.getLogger(__name__)

LOCALHOST = ("localhost", "127.0.0.1", "::1", "localhost.localdomain")
TABLES = ("directories", "dird_source")
TABLES_QUERY = ("SELECT coalesce(string_agg(relname::text, ','), '') FROM pg_class WHERE relkind "
                "= 'r' AND pg_table_is_visible(oid) AND relname IN ('directories', 'dird_source')")
ROWS_QUERY = {
    "directories": "SELECT coalesce(json_agg(row_to_json(r)), '[]'::json) FROM directories r",
    "dird_source": "SELECT coalesce(json_agg(row_to_json(r)), '[]'::json) FROM dird_source r",
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
    psql = host.command("psql")
    uri = _db_uri(host)
    if psql is None or uri is None:
        return None
    tables = _query(host, [str(psql)], uri, TABLES_QUERY, timeout).strip().split(",")
    present = [t for t in TABLES if t in tables]
    if not present:
        return None
    data: dict[str, Any] = {}
    for table in present:
        try:
            data[table] = json.loads(_query(host, [str(psql)], uri, ROWS_QUERY[table], timeout))
        except ValueError:
            raise HostError(f"{psql}: unreadable answer about the directory definitions of "
                            f"{table} (check the asterisk database)") from None
    parts: list[Part] = []
    for row in _mapping_list(data.get("directories")):
        parts += _directory_parts(row)
    for row in _mapping_list(data.get("dird_source")):
        parts += _source_parts(row)
    return parts


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
    found = [p for p in (part.problem(hostname, host.cert_paths()) for part in parts) if p]
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


def _query(host: Host, psql: list[str], uri: str, sql: str, timeout: float) -> str:
    try:
        return host.access.run([*psql, "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-d",
                                uri, "-c", sql], timeout)
    except CommandError as exc:
        raise HostError(f"the asterisk database cannot be read ({exc})") from None


def _mapping_list(value: object) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _directory_parts(row: dict[str, Any]) -> list[Part]:
    """A `directories` row of dirtype xivo/wazo: its uri (confd) and, from 18.05, its auth."""
    if row.get("dirtype") not in ("xivo", "wazo"):
        return []
    key, name = f"id {row.get('id')}", str(row.get("name") or "")
    uri = urlsplit(str(row.get("uri") or ""))
    parts = [Part("directories", key, name, "confd", uri.hostname or "", uri.scheme == "https",
                  _verify(row.get("xivo_verify_certificate"), row.get("xivo_custom_ca_path")))]
    if "auth_host" in row:
        parts.append(Part("directories", key, name, "auth", str(row.get("auth_host") or ""),
                          True, _verify(row.get("auth_verify_certificate"),
                                        row.get("auth_custom_ca_path"))))
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
                              False, verify if isinstance(verify, (bool, str)) else True))
    return parts


def _verify(flag: object, ca_path: object) -> object:
    """The web interface's pair: verification off, on with the system store ('' or NULL CA), or
    on with a CA file."""
    if not flag:
        return False
    return str(ca_path) if ca_path else True
