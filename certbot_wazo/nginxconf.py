"""Read nginx's configuration the way nginx does: tokens, blocks, includes, and its TLS servers."""
from __future__ import annotations

import dataclasses
import glob
import os
from pathlib import Path
from typing import Callable, Iterator, Optional

from certbot_wazo.errors import HostError

NGINX_CONF = "/etc/nginx/nginx.conf"
# nginx's prefix for relative include paths on Debian.
CONF_PREFIX = "/etc/nginx"
# Bounds against include loops and hostile trees: a real Wazo has a few dozen files.
MAX_FILES = 2000
MAX_DEPTH = 20
MAX_BYTES = 4 * 1024 * 1024
MAX_NESTING = 30  # http > server > location > if: real ones nest 4 deep


@dataclasses.dataclass
class Directive:
    """One nginx directive: name, arguments, its block (None for a simple directive), its file."""

    name: str
    args: list[str]
    block: Optional[list[Directive]]
    path: str
    line: int


def listen_port(value: str, default: int) -> int:
    """The TCP port of a listen value (default when only an address is given)."""
    if value.isdigit():
        return int(value)
    _, sep, port = value.rpartition(":")
    return int(port) if sep and port.isdigit() and not value.endswith("]") else default


@dataclasses.dataclass(frozen=True)
class Server:
    """A `server` block: its listens (each the listen directive's arguments), names, the
    include patterns written in it (absolute), and where a server-level `return 30x` sends."""

    listens: tuple[tuple[str, ...], ...]
    names: tuple[str, ...]
    includes: tuple[str, ...]
    redirect: Optional[str]
    ssl_on: bool
    path: str
    line: int

    def listens_on(self, port: int) -> list[tuple[str, ...]]:
        """The listens of this server on port, TLS or not."""
        return [args for args in self.listens if args and not args[0].startswith("unix:")
                and listen_port(args[0], 443 if self.tls(args) else 80) == port]

    def tls(self, listen: tuple[str, ...]) -> bool:
        """Whether a listen of this server terminates TLS."""
        return self.ssl_on or "ssl" in listen[1:]

    def default_on(self, port: int) -> bool:
        """Whether this is its port's default server."""
        return any({"default_server", "default"} & set(args[1:]) for args in self.listens_on(port))


@dataclasses.dataclass(frozen=True)
class TlsServer:
    """A `server` block that terminates TLS on one `listen`."""

    listen: str
    default: bool
    certificates: tuple[str, ...]
    keys: tuple[str, ...]
    names: tuple[str, ...]
    path: str
    line: int

    @property
    def port(self) -> int:
        """The TCP port of the listen value (443 when only an address is given)."""
        return listen_port(self.listen, 443)

    @property
    def address(self) -> str:
        """The address part of the listen value ("" for a port alone or "*")."""
        value = self.listen
        if value.isdigit() or value == "*":
            return ""
        host, sep, port = value.rpartition(":")
        if sep and port.isdigit() and not value.endswith("]"):
            return "" if host == "*" else host.strip("[]")
        return value.strip("[]")


def _tokens(text: str, path: str) -> Iterator[tuple[str, int, bool]]:
    """(token, line, quoted) of nginx's syntax: words, quoted strings, ';', '{', '}'."""
    i, line, size = 0, 1, len(text)
    while i < size:
        char = text[i]
        if char == "\n":
            line += 1
            i += 1
        elif char.isspace():
            i += 1
        elif char == "#":
            end = text.find("\n", i)
            i = size if end < 0 else end
        elif char in ";{}":
            yield char, line, False
            i += 1
        elif char in "\"'":
            start, i = i + 1, i + 1
            while i < size and text[i] != char:
                if text[i] == "\\":
                    i += 1
                i += 1
            if i >= size:
                raise HostError(f"{path}: unterminated quoted string at line {line} (fix it; "
                                "'nginx -t' shows the same error)")
            value = text[start:i]
            line += value.count("\n")
            yield value, line, True
            i += 1
        else:
            start = i
            while i < size and not text[i].isspace() and text[i] not in ";{}\"'":
                if text[i] == "$" and i + 1 < size and text[i + 1] == "{":
                    close = text.find("}", i)
                    i = size if close < 0 else close
                i += 1
            yield text[start:i], line, False


def parse(text: str, path: str) -> list[Directive]:
    """The directives of one file (includes not followed).

    :raises HostError: nginx could not parse the file either
    """
    stack: list[list[Directive]] = [[]]
    words: list[str] = []
    first_line = 0
    for word, line, quoted in _tokens(text, path):
        if not quoted and word == ";":
            if not words:
                continue
            stack[-1].append(Directive(words[0], words[1:], None, path, first_line))
            words = []
        elif not quoted and word == "{":
            if not words:
                raise HostError(f"{path}: unexpected '{{' at line {line} (fix it; 'nginx -t' "
                                "shows the same error)")
            if len(stack) > MAX_NESTING:
                raise HostError(f"{path}: blocks nest deeper than {MAX_NESTING} at line {line} "
                                "(not an nginx configuration; fix the file)")
            block: list[Directive] = []
            stack[-1].append(Directive(words[0], words[1:], block, path, first_line))
            stack.append(block)
            words = []
        elif not quoted and word == "}":
            if words or len(stack) == 1:
                raise HostError(f"{path}: unexpected '}}' at line {line} (fix it; 'nginx -t' "
                                "shows the same error)")
            stack.pop()
        else:
            if not words:
                first_line = line
            words.append(word)
    if words or len(stack) != 1:
        raise HostError(f"{path}: unexpected end of file (an unclosed block or a missing ';'; "
                        "fix it, 'nginx -t' shows the same error)")
    return stack[0]


class _Loader:
    """Follows includes under a host root, bounded in depth, files and bytes."""

    def __init__(self, under: Callable[[str], Path]) -> None:
        self.under = under
        self.files = 0

    def load(self, wazo_path: str, depth: int = 0) -> list[Directive]:
        if depth > MAX_DEPTH or self.files >= MAX_FILES:
            raise HostError(f"{self.under(wazo_path)}: nginx includes nest too deep or name too "
                            "many files (an include loop? fix the include directives)")
        self.files += 1
        path = self.under(wazo_path)
        try:
            with open(path, "rb") as stream:
                data = stream.read(MAX_BYTES + 1)
        except OSError as exc:
            raise HostError(f"{path}: cannot be read ({exc.strerror}; nginx cannot start "
                            "without it either)") from None
        if len(data) > MAX_BYTES:
            raise HostError(f"{path}: larger than {MAX_BYTES // 1024 // 1024} MiB (not an nginx "
                            "configuration file; move it out of nginx's include paths)")
        # Errors name the file an admin edits (sites-available/…), not the link that includes it.
        return self._expand(parse(data.decode("utf-8", "replace"), os.path.realpath(path)),
                            depth)

    def _expand(self, directives: list[Directive], depth: int) -> list[Directive]:
        result: list[Directive] = []
        for directive in directives:
            if directive.name == "include" and directive.block is None and directive.args:
                pattern = directive.args[0]
                if not pattern.startswith("/"):
                    pattern = f"{CONF_PREFIX}/{pattern}"
                root = str(self.under("/")).rstrip("/")
                result.append(directive)  # kept: where a server takes location snippets
                for found in sorted(glob.glob(str(self.under(pattern)))):
                    if os.path.isfile(found):
                        result.extend(self.load(found[len(root):] or "/", depth + 1))
            elif directive.block is not None:
                result.append(dataclasses.replace(
                    directive, block=self._expand(directive.block, depth)))
            else:
                result.append(directive)
        return result


def load(under: Callable[[str], Path], conf: str = NGINX_CONF) -> list[Directive]:
    """nginx's whole configuration, includes expanded, as nginx reads it from conf (each
    include directive is kept, followed by what it includes).

    :raises HostError: a file cannot be read or parsed, or includes loop
    """
    return _Loader(under).load(conf)


def _blocks(directives: list[Directive], name: str) -> list[list[Directive]]:
    return [d.block for d in directives if d.name == name and d.block is not None]


def _values(block: list[Directive], name: str) -> list[list[str]]:
    return [d.args for d in block if d.name == name and d.block is None]


def _ssl_on(block: list[Directive]) -> Optional[bool]:
    values = _values(block, "ssl")
    return values[-1][:1] == ["on"] if values else None


def tls_servers(directives: list[Directive]) -> list[TlsServer]:
    """Every (server, listen) that terminates TLS: `listen ... ssl`, or a listen of a server
    where `ssl on;` applies (nginx < 1.25.1; Wazo's sites used it from 16.13 to 23.05).
    Certificates inherit from the http block like nginx's do."""
    found: list[TlsServer] = []
    for http in (d for d in directives if d.name == "http" and d.block is not None):
        http_block = http.block or []
        http_ssl = _ssl_on(http_block)
        http_certs = [a[0] for a in _values(http_block, "ssl_certificate") if a]
        http_keys = [a[0] for a in _values(http_block, "ssl_certificate_key") if a]
        for server in (d for d in http_block if d.name == "server" and d.block is not None):
            block = server.block or []
            server_ssl = _ssl_on(block)
            ssl_on = server_ssl if server_ssl is not None else bool(http_ssl)
            certs = [a[0] for a in _values(block, "ssl_certificate") if a] or http_certs
            keys = [a[0] for a in _values(block, "ssl_certificate_key") if a] or http_keys
            names = [n for a in _values(block, "server_name") for n in a]
            for args in _values(block, "listen"):
                if args and (ssl_on or "ssl" in args[1:]):
                    found.append(TlsServer(args[0], "default_server" in args[1:] or
                                           "default" in args[1:], tuple(certs), tuple(keys),
                                           tuple(names), server.path, server.line))
    return found


def answers_for(server: TlsServer, name: str) -> bool:
    """Whether a client asking for name reaches this server (by server_name, or as the default
    server of its port when no server_name is given or it is the catch-all `_`)."""
    names = [n.lower() for n in server.names]
    if name.lower() in names or any(n.startswith("*.") and name.lower().endswith(n[1:])
                                    for n in names):
        return True
    return server.default or not names or names == ["_"]


def server_names(directives: list[Directive]) -> list[str]:
    """Every name of every `server_name` directive of every server."""
    return [name for http in _blocks(directives, "http") for server in _blocks(http, "server")
            for args in _values(server, "server_name") for name in args]


REDIRECT_CODES = ("301", "302", "303", "307", "308")


def servers(directives: list[Directive]) -> list[Server]:
    """Every `server` block of the http block, in nginx's order."""
    found: list[Server] = []
    for http in _blocks(directives, "http"):
        http_ssl = bool(_ssl_on(http))
        for server in (d for d in http if d.name == "server" and d.block is not None):
            block = server.block or []
            server_ssl = _ssl_on(block)
            returns = [a for a in _values(block, "return") if a and a[0] in REDIRECT_CODES]
            includes = tuple(a[0] if a[0].startswith("/") else f"{CONF_PREFIX}/{a[0]}"
                             for a in _values(block, "include") if a)
            found.append(Server(
                tuple(tuple(a) for a in _values(block, "listen") if a),
                tuple(n for a in _values(block, "server_name") for n in a), includes,
                returns[0][1] if returns and len(returns[0]) > 1 else None,
                server_ssl if server_ssl is not None else http_ssl, server.path, server.line))
    return found
