"""Bad inputs through the command line, as an admin meets them: `certbot-wazo deploy` on a started
legacy sandbox answers each with exit 1 (2 for usage) and ONE line on stderr naming the offending
file and the fix, and leaves the host as it was (or restores it); the good pairs of unusual shapes
(no CN, RSA, ECDSA) deploy.

One sandbox is started for the module; before each case its Wazo files are put back from a
pristine copy (its services are restarted only when a case compares what they serve across a
rollback and they serve another pair than the files hold).
"""
from __future__ import annotations

import dataclasses
import functools
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Optional

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import Encoding

from certbot_wazo import cli, options, overrides
from certbot_wazo.host import CUSTOM_FILE, HOSTS_BASE, HOSTS_CUSTOM, LINK_NAME
from certbot_wazo.pair import load_chain
from certbot_wazo.wazoconfig import hosts_address
from tests.pki import CA, DAY, NOW
from tests.sandbox.host import SandboxHost
from tests.sandbox.tree import differences, snapshot

CLI = Path(sys.executable).with_name("certbot-wazo")
STATE = "var/lib/certbot-wazo"
FIX = re.compile(r"\(.+\)\.?$")  # "FILE: what is wrong (what to do)"


# -- fixtures ------------------------------------------------------------------------------------
@pytest.fixture
def host(reset_legacy: SandboxHost) -> SandboxHost:
    return reset_legacy


# -- helpers -------------------------------------------------------------------------------------
def leaf_der(crt: Path) -> bytes:
    return load_chain(crt.read_bytes(), crt)[0].public_bytes(Encoding.DER)


def served(host: SandboxHost, unit: str) -> Optional[bytes]:
    try:
        return host.served_cert(unit)
    except OSError:
        return None


def run_cli(host: SandboxHost, bundle: Path, args: list[str],
            prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SSL_CERT_FILE": str(bundle)}
    env.pop("CERTBOT_WAZO_FAILPOINT", None)
    return subprocess.run([*prefix, str(CLI), "deploy", "--root", str(host.root),
                           "--probe-timeout", "5", *args],
                          env=env, capture_output=True, text=True, timeout=120)


@dataclasses.dataclass
class Ctx:
    """What an arrangement works with: the host, the CA, a scratch directory."""

    host: SandboxHost
    ca: CA
    tmp: Path

    def pair(self, name: str = "", **issue: object) -> tuple[Path, Path]:
        directory = self.tmp / f"pair{len(list(self.tmp.glob('pair*')))}"
        return self.ca.issue(directory, names=[name or self.host.name], **issue)  # type: ignore[arg-type]

    def path(self, wazo_path: str) -> Path:
        return self.host.root / wazo_path.lstrip("/")

    def write(self, wazo_path: str, text: str) -> Path:
        path = self.path(wazo_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path


@dataclasses.dataclass(frozen=True)
class Arranged:
    args: list[str]
    names: Path                     # the file the error line must name
    prefix: tuple[str, ...] = ()    # runs the command under another (unshare ...)


Arrange = Callable[[Ctx], Arranged]


def issued(**kwargs: Any) -> Arrange:
    """A pair issued with these options, given as --cert/--key."""
    def arrange(c: Ctx) -> Arranged:
        crt, key = c.pair(**kwargs)
        return Arranged(_pair_args(crt, key), crt)
    return arrange


def _pair_args(crt: Path, key: Path) -> list[str]:
    return ["--cert", str(crt), "--key", str(key)]


# -- the pair ------------------------------------------------------------------------------------
def key_mismatch(c: Ctx) -> Arranged:
    crt, _ = c.pair()
    _, other = c.pair()
    return Arranged(_pair_args(crt, other), other)


def wrong_name(c: Ctx) -> Arranged:
    crt, key = c.pair("other.example.test")
    return Arranged([*_pair_args(crt, key), "--hostname", c.host.name], crt)


def untrusted_chain(c: Ctx) -> Arranged:
    crt, key = CA("Stranger").issue(c.tmp / "stranger", names=[c.host.name])
    return Arranged(_pair_args(crt, key), crt)


def truncated_fullchain(c: Ctx) -> Arranged:
    crt, key = c.pair()
    data = crt.read_bytes()
    crt.write_bytes(data[: len(data) - 200])  # the intermediate is cut
    return Arranged(_pair_args(crt, key), crt)


def encrypted_key(c: Ctx) -> Arranged:
    crt, key = c.pair(password=b"secret")
    return Arranged(_pair_args(crt, key), key)


def garbage_cert_pem(c: Ctx) -> Arranged:
    crt, key = c.pair()
    crt.write_text("-----BEGIN CERTIFICATE-----\nnot a certificate at all\n-----END CERTIFICATE-----\n")
    return Arranged(_pair_args(crt, key), crt)


def garbage_key_pem(c: Ctx) -> Arranged:
    crt, key = c.pair()
    key.write_text("-----BEGIN PRIVATE KEY-----\nAAAAgarbage\n-----END PRIVATE KEY-----\n")
    return Arranged(_pair_args(crt, key), key)


def der_cert(c: Ctx) -> Arranged:
    crt, key = c.pair()
    crt.write_bytes(leaf_der(crt))
    return Arranged(_pair_args(crt, key), crt)


def empty_cert(c: Ctx) -> Arranged:
    crt, key = c.pair()
    crt.write_bytes(b"")
    return Arranged(_pair_args(crt, key), crt)


def empty_key(c: Ctx) -> Arranged:
    crt, key = c.pair()
    key.write_bytes(b"\n")
    return Arranged(_pair_args(crt, key), key)


def missing_cert(c: Ctx) -> Arranged:
    crt, key = c.pair()
    crt.unlink()
    return Arranged(_pair_args(crt, key), crt)


def cert_and_key_swapped(c: Ctx) -> Arranged:
    crt, key = c.pair()
    return Arranged(_pair_args(key, crt), key)


def lineage_without_privkey(c: Ctx) -> Arranged:
    crt, key = c.pair()
    key.unlink()
    return Arranged(["--lineage", str(crt.parent)], crt.parent / "privkey.pem")


# -- the host ------------------------------------------------------------------------------------
def custom_yml_invalid(c: Ctx) -> Arranged:
    return Arranged(_pair_args(*c.pair()), c.write(CUSTOM_FILE, "auth: [\n  host: x\n"))


def custom_yml_section_scalar(c: Ctx) -> Arranged:
    return Arranged(_pair_args(*c.pair()), c.write(CUSTOM_FILE, "auth: 3\n"))


def custom_yml_list(c: Ctx) -> Arranged:
    return Arranged(_pair_args(*c.pair()), c.write(CUSTOM_FILE, "- auth\n- confd\n"))


def admin_file_at_link(c: Ctx) -> Arranged:
    path = c.write(f"/etc/xivo-confd/conf.d/{LINK_NAME}", "auth:\n  timeout: 30\n")
    return Arranged(_pair_args(*c.pair()), path)


def dangling_link(c: Ctx) -> Arranged:
    link = c.path(f"/etc/wazo-auth/conf.d/{LINK_NAME}")
    link.symlink_to("/etc/xivo/custom/old-certificate.yml")
    return Arranged(_pair_args(*c.pair()), link)


def conf_d_is_a_file(c: Ctx) -> Arranged:
    conf_d = c.path("/etc/xivo-dird/conf.d")
    shutil.rmtree(conf_d)
    conf_d.write_text("")
    return Arranged(_pair_args(*c.pair()), conf_d)


def base_template_missing(c: Ctx) -> Arranged:
    base = c.path(HOSTS_BASE)
    base.unlink()
    return Arranged(_pair_args(*c.pair()), base)


def unknown_placeholder(c: Ctx) -> Arranged:
    path = c.write(HOSTS_CUSTOM, "127.0.0.1\tlocalhost\n#XIVO_NOPE#\tsomething\n")
    return Arranged(_pair_args(*c.pair()), path)


def no_www_data_group(c: Ctx) -> Arranged:
    group = c.path("/etc/group")
    group.write_text("".join(line + "\n" for line in group.read_text().splitlines()
                             if not line.startswith("www-data:")))
    return Arranged(_pair_args(*c.pair()), group)


def common_conf_missing(c: Ctx) -> Arranged:
    conf = c.path("/etc/xivo/common.conf")
    conf.unlink()
    return Arranged(_pair_args(*c.pair()), conf)


def read_only_certs_dir(c: Ctx) -> Arranged:
    """A read-only bind mount of the certificate directory, in the command's own mount namespace."""
    certs = str(c.host.certs_dir)
    script = 'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" "$1" && shift && exec "$@"'
    return Arranged(_pair_args(*c.pair()), c.host.certs_dir / "server.key",
                    prefix=("unshare", "--mount", "--propagation", "private", "sh", "-c", script,
                            "sh", certs))


def server_crt_is_a_directory(c: Ctx) -> Arranged:
    crt = c.host.certs_dir / "server.crt"
    crt.unlink()
    crt.mkdir()
    return Arranged(_pair_args(*c.pair()), crt)


def no_update_config(c: Ctx) -> Arranged:
    c.path("/usr/sbin/xivo-update-config").unlink()
    return Arranged(_pair_args(*c.pair()), c.path("/usr/sbin"))


def no_wazo_service(c: Ctx) -> Arranged:
    c.path("/usr/bin/wazo-service").unlink()
    c.path("/usr/bin/xivo-service").unlink()
    return Arranged(_pair_args(*c.pair()), c.path("/usr/bin"))


def update_config_fails(c: Ctx) -> Arranged:
    c.host.fault("update-config-fails")
    return Arranged(_pair_args(*c.pair()), c.path("/usr/sbin/xivo-update-config"))


def chain_reversed_with_hostname(c: Ctx) -> Arranged:
    crt, key = c.pair(chain="reversed")
    return Arranged([*_pair_args(crt, key), "--hostname", c.host.name], crt)


def restart_fails(c: Ctx) -> Arranged:
    c.host.fault("restart-fails")
    crt, key = c.pair()
    return Arranged(_pair_args(crt, key), crt)


def name_resolves_elsewhere(c: Ctx) -> Arranged:
    c.write(HOSTS_CUSTOM, f"127.0.0.1\tlocalhost\n192.0.2.99\t{c.host.name}\n")
    assert c.host.run("xivo-update-config").returncode == 0
    return Arranged(_pair_args(*c.pair()), c.path("/etc/hosts"))


def not_a_wazo_host(c: Ctx) -> Arranged:
    empty = c.tmp / "empty-root"
    empty.mkdir()
    return Arranged([*_pair_args(*c.pair()), "--root", str(empty)],
                    empty / "usr/share/xivo-certs")


# -- good pairs of unusual shapes ----------------------------------------------------------------
def no_cn_sans_only(c: Ctx) -> Arranged:
    crt, key = c.ca.issue(c.tmp / "nocn", names=["pbx.example.test", c.host.name], cn=None)
    return Arranged([*_pair_args(crt, key), "--hostname", c.host.name], crt)


# -- usage ---------------------------------------------------------------------------------------
def cert_without_key(c: Ctx) -> Arranged:
    crt, _ = c.pair()
    return Arranged(["--cert", str(crt)], Path("--key"))


def lineage_not_a_directory(c: Ctx) -> Arranged:
    crt, _ = c.pair()
    return Arranged(["--lineage", str(crt)], crt)


def lineage_and_cert(c: Ctx) -> Arranged:
    crt, key = c.pair()
    return Arranged(["--lineage", str(crt.parent), *_pair_args(crt, key)], Path("--lineage"))


def bad_probe(c: Ctx) -> Arranged:
    return Arranged([*_pair_args(*c.pair()), "--probe", "localhost:https"], Path("--probe"))


def bad_probe_timeout(c: Ctx) -> Arranged:
    return Arranged([*_pair_args(*c.pair()), "--probe-timeout", "-1"], Path("--probe-timeout"))


def bad_profile(c: Ctx) -> Arranged:
    return Arranged([*_pair_args(*c.pair()), "--profile", "xivo-13"], Path("--profile"))


def hostname_injection(c: Ctx) -> Arranged:
    return Arranged([*_pair_args(*c.pair()), "--hostname", "a;rm -rf /"], Path("--hostname"))


REFUSED, RESTORED, WORKS, USAGE = "refused", "restored", "works", "usage"
CASES = [
    # the pair
    pytest.param(key_mismatch, REFUSED, "does not match the certificate", id="key-mismatch"),
    pytest.param(issued(not_before=NOW - 100 * DAY, not_after=NOW - DAY), REFUSED, "expired on",
                 id="expired"),
    pytest.param(issued(not_before=NOW + DAY, not_after=NOW + 90 * DAY), REFUSED,
                 "not valid before", id="not-yet-valid"),
    pytest.param(wrong_name, REFUSED, "not valid for wazo.example.test", id="wrong-name"),
    pytest.param(untrusted_chain, REFUSED, "root is not trusted", id="untrusted-chain"),
    pytest.param(issued(chain="reversed"), REFUSED, "out of order", id="chain-in-wrong-order"),
    pytest.param(chain_reversed_with_hostname, REFUSED, "out of order",
                 id="chain-in-wrong-order-with-hostname"),
    pytest.param(issued(chain="leaf"), REFUSED, "only the server certificate",
                 id="leaf-only-no-intermediate"),
    pytest.param(issued(chain="self-signed"), REFUSED, "self-signed.*trusted CA", id="self-signed"),
    pytest.param(truncated_fullchain, REFUSED, "truncat|incomplete", id="truncated-fullchain"),
    pytest.param(encrypted_key, REFUSED, "encrypted", id="encrypted-key"),
    pytest.param(garbage_cert_pem, REFUSED, "does not parse", id="garbage-cert-pem"),
    pytest.param(garbage_key_pem, REFUSED, "does not parse", id="garbage-key-pem"),
    pytest.param(der_cert, REFUSED, "no PEM certificate", id="der-instead-of-pem"),
    pytest.param(empty_cert, REFUSED, "is empty", id="empty-cert-file"),
    pytest.param(empty_key, REFUSED, "is empty", id="empty-key-file"),
    pytest.param(missing_cert, REFUSED, "not found", id="missing-cert-file"),
    pytest.param(cert_and_key_swapped, REFUSED, "no PEM certificate", id="cert-and-key-swapped"),
    pytest.param(lineage_without_privkey, REFUSED, "not found", id="lineage-without-privkey"),
    # the host
    pytest.param(custom_yml_invalid, REFUSED, "not valid YAML", id="custom-yml-invalid-yaml"),
    pytest.param(custom_yml_section_scalar, REFUSED, "section 'auth' is not a mapping",
                 id="custom-yml-section-not-mapping"),
    pytest.param(custom_yml_list, REFUSED, "not a YAML mapping", id="custom-yml-is-a-list"),
    pytest.param(admin_file_at_link, REFUSED, "admin's file stands where",
                 id="admin-file-at-010-link"),
    pytest.param(dangling_link, REFUSED, "links to /etc/xivo/custom/old-certificate.yml",
                 id="dangling-010-link"),
    pytest.param(conf_d_is_a_file, REFUSED, "is not a directory", id="conf-d-is-a-file"),
    pytest.param(base_template_missing, REFUSED, "base hosts template is missing",
                 id="base-hosts-template-missing"),
    pytest.param(unknown_placeholder, REFUSED, "unknown placeholder #XIVO_NOPE#",
                 id="unknown-placeholder"),
    pytest.param(no_www_data_group, REFUSED, "no www-data group", id="no-www-data-group"),
    pytest.param(common_conf_missing, REFUSED, "cannot be read", id="common-conf-missing"),
    pytest.param(read_only_certs_dir, RESTORED, "Read-only file system", id="read-only-certs-dir"),
    pytest.param(server_crt_is_a_directory, RESTORED, "is a directory",
                 id="server-crt-is-a-directory"),
    pytest.param(no_update_config, REFUSED, "command xivo-update-config not found",
                 id="no-xivo-update-config"),
    pytest.param(no_wazo_service, REFUSED, "command wazo-service or xivo-service not found",
                 id="no-wazo-service"),
    pytest.param(update_config_fails, RESTORED, "exited with status 1",
                 id="xivo-update-config-fails"),
    pytest.param(restart_fails, RESTORED, "not deployed, the previous certificate was restored",
                 id="restart-fails"),
    pytest.param(name_resolves_elsewhere, RESTORED, "resolves to 192.0.2.99, not 127.0.0.1",
                 id="name-resolves-elsewhere"),
    pytest.param(not_a_wazo_host, REFUSED, "no Wazo certificate directory", id="not-a-wazo-root"),
    # usage
    pytest.param(cert_without_key, USAGE, "both --cert FULLCHAIN and --key KEY",
                 id="cert-without-key"),
    pytest.param(lineage_not_a_directory, USAGE, "not a directory", id="lineage-not-a-directory"),
    pytest.param(lineage_and_cert, USAGE, "not both", id="lineage-and-cert"),
    pytest.param(bad_probe, USAGE, "is not ADDR:PORT", id="probe-not-addr-port"),
    pytest.param(bad_probe_timeout, USAGE, "must be a positive number", id="negative-probe-timeout"),
    pytest.param(bad_profile, USAGE, "invalid choice", id="unknown-profile"),
    pytest.param(hostname_injection, USAGE, "is not a DNS name", id="hostname-shell-injection"),
    # good pairs of unusual shapes
    pytest.param(no_cn_sans_only, WORKS, "", id="no-cn-sans-only"),
    pytest.param(issued(key_type="rsa"), WORKS, "", id="rsa-key"),
    pytest.param(issued(key_type="ec"), WORKS, "", id="ecdsa-key"),
]


def test_restart_that_hangs(host: SandboxHost, ca: CA, tmp_path: Path,
                            monkeypatch: pytest.MonkeyPatch,
                            capsys: pytest.CaptureFixture[str]) -> None:
    """The command line has no option for the command timeout (300 s): run its main() in-process
    with a 2 s timeout. The hanging restart is stopped, the previous pair restored."""
    host.fault("restart-hangs")
    crt, key = ca.issue(tmp_path / "le", names=[host.name])
    before, old = snapshot(host.root), {unit: served(host, unit) for unit in host.endpoints}
    monkeypatch.setattr(options, "Settings", functools.partial(options.Settings,
                                                               command_timeout=2.0))
    code = cli.main(["deploy", "--root", str(host.root), "--probe-timeout", "5",
                     "--cert", str(crt), "--key", str(key)])
    lines = capsys.readouterr().err.splitlines()
    assert code == 1 and len(lines) == 1, lines
    wazo_service = host.root / "usr/bin/wazo-service"
    assert lines[0].startswith(f"{crt}: not deployed, the previous certificate was restored")
    assert f"{wazo_service}: 'restart all' did not finish within 2 s" in lines[0]
    assert differences(before, snapshot(host.root)) == []
    assert {unit: served(host, unit) for unit in host.endpoints} == old
    assert not [p for p in host.pids() if b"wazo-service" in _cmdline(p)]


@pytest.mark.parametrize("arrange, outcome, message", CASES)
def test_bad_input(host: SandboxHost, ca: CA, bundle: Path, tmp_path: Path, arrange: Arrange,
                   outcome: str, message: str) -> None:
    if case_needs_unshare(arrange) and not _can_unshare():
        pytest.skip("no mount namespace here (unshare --mount is not permitted)")
    if outcome == RESTORED:  # what services serve is compared across the rollback
        installed = leaf_der(host.certs_dir / "server.crt")
        if any(served(host, unit) != installed for unit in host.endpoints):
            assert host.run("wazo-service", "restart", "all").returncode == 0
    case = arrange(Ctx(host, ca, tmp_path))
    excluded = ("run", "var/log") if outcome == USAGE else None
    before = snapshot(host.root, excluded) if excluded else snapshot(host.root)
    events, commands = host.events(), host.commands()
    old = {unit: served(host, unit) for unit in host.endpoints} if outcome == RESTORED else {}

    result = run_cli(host, bundle, case.args, case.prefix)

    after = snapshot(host.root, excluded) if excluded else snapshot(host.root)
    lines = result.stderr.splitlines()
    if outcome == WORKS:
        assert (result.returncode, result.stderr) == (0, ""), result.stderr
        assert deployed_problems(host, Path(case.args[1]), Path(case.args[3])) == []
        return
    if outcome == USAGE:
        assert result.returncode == 2, result.stderr
        errors = [line for line in lines if "error:" in line]
        assert len(errors) == 1 and str(case.names) in errors[0], lines
        assert re.search(message, errors[0].replace(str(tmp_path), "")), errors[0]
        assert differences(before, after) == []  # not even certbot-wazo's state directory
        assert host.commands() == commands
        return
    assert result.returncode == 1, (result.returncode, result.stdout, result.stderr)
    assert len(lines) == 1, lines
    line = lines[0]
    assert line.startswith("/") and str(case.names) in line, line
    assert re.search(message, line.replace(str(tmp_path), "").replace(str(host.root), "")), line
    assert FIX.search(line), f"no fix given: {line}"
    assert differences(before, after) == []
    if outcome == RESTORED:
        assert {unit: served(host, unit) for unit in host.endpoints} == old
    if outcome == REFUSED:
        assert host.events() == events, "a service was restarted"
        assert host.commands() == commands, "a command was run"
    assert not os.path.lexists(host.root / STATE / "transaction"), "the undo log is left"


def case_needs_unshare(arrange: Arrange) -> bool:
    return arrange is read_only_certs_dir


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


@functools.lru_cache(maxsize=1)
def _can_unshare() -> bool:
    try:
        return subprocess.run(["unshare", "--mount", "true"], capture_output=True,
                              timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def deployed_problems(host: SandboxHost, crt: Path, key: Path) -> list[str]:
    """What is not "this pair served everywhere, with its key, overrides, links and hosts"."""
    leaf = leaf_der(crt)
    problems = [f"{unit} serves another certificate" for unit in host.endpoints
                if served(host, unit) != leaf]
    key_bytes = (host.certs_dir / "server.key").read_bytes()
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    public = serialization.load_pem_private_key(key_bytes, None).public_key()
    if key_bytes != key.read_bytes() or leaf_der(host.certs_dir / "server.crt") != leaf or \
            public.public_bytes(Encoding.DER, spki) != load_chain(
                crt.read_bytes(), crt)[0].public_key().public_bytes(Encoding.DER, spki):
        problems.append("the installed pair is not the deployed one")
    custom = yaml.safe_load((host.root / CUSTOM_FILE.lstrip("/")).read_text())
    problems += [s for s in overrides.SECTIONS if custom[s]["host"] != host.name]
    problems += [str(d) for d in (host.root / "etc").glob("*-*/conf.d")
                 if not (d / LINK_NAME).is_symlink()]
    if hosts_address((host.root / "etc/hosts").read_text(), host.name) != "127.0.0.1":
        problems.append("etc/hosts")
    if os.path.lexists(host.root / STATE / "transaction"):
        problems.append("undo log left")
    return problems
