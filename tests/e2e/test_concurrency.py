"""Concurrency: deployments on one host are serialized by the lock (flock on
ROOT/var/lib/certbot-wazo/lock); the second waits (or gives up with one clear line), never
interleaves, and the host ends with one pair fully deployed."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from certbot_wazo.deployment import Deployment, Settings
from certbot_wazo.errors import LockBusyError
from certbot_wazo.journal import Journal
from certbot_wazo.pair import load_chain
from tests.pki import CA
from tests.sandbox.host import SandboxHost, build_host
from tests.sandbox.stubs import GROUPS
from tests.sandbox.tree import differences, snapshot

CLI = Path(sys.executable).with_name("certbot-wazo")
STATE = "var/lib/certbot-wazo"




def leaf_der(crt: Path) -> bytes:
    return load_chain(crt.read_bytes(), crt)[0].public_bytes(Encoding.DER)


def restart_blocks(events: list[str], units: list[str]) -> list[list[str]]:
    """Split service events into the two deployments' restarts; raises when they interleave.

    The first deployment (overrides, links, hosts: the whole configuration) restarts the
    documented way, `wazo-service restart all`: every unit stopped in reverse order, then every
    unit started in order, contiguous. The second changes only the pair: the same full sequence,
    or the gentle path (nginx reloaded, each TLS daemon restarted once), contiguous after it."""
    full = [f"stop {u}" for u in reversed(units)] + [f"start {u}" for u in units]
    if events[:len(full)] != full:
        raise AssertionError(f"the first restart is interleaved or incomplete: {events}")
    rest = events[len(full):]
    if rest == full:
        return [full, rest]
    gentle = [e for e in rest if e == "reload nginx" or e.startswith("restart ")]
    if not rest or rest != gentle or len(set(rest)) != len(rest):
        raise AssertionError(f"the second restart is interleaved or incomplete: {rest}")
    return [full, rest]


def test_two_deployments_at_once_are_serialized(legacy_host: SandboxHost, ca: CA, trust: Path,
                                                tmp_path: Path) -> None:
    host = legacy_host
    pairs = [ca.issue(tmp_path / name, names=[host.name], key_type=kind)
             for name, kind in (("a", "ec"), ("b", "rsa"))]
    events = len(host.events())
    env = {**os.environ, "SSL_CERT_FILE": str(trust)}
    env.pop("CERTBOT_WAZO_FAILPOINT", None)
    procs = [subprocess.Popen([str(CLI), "deploy", "--root", str(host.root), "--cert", str(crt),
                               "--key", str(key)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for crt, key in pairs]
    outputs = [proc.communicate(timeout=300) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outputs
    assert [err for _, err in outputs] == ["", ""]

    # Exactly one waited for the other, and said so, naming the lock file.
    lock = host.root / STATE / "lock"
    waited = [i for i, (out, _) in enumerate(outputs)
              if f"{lock}: another certbot-wazo deployment is running" in out]
    assert len(waited) == 1, outputs
    last = waited[0]
    first = 1 - last
    waiting = next(line for line in outputs[last][0].splitlines() if str(lock) in line)
    assert waiting.endswith("; waiting up to 600 s")
    # The holder's pid is shown when it had been written already (it is written after flock).
    assert "(pid" not in waiting or f"(pid {procs[first].pid})" in waiting

    # The last one's pair, fully: files, every endpoint, no undo log; the previous state saved
    # is the first one's pair, fully (its transaction never mixed with the other's).
    crt, key = pairs[last]
    assert (host.certs_dir / "server.key").read_bytes() == key.read_bytes()
    assert leaf_der(host.certs_dir / "server.crt") == leaf_der(crt)
    assert all(host.served_cert(unit) == leaf_der(crt) for unit in host.endpoints)
    assert not os.path.lexists(host.root / STATE / "transaction")
    previous, _ = Journal(host.root / STATE, lambda p: host.root / p.lstrip("/")).previous.read()
    saved = dict(previous)
    assert saved["/usr/share/xivo-certs/server.key"].data == pairs[first][1].read_bytes()
    assert leaf_der(host.certs_dir / "server.crt") != leaf_der(pairs[first][0])

    # Two complete restarts, one after the other (services.log).
    units = [u for u in GROUPS["legacy"]["all"] if u in host.units]
    assert len(restart_blocks(host.events()[events:], units)) == 2


def test_lock_busy_is_one_clear_line(tmp_path: Path, ca: CA, trust: Path) -> None:
    host = build_host(tmp_path / "root", "legacy")  # not started: nothing gets that far
    crt, key = ca.issue(tmp_path / "le", names=[host.name])
    before = snapshot(host.root)
    holder = Journal(host.root / STATE, lambda p: host.root / p.lstrip("/"))
    messages: list[str] = []
    with holder.lock(1.0, messages.append):
        start = time.monotonic()
        with pytest.raises(LockBusyError) as err:
            Deployment(Settings(root=host.root, lock_timeout=0.5),
                       notify=messages.append).run(crt, key)
        waited = time.monotonic() - start
    lock = host.root / STATE / "lock"
    assert str(err.value) == (f"{lock}: another certbot-wazo deployment is still running "
                              f"(pid {os.getpid()}) (wait for it to finish, then run again)")
    assert messages == [f"{lock}: another certbot-wazo deployment is running (pid {os.getpid()}); "
                        "waiting up to 0.5 s"]
    assert 0.5 <= waited < 5
    assert differences(before, snapshot(host.root)) == []


def test_second_deployment_waits_for_the_lock(tmp_path: Path, ca: CA, trust: Path) -> None:
    """In-process: while the lock is held the deployment waits; once released it proceeds."""
    host = build_host(tmp_path / "root", "legacy")
    crt, key = ca.issue(tmp_path / "le", names=[host.name])
    holder = Journal(host.root / STATE, lambda p: host.root / p.lstrip("/"))
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with holder.lock(1.0, lambda _: None):
            held.set()
            release.wait(30)

    thread = threading.Thread(target=hold)
    thread.start()
    assert held.wait(10)
    timer = threading.Timer(0.6, release.set)
    timer.start()
    deployment = Deployment(Settings(root=host.root, lock_timeout=30.0))
    start = time.monotonic()
    try:
        assert deployment.install(crt, key) is True
        waited = time.monotonic() - start
    finally:
        deployment.abort()
        release.set()
        thread.join(10)
        timer.cancel()
    assert waited >= 0.5
    assert not os.path.lexists(host.root / STATE / "transaction")


def test_restart_blocks_sees_interleaving() -> None:
    """The check above is not blind: two restarts interleaved are reported."""
    units = ["nginx", "wazo-auth", "asterisk"]
    full = [f"stop {u}" for u in reversed(units)] + [f"start {u}" for u in units]
    assert restart_blocks(full + full, units) == [full, full]
    assert restart_blocks([*full, "reload nginx", "restart wazo-auth"], units)[1] == \
        ["reload nginx", "restart wazo-auth"]
    for events in (full[:2] + full + full[2:], [*full[:-1], "stop asterisk", *full, *full[-1:]],
                   [*full, "restart wazo-auth", "restart wazo-auth"], full + full[:3]):
        with pytest.raises(AssertionError):
            restart_blocks(events, units)
