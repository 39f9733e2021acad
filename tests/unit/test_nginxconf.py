"""nginx's configuration read as nginx reads it: `ssl on;`, includes, inherited certificates."""
from __future__ import annotations

from pathlib import Path

import pytest

from certbot_wazo import nginxconf
from certbot_wazo.errors import HostError
from certbot_wazo.host import Host
from certbot_wazo.tls import Endpoint

WAZO_CRT = "/usr/share/xivo-certs/server.crt"


def _servers(text: str) -> list[nginxconf.TlsServer]:
    return nginxconf.tls_servers(nginxconf.parse(text, "nginx.conf"))


def test_ssl_on_makes_every_listen_of_the_server_tls() -> None:
    """wazo-nginx's site of 16.13-23.05: `listen 443 default_server;` then `ssl on;`."""
    servers = _servers("http {\n server {\n  listen 80 default_server;\n }\n"
                       " server {\n  listen 443 default_server;\n  listen [::]:443 default_server;\n"
                       f"  ssl on;\n  ssl_certificate {WAZO_CRT};\n }}\n}}\n")
    assert [(s.listen, s.port, s.address, s.certificates) for s in servers] == [
        ("443", 443, "", (WAZO_CRT,)), ("[::]:443", 443, "::", (WAZO_CRT,))]


def test_listen_ssl_parameter_and_ssl_off() -> None:
    servers = _servers("http {\n ssl on;\n server { listen 127.0.0.1:8443 ssl http2; }\n"
                       " server { listen 80; ssl off; }\n}\n")
    assert [(s.address, s.port) for s in servers] == [("127.0.0.1", 8443)]


def test_certificate_inherited_from_http_and_comments_and_quotes() -> None:
    servers = _servers(f"http {{\n  ssl_certificate \"{WAZO_CRT}\"; # the pair\n"
                       "  server { listen 443 ssl; # ssl_certificate /other.crt;\n  }\n}\n")
    assert servers[0].certificates == (WAZO_CRT,)


@pytest.mark.parametrize("text", ["http {\n server {\n", "http { } }", "http { listen 443 "])
def test_syntax_errors_name_the_file(text: str) -> None:
    with pytest.raises(HostError, match="^nginx.conf: unexpected"):
        nginxconf.parse(text, "nginx.conf")


def test_includes_are_followed_under_the_root(legacy_root: Path) -> None:
    site = legacy_root / "etc/nginx/sites-enabled/xivo"
    site.write_text(f"server {{\n listen 8443;\n ssl on;\n ssl_certificate {WAZO_CRT};\n"
                    " include snippets/more.conf;\n}\n")
    (legacy_root / "etc/nginx/snippets").mkdir()
    (legacy_root / "etc/nginx/snippets/more.conf").write_text("listen 127.0.0.2:9443;\n")
    endpoints = Host(legacy_root).endpoints()
    assert Endpoint("127.0.0.1", 8443, "nginx") in endpoints
    assert Endpoint("127.0.0.2", 9443, "nginx") in endpoints


def test_include_loop_is_an_error_not_a_hang(legacy_root: Path) -> None:
    (legacy_root / "etc/nginx/sites-enabled/loop").write_text("include sites-enabled/loop;\n")
    with pytest.raises(HostError, match="include loop"):
        Host(legacy_root).endpoints()


def test_consul_d_https_listener(legacy_root: Path) -> None:
    """consul reads every *.json of /etc/consul.d as well (wazo-consul-config)."""
    consul_d = legacy_root / "etc/consul.d"
    consul_d.mkdir(parents=True)
    (consul_d / "10-wazo.json").write_text('{"ports": {"https": 8501}}')
    (consul_d / "20-tls.json").write_text(f'{{"cert_file": "{WAZO_CRT}"}}')
    assert Endpoint("127.0.0.1", 8501, "consul") in Host(legacy_root).endpoints()


def _site_with(legacy_root: Path, cert: str, names: str = "") -> None:
    site = legacy_root / "etc/nginx/sites-enabled/xivo"
    text = site.read_text().replace(f"ssl_certificate {WAZO_CRT};", f"ssl_certificate {cert};")
    if names:
        text = text.replace("server {", f"server {{\n    server_name {names};", 1)
    site.write_text(text)


def test_nginx_serving_another_file_is_foreign(legacy_root: Path) -> None:
    """certbot --nginx rewrites the site's ssl_certificate (wazo-platform.org's page since 19.01)."""
    _site_with(legacy_root, "/etc/letsencrypt/live/wazo.example.test/fullchain.pem")
    host = Host(legacy_root)
    foreign = host.nginx_foreign("wazo.example.test")
    assert {(s.port, s.certificates[0], leaf) for s, leaf in foreign} == {
        (443, "/etc/letsencrypt/live/wazo.example.test/fullchain.pem", b"")}
    assert all(e.unit != "nginx" for e in host.endpoints())


def test_a_vhost_for_another_name_is_not_foreign(legacy_root: Path) -> None:
    site = legacy_root / "etc/nginx/sites-enabled/other"
    site.write_text("server {\n listen 443 ssl;\n server_name mail.example.test;\n"
                    " ssl_certificate /etc/ssl/mail.pem;\n}\n")
    assert Host(legacy_root).nginx_foreign("wazo.example.test") == []
