"""HTTP-01 challenges answered by the host's own nginx, through a location snippet its site includes."""
from __future__ import annotations

import dataclasses
import glob
import logging
import re
import socket
import ssl
import time
from pathlib import Path
from typing import Callable, Mapping, Optional

from certbot_wazo import nginxconf, services, tls
from certbot_wazo.errors import CommandError, HostError
from certbot_wazo.files import FileState
from certbot_wazo.host import Host

logger = logging.getLogger(__name__)

# The file put into the include directory of the server that answers: Wazo's location
# directories are included with `*`, so a name without extension is read like theirs.
SNIPPET = "certbot-wazo-acme-challenge"
# Where a run records the snippet it is about to write (in certbot-wazo's state directory).
STATE_DIR = "/var/lib/certbot-wazo"
RECORD = "http01-snippet"
PATH_PREFIX = "/.well-known/acme-challenge/"
# A token and a key authorization are base64url (RFC 8555 section 8.3): nothing nginx would
# read as syntax. Anything else is refused rather than quoted.
_TOKEN = re.compile(r"[A-Za-z0-9_-]{1,256}\Z")
_KEY_AUTHORIZATION = re.compile(r"[A-Za-z0-9_-]{1,256}\.[A-Za-z0-9_-]{1,256}\Z")
# A redirect's scheme and literal port ("https://$host:8443$request_uri").
_REDIRECT = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://[^/:]*(?::(\d{1,5}))?")
# How long nginx's new workers get to serve the snippet after the reload, and for how long
# every answer must be right before the validator is let in: after a graceful reload, the old
# workers keep accepting connections for a moment (a validator reaching one gets a 404).
SERVE_TIMEOUT = 15.0
STEADY = 1.0

Clock = Callable[[], float]


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where the answers go: the include directory of the server the validation reaches (the
    plain-HTTP server on the port, or the TLS server it redirects to), and how to reach it."""

    directory: str
    port: int
    tls: bool
    server: str

    @property
    def snippet(self) -> str:
        """The host path of the snippet."""
        return f"{self.directory.rstrip('/')}/{SNIPPET}"


def _answering(candidates: list[nginxconf.Server], port: int,
               name: str) -> Optional[nginxconf.Server]:
    """The server nginx picks for name on port: by server_name, else the port's default
    server, else the first that listens there."""
    on_port = [s for s in candidates if s.listens_on(port)]
    for server in on_port:
        if name.lower() in (n.lower() for n in server.names):
            return server
    defaults = [s for s in on_port if s.default_on(port)]
    return (defaults or on_port)[0] if on_port else None


def _directory(server: nginxconf.Server) -> Optional[str]:
    """The first directory the server includes whole (`include DIR/*`)."""
    for pattern in server.includes:
        directory, _, last = pattern.rpartition("/")
        if last == "*" and directory and not glob.has_magic(directory):
            return directory
    return None


def placement(directives: list[nginxconf.Directive], port: int, name: str) -> Placement:
    """Where a location snippet answers the validation of name on port.

    :raises HostError: nginx has no server on port, it redirects where nothing answers, or
        the server that answers includes no location directory
    """
    candidates = nginxconf.servers(directives)
    server = _answering(candidates, port, name)
    if server is None:
        raise HostError(f"{nginxconf.NGINX_CONF}: no nginx server listens on port {port} (HTTP-01 "
                        "validation connects there; give --http-01-port, or use another "
                        "authenticator such as --webroot or a DNS plugin)")
    https = False
    if server.redirect is not None:
        target = _REDIRECT.match(server.redirect)
        if target is None or target.group(1).lower() != "https":
            raise HostError(f"{server.path}:{server.line}: the server on port {port} redirects to "
                            f"{server.redirect} (HTTP-01 validation follows redirects to HTTPS "
                            "only; use another authenticator)")
        target_port = int(target.group(2) or 443)
        if target_port != 443:
            raise HostError(f"{server.path}:{server.line}: the server on port {port} redirects "
                            f"to port {target_port} (Let's Encrypt follows redirects to ports 80 "
                            "and 443 only; use another authenticator)")
        redirected = _answering(candidates, target_port, name)
        if redirected is None:
            raise HostError(f"{server.path}:{server.line}: the server on port {port} redirects "
                            "to port 443 where no nginx server listens (fix the redirect, or "
                            "use another authenticator)")
        port = target_port
        server, https = redirected, True
    directory = _directory(server)
    if directory is None:
        # wazo-nginx's own directories: http-enabled in the port-80 server, https-enabled in
        # the 443 one (wazo-platform/wazo-nginx, tag wazo-22.09, etc/nginx/sites-available/wazo).
        wanted = "https-enabled" if https or any(server.tls(a) for a in server.listens_on(port)) \
            else "http-enabled"
        raise HostError(f"{server.path}:{server.line}: the server on port {port} includes no "
                        f"location directory (add `include /etc/nginx/locations/{wanted}/*;` "
                        "to it, or use another authenticator)")
    return Placement(directory, port, https, f"{server.path}:{server.line}")


def snippet(answers: Mapping[str, str]) -> bytes:
    """nginx locations answering each token with its key authorization, as plain text.

    :raises ValueError: a token or key authorization is not base64url
    """
    blocks = ["# certbot-wazo: ACME HTTP-01 answers, removed when the validation ends.\n"]
    for token, key_authorization in sorted(answers.items()):
        if not _TOKEN.match(token) or not _KEY_AUTHORIZATION.match(key_authorization):
            raise ValueError(f"not an ACME HTTP-01 token and key authorization: {token!r}")
        blocks.append(f"location = {PATH_PREFIX}{token} {{\n    default_type text/plain;\n"
                      f"    return 200 \"{key_authorization}\";\n}}\n")
    return "".join(blocks).encode("ascii")


class Responder:
    """Puts HTTP-01 answers into the host's nginx and takes them away again."""

    def __init__(self, host: Host, port: int = 80, clock: Clock = time.monotonic,
                 serve_timeout: float = SERVE_TIMEOUT) -> None:
        self.host = host
        self.port = port
        self.clock = clock
        self.serve_timeout = serve_timeout
        self.published: Optional[Placement] = None
        self.loaded = False  # whether nginx was reloaded with the snippet

    def publish(self, answers: Mapping[str, tuple[str, str]]) -> Placement:
        """Answer each token (token -> (name, key authorization)) from nginx: write the
        snippet, `nginx -t`, graceful reload, then check nginx serves every answer.

        :raises HostError: nginx cannot take the snippet or does not serve it (it is removed)
        """
        names = {name for name, _ in answers.values()}
        directives = nginxconf.load(self.host.path)
        places = {placement(directives, self.port, name) for name in sorted(names)}
        if len(places) != 1:
            raise HostError(f"{nginxconf.NGINX_CONF}: the names {', '.join(sorted(names))} are "
                            "served by different nginx servers (request them one at a time)")
        place = places.pop()
        path = self.host.path(place.snippet)
        if not self.host.path(place.directory).is_dir():
            raise HostError(f"{path.parent}: no such directory (nginx's site includes it; "
                            "create it, or use another authenticator)")
        data = snippet({token: value for token, (_, value) in answers.items()})
        self.published, self.loaded = place, False
        try:
            # Where it goes, first: a run killed after this is cleaned up by the next one.
            record = self.host.access.private_dir(self.host.path(STATE_DIR)) / RECORD
            self.host.access.apply_state(record, FileState.file(
                place.snippet.encode() + b"\n", 0o600))
            self.host.access.apply_state(path, FileState.file(data, 0o644))
            self._test_and_reload(path)
            self.loaded = True
            for token, (name, value) in sorted(answers.items()):
                self._wait_served(place, name, token, value)
        except BaseException:
            self.withdraw()
            raise
        logger.info("HTTP-01 answers in %s (%s)", path, place.server)
        return place

    def withdraw(self) -> None:
        """Remove the snippet (this run's, or one a killed run left, where its record says: the
        record is written first) and reload nginx when it may have loaded it. Without either,
        nothing is read: prepare() calls this on every run.

        :raises HostError: the snippet could not be removed
        """
        own = self.published.snippet if self.published else None
        loaded = self.loaded
        self.published, self.loaded = None, False
        snippets = [own] if own else []
        snippets += [p for p in self._recorded() if p not in snippets]
        for wazo_path in snippets:
            path = self.host.path(wazo_path)
            if not (path.exists() or path.is_symlink()):
                continue
            self.host.access.apply_state(path, FileState.absent())
            if wazo_path == own and not loaded:
                continue
            try:
                self._test_and_reload(path)
            except HostError as exc:
                logger.warning("%s: removed, but nginx was not reloaded: %s", path, exc)
        record = self.host.path(f"{STATE_DIR}/{RECORD}")
        if record.exists() or record.is_symlink():
            self.host.access.apply_state(record, FileState.absent())

    def _recorded(self) -> list[str]:
        """The snippet a run recorded (only a path of our own file name; anything else in the
        record is ignored)."""
        try:
            with open(self.host.path(f"{STATE_DIR}/{RECORD}"), "rb") as stream:
                text = stream.read(4096).decode("utf-8", "replace").strip()
        except OSError:
            return []
        if text.startswith("/") and text.endswith(f"/{SNIPPET}") and "/../" not in text \
                and "\n" not in text:
            return [text]
        return []

    def _test_and_reload(self, path: Path) -> None:
        """`nginx -t`, then a graceful reload.

        :raises HostError: nginx refuses its configuration, or the reload failed
        """
        nginx = services.require(self.host, "nginx")
        systemctl = services.require(self.host, "systemctl")
        try:
            self.host.access.run([str(nginx), "-t", "-q"], timeout=60)
        except CommandError as exc:
            # nginx -t ends with "test failed"; its reason is the [emerg] line before.
            reason = next((line.strip() for line in exc.output.splitlines()
                           if "[emerg]" in line), str(exc))
            raise HostError(f"{path}: nginx refuses its configuration ({reason}; nginx was not "
                            "reloaded; fix what `nginx -t` names, or use another authenticator)"
                            ) from None
        try:
            self.host.access.run([str(systemctl), "reload", "nginx"], timeout=60)
        except CommandError as exc:
            raise HostError(f"{path}: nginx could not be reloaded ({exc})") from None

    def _wait_served(self, place: Placement, name: str, token: str, value: str) -> None:
        """Wait until nginx answers token with value on every connection for STEADY seconds
        (none reaches an old worker any more).

        :raises HostError: it does not within serve_timeout
        """
        deadline = self.clock() + self.serve_timeout
        scheme = "https" if place.tls else "http"
        steady_since: Optional[float] = None
        while True:
            got = self._fetch(place, name, token)
            now = self.clock()
            if got != value:
                steady_since = None
            elif steady_since is None:
                steady_since = now
            elif now - steady_since >= STEADY:
                return
            if now >= deadline:
                raise HostError(f"{self.host.path(place.snippet)}: nginx does not serve the "
                                f"challenge at {scheme}://{name}:{place.port}{PATH_PREFIX}{token} "
                                f"({got if got != value else 'not steadily'}; is {place.server} "
                                "the server this name reaches?)")
            time.sleep(0.05)

    def _fetch(self, place: Placement, name: str, token: str) -> str:
        """What the host's nginx answers on loopback for the challenge path (or why not)."""
        request = (f"GET {PATH_PREFIX}{token} HTTP/1.0\r\nHost: {name}\r\n"
                   "User-Agent: certbot-wazo\r\n\r\n").encode("ascii")
        try:
            raw = self.host.access.connect("127.0.0.1", place.port, 5.0)
        except OSError as exc:
            return f"127.0.0.1:{place.port}: {exc.strerror or exc}"
        stream: socket.socket = raw
        try:
            if place.tls:  # the validator does not verify either
                stream = tls.unverified_context().wrap_socket(raw, server_hostname=name)
            stream.sendall(request)
            response = _read_all(stream, 64 * 1024)
        except (OSError, ssl.SSLError) as exc:
            return f"127.0.0.1:{place.port}: {exc}"
        finally:
            stream.close()
            raw.close()
        head, _, body = response.partition(b"\r\n\r\n")
        status = head.split(b"\r\n", 1)[0].decode("latin-1")
        if " 200 " not in f"{status} ":
            return status or "an empty answer"
        return body.decode("latin-1").strip()


def _read_all(stream: socket.socket, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = stream.recv(4096)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)

