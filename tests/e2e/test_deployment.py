"""The deployment transaction on started sandbox hosts: success, idempotency, and every failure branch."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives.serialization import Encoding

from certbot_wazo.deployment import Deployment, Settings
from certbot_wazo.errors import CommandError, LockBusyError, PairError, ProbeError, RolledBackError, WazoError
from certbot_wazo.pair import load_chain
from certbot_wazo.tls import Endpoint
from tests.pki import CA
from tests.sandbox.host import SandboxHost
from tests.sandbox.tree import differences, snapshot


def deploy(host: SandboxHost, crt: Path, key: Path, **settings: object) -> bool:
    options: dict[str, object] = {"probe_timeout": 10.0, "command_timeout": 30.0, **settings}
    return Deployment(Settings(root=host.root, **options)).run(crt, key)  # type: ignore[arg-type]


def restarts(host: SandboxHost) -> list[str]:
    return [e for e in host.events() if e.startswith(("stop ", "restart ", "reload "))]


def stale_endpoints(host: SandboxHost, crt: Path) -> list[str]:
    """The units that do not serve crt's leaf ([] when every endpoint serves it)."""
    leaf = load_chain(crt.read_bytes(), crt)[0].public_bytes(Encoding.DER)
    return [unit for unit in host.endpoints if host.served_cert(unit) != leaf]


def test_legacy_deployment(legacy_host: SandboxHost, ca: CA, trust: Path, tmp_path: Path) -> None:
    host = legacy_host
    crt, key = ca.issue(tmp_path / "le", names=[host.name])
    starts = host.asterisk_starts()
    assert deploy(host, crt, key) is True

    assert stale_endpoints(host, crt) == []
    for name, mode in (("server.crt", 0o640), ("server.key", 0o640)):
        st = (host.certs_dir / name).lstat()
        assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == mode
        assert (st.st_uid, st.st_gid) == (0, 33)
    assert (host.certs_dir / "server.key").read_bytes() == key.read_bytes()
    custom = yaml.safe_load((host.root / "etc/xivo/custom/custom-certificate.yml").read_text())
    assert custom["auth"] == {"host": host.name, "verify_certificate": True}
    assert custom["consul"] == {"host": host.name, "verify": True}
    conf_ds = [d for d in (host.root / "etc").glob("*-*/conf.d")]
    assert conf_ds and all((d / "010-custom-certificate.yml").resolve() ==
                           host.root / "etc/xivo/custom/custom-certificate.yml" for d in conf_ds)
    hosts = (host.root / "etc/hosts").read_text()
    assert f"127.0.0.1\t{host.name}" in hosts and "127.0.1.1" not in hosts
    # One documented restart: every service, asterisk included, stopped once.
    assert restarts(host).count("stop asterisk") == 1
    assert host.asterisk_starts() == starts + 1
    # What the procedure is for: daemons now reach each other by name, verified by the system store.
    for unit in host.endpoints:
        if unit not in ("nginx", "asterisk"):
            assert host.peer_errors(unit, trust) == []


def test_same_pair_again_changes_nothing(legacy_host: SandboxHost, ca: CA, trust: Path,
                                         tmp_path: Path) -> None:
    crt, key = ca.issue(tmp_path / "le", names=[legacy_host.name])
    assert deploy(legacy_host, crt, key)
    before, events = snapshot(legacy_host.root), legacy_host.events()
    assert deploy(legacy_host, crt, key) is False
    assert differences(before, snapshot(legacy_host.root)) == []
    assert legacy_host.events() == events


def test_name_other_than_fqdn_is_mapped(legacy_host: SandboxHost, ca: CA, trust: Path,
                                        tmp_path: Path) -> None:
    """A certificate for one name that is not the host's FQDN: that name is the PBX's, and it
    gets its own 127.0.0.1 line (with the FQDN among the names, the FQDN would be chosen)."""
    crt, key = ca.issue(tmp_path / "le", names=["pbx.example.org"], cn=None)
    assert deploy(legacy_host, crt, key)
    hosts = (legacy_host.root / "etc/hosts").read_text()
    assert "127.0.0.1\tpbx.example.org" in hosts
    assert stale_endpoints(legacy_host, crt) == []


def test_modern_deployment(modern_host: SandboxHost, ca: CA, trust: Path, tmp_path: Path) -> None:
    host = modern_host
    crt, key = ca.issue(tmp_path / "le", names=[host.name], key_type="rsa")
    before = snapshot(host.root)
    starts = host.asterisk_starts()
    assert deploy(host, crt, key)
    assert stale_endpoints(host, crt) == []
    assert restarts(host) == ["reload nginx", "restart wazo-phoned"]
    assert host.asterisk_starts() == starts
    changed = sorted(differences(before, snapshot(host.root)))
    assert changed == ["changed usr/share/wazo-certs/server.crt",
                       "changed usr/share/wazo-certs/server.key"]
    assert stat.S_IMODE((host.certs_dir / "server.crt").stat().st_mode) == 0o644


def test_bad_pair_changes_nothing(legacy_host: SandboxHost, ca: CA, trust: Path,
                                  tmp_path: Path) -> None:
    crt, _ = ca.issue(tmp_path / "a", names=[legacy_host.name])
    _, other = ca.issue(tmp_path / "b", names=[legacy_host.name])
    before, events = snapshot(legacy_host.root, excluded=("run", "var/log")), legacy_host.events()
    with pytest.raises(PairError, match="does not match"):
        deploy(legacy_host, crt, other)
    assert differences(before, snapshot(legacy_host.root, excluded=("run", "var/log"))) == []
    assert legacy_host.events() == events


@pytest.mark.parametrize("fault, error, message", [
    ("update-config-fails", CommandError, "xivo-update-config"),
    ("restart-fails", RolledBackError, "not deployed, the previous certificate was restored"),
    ("xivo-confd.stale", RolledBackError, r"xivo-confd\) serves another certificate"),
])
def test_failures_restore_the_host(legacy_host: SandboxHost, ca: CA, trust: Path, tmp_path: Path,
                                   fault: str, error: type[WazoError], message: str) -> None:
    host = legacy_host
    old = {unit: host.served_cert(unit) for unit in host.endpoints}
    before = snapshot(host.root)
    host.fault(fault)
    crt, key = ca.issue(tmp_path / "le", names=[host.name])
    with pytest.raises(error, match=message) as err:
        deploy(host, crt, key, probe_timeout=3.0)
    assert "\n" not in str(err.value)
    assert differences(before, snapshot(host.root)) == []
    assert {unit: host.served_cert(unit) for unit in host.endpoints} == old
    assert not (host.root / "var/lib/certbot-wazo/transaction").exists()


def test_update_config_failure_restarts_nothing(legacy_host: SandboxHost, ca: CA, trust: Path,
                                                tmp_path: Path) -> None:
    legacy_host.fault("update-config-fails")
    events = legacy_host.events()
    with pytest.raises(CommandError):
        deploy(legacy_host, *ca.issue(tmp_path / "le", names=[legacy_host.name]))
    assert legacy_host.events() == events


def test_name_resolving_elsewhere_fails_before_restart(legacy_host: SandboxHost, ca: CA,
                                                       trust: Path, tmp_path: Path) -> None:
    host = legacy_host
    custom = host.root / "etc/xivo/custom-templates/system/etc/hosts"
    custom.parent.mkdir(parents=True)
    custom.write_text(f"127.0.0.1\tlocalhost\n192.0.2.99\t{host.name}\n")
    assert host.run("xivo-update-config").returncode == 0
    before, events = snapshot(host.root), host.events()
    with pytest.raises(ProbeError, match=f"{host.name} resolves to 192.0.2.99, not 127.0.0.1"):
        deploy(host, *ca.issue(tmp_path / "le", names=[host.name]))
    assert differences(before, snapshot(host.root)) == []
    assert host.events() == events


def test_service_that_does_not_come_back(legacy_host: SandboxHost, ca: CA, trust: Path,
                                         tmp_path: Path) -> None:
    host = legacy_host
    before = snapshot(host.root)
    host.fault("xivo-confd.nostart")
    with pytest.raises(CommandError, match="while restoring the previous certificate"):
        deploy(host, *ca.issue(tmp_path / "le", names=[host.name]), probe_timeout=3.0)
    # The files are back; the undo log stays so the next run finishes the restore.
    assert differences(before, snapshot(host.root)) == []
    assert (host.root / "var/lib/certbot-wazo/transaction/manifest.json").exists()
    host.fault("xivo-confd.nostart", on=False)
    deployment = Deployment(Settings(root=host.root, probe_timeout=10.0))
    assert deployment.recover() is True
    deployment.release()
    assert not (host.root / "var/lib/certbot-wazo/transaction").exists()
    assert all(host.served_cert(u) for u in host.endpoints)


def test_hanging_restart_is_stopped(legacy_host: SandboxHost, ca: CA, trust: Path,
                                    tmp_path: Path) -> None:
    legacy_host.fault("restart-hangs")
    with pytest.raises(WazoError, match="did not finish within 2 s"):
        deploy(legacy_host, *ca.issue(tmp_path / "le", names=[legacy_host.name]),
               command_timeout=2.0)
    assert not [p for p in legacy_host.pids() if b"sleep" in _cmdline(p)]


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def test_original_pair_is_kept(legacy_host: SandboxHost, ca: CA, trust: Path,
                               tmp_path: Path) -> None:
    original = (legacy_host.certs_dir / "server.key").read_bytes()
    deploy(legacy_host, *ca.issue(tmp_path / "le", names=[legacy_host.name]))
    blobs = list((legacy_host.root / "var/lib/certbot-wazo/original").glob("*.blob"))
    assert original in [b.read_bytes() for b in blobs]
    assert all(stat.S_IMODE(b.stat().st_mode) == 0o600 for b in blobs)
    assert stat.S_IMODE(os.stat(legacy_host.root / "var/lib/certbot-wazo").st_mode) == 0o700


def test_certificate_only_renewal_is_gentle(legacy_host: SandboxHost, ca: CA, trust: Path,
                                            tmp_path: Path) -> None:
    host = legacy_host
    assert deploy(host, *ca.issue(tmp_path / "first", names=[host.name]))
    mark, starts = len(host.events()), host.asterisk_starts()
    crt, key = ca.issue(tmp_path / "renewed", names=[host.name])
    assert deploy(host, crt, key)
    assert stale_endpoints(host, crt) == []
    events = host.events()[mark:]
    assert events[0] == "reload nginx"
    assert host.asterisk_starts() == starts and "stop asterisk" not in events
    assert not [e for e in events if e.split()[1] in ("postgresql", "rabbitmq-server")]
    daemons = {u for u in host.endpoints if u not in ("nginx", "asterisk")}
    assert {e.split()[1] for e in events if e.startswith("restart ")} == daemons
    assert ["-rx", "module reload http"] in [c[1:] for c in host.commands()]


def test_gentle_path_falls_back_to_the_documented_restart(legacy_host: SandboxHost, ca: CA,
                                                          trust: Path, tmp_path: Path) -> None:
    host = legacy_host
    assert deploy(host, *ca.issue(tmp_path / "first", names=[host.name]))
    host.fault("nginx.noreload")
    mark = len(host.events())
    crt, key = ca.issue(tmp_path / "renewed", names=[host.name])
    assert deploy(host, crt, key, probe_timeout=3.0)
    assert stale_endpoints(host, crt) == []
    assert host.events()[mark:].count("stop asterisk") == 1


def test_explicit_probes_keep_the_gentle_path(legacy_host: SandboxHost, ca: CA, trust: Path,
                                              tmp_path: Path) -> None:
    """--wazo-probe (stored in the renewal conf) must not turn every renewal into restart all."""
    host = legacy_host
    probes = tuple(Endpoint.parse(address) for address in host.endpoints.values())
    assert deploy(host, *ca.issue(tmp_path / "first", names=[host.name]), probes=probes)
    starts = host.asterisk_starts()
    crt, key = ca.issue(tmp_path / "renewed", names=[host.name])
    assert deploy(host, crt, key, probes=probes)
    assert stale_endpoints(host, crt) == []
    assert host.asterisk_starts() == starts


def test_recovery_never_undoes_a_deployment_in_progress(legacy_host: SandboxHost, ca: CA,
                                                        trust: Path, tmp_path: Path) -> None:
    """What certbot's prepare() does while another deployment holds the lock."""
    host = legacy_host
    crt, key = ca.issue(tmp_path / "le", names=[host.name])
    first = Deployment(Settings(root=host.root, probe_timeout=10.0))
    assert first.install(crt, key)
    other = Deployment(Settings(root=host.root))
    with pytest.raises(LockBusyError):
        other.recover_if_idle(wait=0.0)
    first.activate()
    assert stale_endpoints(host, crt) == []
