"""Stand-in for a Wazo daemon or asterisk: serves HTTP(S) from the sandbox's config and certs."""
from __future__ import annotations

import json
import signal
import socket
import socketserver
import ssl
import sys
from pathlib import Path
from types import FrameType
from typing import Any

from .common import counter, pinned, resolve_in_root, sandbox_dir, under
from .config import daemon_config, read_ini_section


class Handler(socketserver.StreamRequestHandler):
    """Answers every HTTP request with 200 and a small JSON body."""

    timeout = 5

    def handle(self) -> None:
        request = self.rfile.readline(8192).decode("latin-1").split()
        while self.rfile.readline(8192) not in (b"\r\n", b"\n", b""):
            pass
        if not request:
            return
        body = json.dumps({"service": getattr(self.server, "unit", "?"), "status": "ok"}).encode()
        head = (f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n").encode()
        self.wfile.write(head + (b"" if request[0] == "HEAD" else body))


class Server(socketserver.ThreadingTCPServer):
    """TCP server that wraps each accepted connection with the CURRENT TLS context."""

    daemon_threads = True
    allow_reuse_address = True
    context: ssl.SSLContext | None = None
    unit = "?"

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = self.socket.accept()
        if self.context is not None:
            sock = self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, address

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Client errors (aborted handshakes of probes) are expected: ignore."""


def load_context(root: Path, unit: str, certificate: str, private_key: str) -> ssl.SSLContext:
    """A server context with the pair at these Wazo paths (mapped under root)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    crt = pinned(root, unit, "certificate", resolve_in_root(root, certificate))
    key = pinned(root, unit, "private_key", resolve_in_root(root, private_key))
    context.load_cert_chain(str(crt), str(key))
    return context


def daemon_listener(root: Path, unit: str) -> tuple[str, int, ssl.SSLContext | None]:
    """Where a daemon listens and its context, the way upstream's daemons decide it: TLS with
    rest_api.https, or rest_api itself, or websocket (wazo-websocketd) naming a certificate;
    plain HTTP otherwise."""
    config = daemon_config(root, unit)
    rest = config.get("rest_api", {})
    candidates = [rest.get("https"), rest, config.get("https"), config.get("websocket")]
    if rest.get("ssl") is True and rest.get("ssl_certfile"):  # wazo-provd's own key names
        candidates.insert(0, {"listen": rest.get("ip", "127.0.0.1"), "port": rest["port"],
                              "certificate": rest["ssl_certfile"],
                              "private_key": rest["ssl_keyfile"]})
    for section in candidates:
        if isinstance(section, dict) and section.get("certificate") and \
                section.get("enabled", True) is not False and section.get("ssl", True) is not False:
            context = load_context(root, unit, section["certificate"], section["private_key"])
            return str(section.get("listen", "127.0.0.1")), int(section["port"]), context
    section = rest.get("http", rest)
    return str(section.get("listen", "127.0.0.1")), int(section["port"]), None


def consul_listener(root: Path) -> tuple[str, int, ssl.SSLContext | None]:
    """consul's HTTPS listener from its *.json files (later files win), as consul reads them."""
    merged: dict[str, Any] = {}
    for directory in ("etc/consul/xivo", "etc/consul.d"):
        for path in sorted((root / directory).glob("*.json")):
            merged.update(json.loads(path.read_text()))
    context = load_context(root, "consul", merged["cert_file"], merged["key_file"])
    return "127.0.0.1", int(merged["ports"]["https"]), context


def asterisk_listener(root: Path) -> tuple[str, int, ssl.SSLContext | None]:
    """Where asterisk's HTTP server listens per http.conf, and its TLS context."""
    conf = read_ini_section(under(root, "/etc/asterisk/http.conf"))
    if conf.get("tlsenable", "no").lower() in ("yes", "true", "1"):
        host, port = conf["tlsbindaddr"].rsplit(":", 1)
        return host, int(port), load_context(root, "asterisk", conf["tlscertfile"], conf["tlsprivatekey"])
    return conf.get("bindaddr", "127.0.0.1"), int(conf.get("bindport", "8088")), None


def main(root: Path, unit: str) -> int:
    """Run the stand-in for unit until killed."""
    state = sandbox_dir(root)
    if unit == "asterisk":
        counter(root / "var/lib/sandbox/asterisk.starts", increment=True)
        http_conf = root / "etc/asterisk/http.conf"  # what `module reload http` compares with
        (state / "asterisk.http-conf-stamp").write_text(
            f"{http_conf.stat().st_size}:{http_conf.stat().st_mtime_ns}")
    try:
        host, port, context = asterisk_listener(root) if unit == "asterisk" else \
            consul_listener(root) if unit == "consul" else daemon_listener(root, unit)
        server = Server((host, port), Handler)
    except (OSError, KeyError, ValueError, ssl.SSLError) as exc:
        print(f"{unit}: cannot start: {exc!r}", flush=True)
        return 1
    server.context, server.unit = context, unit

    def reload(signum: int, frame: FrameType | None) -> None:
        try:
            server.context = asterisk_listener(root)[2]
            print(f"{unit}: http module reloaded", flush=True)
        except (OSError, KeyError, ValueError, ssl.SSLError) as exc:
            print(f"{unit}: reload failed, keeping previous pair: {exc!r}", flush=True)
        counter(state / "asterisk.reloads", increment=True)

    if unit == "asterisk":
        signal.signal(signal.SIGHUP, reload)
    (state / f"{unit}.ready").write_text(f"{host}:{port}\n")
    print(f"{unit}: listening on {host}:{port} ({'https' if context else 'http'})", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]), sys.argv[2]))
