"""The corpus deriver reads facts the way upstream states them (without upstream's files)."""
from __future__ import annotations

from tests.releases import derive


def test_code_defaults_fold_constants_and_dict_calls() -> None:
    """wazo-plugind's _DEFAULT_CONFIG is a dict() call using module constants."""
    text = ("_PORT = 9503\n_CERT = '/usr/share/xivo-certs/server.crt'\n"
            "_DEFAULT_CONFIG = dict(rest_api={'https': {'port': _PORT, 'certificate': _CERT,"
            " 'listen': '0.0.0.0'}}, log='/var/log/%s.log' % 'x')\n")
    found = derive.code_defaults(text)
    assert found == {"rest_api": {"https": {"port": 9503, "listen": "0.0.0.0",
                                            "certificate": "/usr/share/xivo-certs/server.crt"}},
                     "log": None}


def test_listener_forms() -> None:
    crt = "/usr/share/xivo-certs/server.crt"
    assert derive.listener({"rest_api": {"port": 9500, "certificate": crt}})["section"] == \
        "rest_api"
    assert derive.listener({"websocket": {"port": 9502, "certificate": crt}})["port"] == 9502
    provd = derive.listener({"rest_api": {"ip": "0.0.0.0", "port": 8666, "ssl": True,
                                          "ssl_certfile": crt}})
    assert provd is not None and (provd["listen"], provd["port"]) == ("0.0.0.0", 8666)
    assert derive.listener({"rest_api": {"port": 9497, "certificate": None}}) is None
    assert derive.listener({"rest_api": {"https": {"port": 1, "certificate": crt,
                                                   "enabled": False}}}) is None


def test_tls_leaves_keep_peers_and_computed_values() -> None:
    data = derive.load("auth:\n  host: localhost\n  port: 9497\n  verify_certificate: /a.crt\n"
                       "debug: true\nrest_api:\n  authorized_subnets: !exec\n    command: x y\n")
    assert dict(derive.tls_leaves(data)) == {
        "auth.host": "localhost", "auth.port": 9497, "auth.verify_certificate": "/a.crt",
        "rest_api.authorized_subnets": {"computed": "!exec x y"}}
