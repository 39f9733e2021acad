"""Where HTTP-01 answers go in a Wazo nginx, what the snippet holds, and how it is served."""
from __future__ import annotations

import socket
import threading
from pathlib import Path
from typing import Optional

import pytest

from certbot_wazo import http01, nginxconf
from certbot_wazo.errors import HostError
from certbot_wazo.host import Host

# The shapes of Wazo's sites (tests/data/releases): port 80 including its own directory
# (15.12: locations/http, 16.16-21.16: http-enabled), or redirecting to 443 (22.16 on).
LEGACY = ("http {\n server {\n  listen 80 default_server;\n  server_name _;\n"
          "  include /etc/nginx/locations/http/*;\n }\n server {\n  listen 443 default_server;\n"
          "  ssl on;\n  include /etc/nginx/locations/https/*;\n }\n}\n")
REDIRECT = ("http {\n server {\n  listen 80 default_server;\n  listen [::]:80 default_server;\n"
            "  return 301 https://$host$request_uri;\n }\n server {\n"
            "  listen 443 default_server ssl;\n  include /etc/nginx/locations/https-enabled/*;\n"
            " }\n}\n")


def _place(text: str, port: int = 80, name: str = "pbx.example.test") -> http01.Placement:
    return http01.placement(nginxconf.parse(text, "/etc/nginx/nginx.conf"), port, name)


def test_port_80_includes_its_own_directory() -> None:
    place = _place(LEGACY)
    assert (place.directory, place.port, place.tls) == ("/etc/nginx/locations/http", 80, False)
    assert place.snippet == "/etc/nginx/locations/http/certbot-wazo-acme-challenge"


def test_a_redirect_to_https_puts_the_answers_in_the_443_server() -> None:
    place = _place(REDIRECT)
    assert (place.directory, place.port, place.tls) == ("/etc/nginx/locations/https-enabled",
                                                        443, True)


def test_a_named_server_wins_over_the_default_one() -> None:
    text = ("http {\n server { listen 80; return 302 https://$host$request_uri; }\n"
            " server { listen 443 ssl default_server; server_name other.test; include /a/*; }\n"
            " server { listen 443 ssl; server_name pbx.example.test; include /b/*; }\n}\n")
    assert (_place(text).directory, _place(text).port) == ("/b", 443)


def test_unix_sockets_are_no_port() -> None:
    text = "http { server { listen unix:/run/x.sock; include /u/*; } server { listen 80; include /p/*; } }"
    assert _place(text).directory == "/p"


def test_deep_nesting_is_refused_not_a_crash() -> None:
    with pytest.raises(HostError, match="blocks nest deeper than"):
        nginxconf.parse("a {" * 5000 + "}" * 5000, "/etc/nginx/nginx.conf")


@pytest.mark.parametrize(("text", "message"), [
    ("http { server { listen 443 ssl; } }", "no nginx server listens on port 80"),
    ("http { server { listen 80; return 301 http://elsewhere/; } }", "HTTPS only"),
    ("http { server { listen 80; return 301 https://$host$request_uri; } }",
     "redirects to port 443 where no nginx server listens"),
    ("http { server { listen 80; return 301 https://$host:8443$request_uri; } "
     "server { listen 8443 ssl; include /a/*; } }", "follows redirects to ports 80 and 443 only"),
    ("http { server { listen 80; include /etc/nginx/one.conf; } }",
     r"includes no location directory \(add `include /etc/nginx/locations/http-enabled/\*;`"),
    # 22.09+: port 80 redirects, the validation is answered by the 443 server, whose directory
    # is https-enabled (wazo-platform/wazo-nginx, tag wazo-22.09, sites-available/wazo).
    ("http { server { listen 80; return 301 https://$host$request_uri; } "
     "server { listen 443 ssl default_server; include /etc/nginx/one.conf; } }",
     r"port 443 includes no location directory \(add `include /etc/nginx/locations/https-enabled/\*;`"),
])
def test_where_nothing_can_answer_it_says_why(text: str, message: str) -> None:
    with pytest.raises(HostError, match=message):
        _place(text)


def test_another_http01_port() -> None:
    text = "http { server { listen 127.0.0.1:5002; include /l/*; } server { listen 80; include /m/*; } }"
    assert _place(text, port=5002).directory == "/l"


def test_snippet_answers_each_token_and_refuses_anything_else() -> None:
    text = http01.snippet({"tok-1": "tok-1.thumb_print"}).decode()
    assert "location = /.well-known/acme-challenge/tok-1 {" in text
    assert 'return 200 "tok-1.thumb_print";' in text
    for token, value in (("a;b", "a.b"), ("a", 'a.b";}'), ("a b", "x.y"), ("", "x.y")):
        with pytest.raises(ValueError):
            http01.snippet({token: value})


class _Server:
    """An HTTP server on loopback answering every request with body (after `misses` 404s)."""

    def __init__(self, body: bytes, misses: int = 0) -> None:
        self.body, self.misses = body, misses
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.recv(4096)
                if self.misses > 0:
                    self.misses -= 1
                    conn.sendall(b"HTTP/1.1 404 Not Found\r\n\r\n")
                else:
                    conn.sendall(b"HTTP/1.1 200 OK\r\n\r\n" + self.body)

    def close(self) -> None:
        self.sock.close()


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 0.3
        return self.now


def test_a_killed_runs_snippet_is_removed_where_its_record_says(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch
                                                                  ) -> None:
    """The record is written before the snippet: the next run finds it even in a server chosen
    by name, and reloads nginx (the killed run may have); a record naming anything else is
    ignored."""
    (tmp_path / "etc/nginx/locations/named").mkdir(parents=True)
    (tmp_path / "etc/nginx/nginx.conf").write_text("http { server { listen 80; include /x/*; } }")
    left = tmp_path / "etc/nginx/locations/named" / http01.SNIPPET
    left.write_text("location = /x { return 200; }")
    state = tmp_path / "var/lib/certbot-wazo"
    state.mkdir(parents=True)
    (state / http01.RECORD).write_text(f"/etc/nginx/locations/named/{http01.SNIPPET}\n")
    reloads: list[Path] = []
    responder = http01.Responder(Host(tmp_path))
    monkeypatch.setattr(responder, "_test_and_reload", reloads.append)
    responder.withdraw()
    assert not left.exists() and reloads == [left]
    assert not (state / http01.RECORD).exists()
    victim = tmp_path / "etc/passwd"
    victim.write_text("root")
    (state / http01.RECORD).write_text("/etc/passwd\n")
    responder.withdraw()
    assert victim.exists()


def _responder(tmp_path: Path, port: int) -> http01.Responder:
    return http01.Responder(Host(tmp_path), port=port, clock=_Clock(), serve_timeout=5.0)


def _wait(responder: http01.Responder, port: int, value: str) -> Optional[str]:
    place = http01.Placement("/l", port, False, "site:1")
    try:
        responder._wait_served(place, "pbx.example.test", "tok", value)
    except HostError as exc:
        return str(exc)
    return None


def test_answers_must_be_served_steadily(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 404 from a worker of the old configuration restarts the count; a steady answer ends
    the wait; a wrong one fails with what nginx answered."""
    monkeypatch.setattr(http01.time, "sleep", lambda _: None)
    good = _Server(b"tok.print", misses=2)
    try:
        assert _wait(_responder(tmp_path, good.port), good.port, "tok.print") is None
        assert good.misses == 0
    finally:
        good.close()
    bad = _Server(b"something else")
    try:
        error = _wait(_responder(tmp_path, bad.port), bad.port, "tok.print")
        assert error is not None and "nginx does not serve the challenge" in error
        assert f"http://pbx.example.test:{bad.port}/.well-known/acme-challenge/tok" in error
    finally:
        bad.close()
