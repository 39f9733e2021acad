"""Checks a daemon's peers the way its HTTP clients connect (ROOT/etc/hosts, verify_certificate)."""
from __future__ import annotations

import ipaddress
import socket
import ssl
from pathlib import Path
from typing import Any

from .common import under
from .config import daemon_config


def resolve(root: Path, host: str) -> str | None:
    """The address of host per ROOT/etc/hosts (first matching line), or the literal IP."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    for line in (root / "etc/hosts").read_text().splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) > 1 and host in fields[1:]:
            return fields[0]
    return None


def client_context(root: Path, verify: Any, cafile: Path | None) -> ssl.SSLContext:
    """What requests does with verify=False / True (system store, here cafile) / a CA path."""
    if verify is False:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    if verify is True:
        return ssl.create_default_context(cafile=str(cafile) if cafile else None)
    return ssl.create_default_context(cafile=str(under(root, str(verify))))


def peer_errors(root: Path, unit: str, cafile: Path | None = None) -> list[str]:
    """Errors met by unit's client sections (dicts with host and port) when calling their peers."""
    errors = []
    for section, value in daemon_config(root, unit).items():
        if not isinstance(value, dict) or "host" not in value or "port" not in value:
            continue
        host, port = str(value["host"]), int(value["port"])
        address = resolve(root, host)
        if address is None:
            errors.append(f"{section}: cannot resolve {host}")
            continue
        tls = value.get("https", "verify_certificate" in value)
        try:
            with socket.create_connection((address, port), timeout=3) as sock:
                if tls:
                    context = client_context(root, value.get("verify_certificate", True), cafile)
                    with context.wrap_socket(sock, server_hostname=host):
                        pass
        except (OSError, ssl.SSLError) as exc:
            errors.append(f"{section}: {host}:{port} ({address}): {exc}")
    return errors
