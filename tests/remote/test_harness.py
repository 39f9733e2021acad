"""The remote targets themselves (tests/sandbox/remote.py), as the product's remote mode will meet
them: checked host keys, a bare shell, endpoints on the target's own loopback, restarts over SSH,
dropped connections, and nothing left behind."""
from __future__ import annotations

import functools
import hashlib
import os
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest

from tests.sandbox.host import SandboxHost, build_host
from tests.sandbox.procs import pid_alive, port_open, processes_under, wait_until
from tests.sandbox.release import build_release
from tests.sandbox.remote import Target, Targets, coreutils_programs

MODERN, LEGACY = "25.17", "18.03"  # releases with nginx on 443 (and, 18.03, a dozen daemons)


@pytest.fixture(scope="module")
def alpha(targets: Targets) -> Target:
    return targets.add("alpha", functools.partial(build_release, release=MODERN))


@pytest.fixture(scope="module")
def beta(targets: Targets) -> Target:
    return targets.add("beta", functools.partial(build_release, release=LEGACY))


def _served_der(stream: socket.socket, name: str) -> bytes:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    stream.settimeout(10)
    with context.wrap_socket(stream, server_hostname=name) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der
    return der


def _own_der(host: SandboxHost) -> bytes:
    return ssl.PEM_cert_to_DER_cert((host.certs_dir / "server.crt").read_text())


def _cmdlines(pids: list[int]) -> list[str]:
    lines = []
    for pid in pids:
        try:
            lines.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip())
        except OSError:
            continue
    return lines


def _in_netns(netns: tuple[int, int]) -> list[int]:
    """Live processes of the machine in that network namespace."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                info = os.stat(entry / "ns/net")
            except OSError:
                continue
            if (info.st_dev, info.st_ino) == netns and pid_alive(int(entry.name)):
                found.append(int(entry.name))
    return found


def _links() -> list[str]:
    with open("/proc/self/net/dev", encoding="ascii") as stream:
        return [line.split(":", 1)[0].strip() for line in stream.readlines()[2:]]


def test_ssh_checks_the_host_key(targets: Targets, alpha: Target, beta: Target, tmp_path: Path) -> None:
    result = targets.ssh(alpha, "echo", "ok")
    assert (result.returncode, result.stdout) == (0, "ok\n"), result.stderr
    config = targets.ssh_config.read_text()
    assert config.count("StrictHostKeyChecking yes") == 2 and "StrictHostKeyChecking no" not in config
    ran = alpha.commands()

    beta_key = " ".join(beta.host_key.with_suffix(".pub").read_text().split()[:2])
    wrong = tmp_path / "wrong_known_hosts"
    wrong.write_text(f"alpha,{alpha.address} {beta_key}\n")
    changed = targets.ssh(alpha, "echo", "ok", options=["-o", f"UserKnownHostsFile={wrong}"])
    assert changed.returncode == 255 and "Host key verification failed" in changed.stderr
    assert "REMOTE HOST IDENTIFICATION HAS CHANGED" in changed.stderr

    unknown = tmp_path / "empty_known_hosts"
    unknown.write_text("")
    refused = targets.ssh(alpha, "echo", "ok", options=["-o", f"UserKnownHostsFile={unknown}"])
    assert refused.returncode == 255 and "Host key verification failed" in refused.stderr
    assert alpha.commands() == ran, "no command ran without a verified host key"


def test_a_session_has_only_sh_and_coreutils(targets: Targets, alpha: Target) -> None:
    for program in ("python3", "tar"):
        result = targets.ssh(alpha, "command -v", program)
        assert (result.returncode, result.stdout) != (0, ""), (program, result.stdout)
        assert result.returncode != 0 and result.stdout == "", (program, result.stdout)
    absent = targets.ssh(alpha, "for p in python3 python perl tar find xargs flock grep sed awk gzip "
                                "openssl bash; do command -v $p; done; true")
    assert (absent.returncode, absent.stdout) == (0, ""), absent.stdout

    for program in ("stat", "base64", "sha256sum", "mv"):
        present = targets.ssh(alpha, "command -v", program)
        assert (present.returncode, present.stdout) == (0, f"{targets.bin_dir / program}\n"), program
    workflow = targets.ssh(alpha, 'd=$(mktemp -d) && printf x > "$d/a" && mv "$d/a" "$d/b" && '
                                  'stat -c %s "$d/b" && base64 < "$d/b" && sha256sum < "$d/b" && rm -r "$d"')
    assert workflow.returncode == 0, workflow.stderr
    assert workflow.stdout.split() == ["1", "eA==", hashlib.sha256(b"x").hexdigest(), "-"]

    listing = targets.ssh(alpha, 'echo "$PATH"; ls "$PATH"')
    path, *names = listing.stdout.split("\n")[:-1]
    assert path == str(targets.bin_dir)
    assert sorted(names) == sorted({"sh", *(os.path.basename(p) for p in coreutils_programs())})
    assert all((targets.bin_dir / name).is_symlink() for name in names)


def test_interactive_sessions_are_refused(targets: Targets, alpha: Target) -> None:
    result = targets.ssh(alpha)
    assert result.returncode == 1 and "interactive sessions are refused" in result.stderr


def test_the_log_holds_each_command_line_exactly(targets: Targets, alpha: Target) -> None:
    forged = "echo one\necho 'two' \"$HOME\"  # ZWNobyBmb3JnZWQ=\n"
    result = targets.ssh(alpha, forged)
    assert result.stdout == "one\ntwo /root\n", result.stderr
    assert alpha.commands()[-1] == forged

    long_lines = [f": {index} {'x' * 90_000}" for index in range(8)]  # concurrent sessions
    sessions = [subprocess.Popen(targets.ssh_argv(alpha, line), stdin=subprocess.DEVNULL)
                for line in long_lines]
    assert [session.wait(30) for session in sessions] == [0] * len(sessions)
    assert sorted(alpha.commands()[-len(long_lines):]) == long_lines, "one whole line per session"

    piped = targets.ssh(alpha, "sha256sum", input="data on stdin")
    assert piped.stdout.split()[0] == hashlib.sha256(b"data on stdin").hexdigest(), \
        "the session's standard input reaches the command whole"


def test_each_target_serves_its_own_443_only_through_ssh(targets: Targets, alpha: Target,
                                                        beta: Target) -> None:
    assert not port_open("127.0.0.1:443"), "the controller has no 443 of its own"
    served = {}
    for target in (alpha, beta):
        assert target.port_open(443)
        served[target.name] = _served_der(targets.tunnel(target, 443), target.host.name)
        assert served[target.name] == _own_der(target.host), target.name
    assert served["alpha"] != served["beta"]
    assert alpha.host.endpoints["nginx"] == "127.0.0.1:443"
    # wazo-phoned listens on 0.0.0.0:9499 (upstream's, and the stand-in's): as on a real host, it
    # is reachable at the target's address too, but the target's loopback is not the controller's.
    assert not port_open("127.0.0.1:9499") and port_open(f"{alpha.address}:9499")
    assert _served_der(targets.tunnel(alpha, 9499), alpha.host.name) == _own_der(alpha.host)

    closed = targets.tunnel(alpha, 1)
    closed.settimeout(10)
    assert closed.recv(1) == b"", "a closed port of the target: the tunnel just ends"
    closed.close()


def test_wazo_service_restart_over_ssh(targets: Targets, alpha: Target) -> None:
    nginx_pid = (alpha.root / "run/nginx.pid").read_text()
    events = len(alpha.host.events())
    result = targets.ssh(alpha, f"{alpha.root}/usr/bin/wazo-service restart all", timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Wazo fully booted" in result.stdout
    done = alpha.host.events()[events:]
    assert "stop nginx" in done and "start nginx" in done, done
    assert (alpha.root / "run/nginx.pid").read_text() != nginx_pid
    for address in alpha.host.endpoints.values():
        assert alpha.port_open(int(address.rsplit(":", 1)[1])), address
    assert _served_der(targets.tunnel(alpha, 443), alpha.host.name) == _own_der(alpha.host)


def test_kill_sessions_drops_connections_not_the_listener(targets: Targets, beta: Target) -> None:
    listener = beta.sshd_pid
    session = subprocess.Popen(targets.ssh_argv(beta, "sleep 30"), stdin=subprocess.DEVNULL,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert wait_until(lambda: "sleep 30" in _cmdlines(beta.processes()), 10)
        started = time.monotonic()
        killed = beta.kill_sessions()
        assert killed and session.wait(5) == 255
        assert time.monotonic() - started < 3
    finally:
        session.kill()
        session.communicate()
    assert pid_alive(listener) and beta.session_pids() == []
    assert "sleep 30" in _cmdlines(beta.processes()), "as on a real host, the command lives on"

    again = targets.ssh(beta, "echo", "again")
    assert (again.returncode, again.stdout) == (0, "again\n"), again.stderr

    crash = subprocess.Popen(targets.ssh_argv(beta, "sleep 31"), stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert wait_until(lambda: "sleep 31" in _cmdlines(beta.processes()), 10)
        beta.kill_sessions(commands=True)
        assert crash.wait(5) == 255
        assert "sleep 31" not in _cmdlines(beta.processes())
    finally:
        crash.kill()
        crash.communicate()


def test_nothing_is_left_after_exit(tmp_path: Path) -> None:
    base = tmp_path / "own"
    with pytest.raises(RuntimeError, match="the test fails"):
        with Targets(base) as own:
            target = own.add("gamma", functools.partial(build_host, generation="modern"))
            netns, holder, sshd, link = target.netns, target.netns_pid, target.sshd_pid, target.link
            services = target.host.pids()
            assert services and link in _links()
            orphan = subprocess.run(own.ssh_argv(target, "sleep 60 >/dev/null 2>&1 &"),
                                    capture_output=True, timeout=30, check=False)
            assert orphan.returncode == 0
            nginx = int(target.host.endpoints["nginx"].rsplit(":", 1)[1])
            tunnel = own.tunnel(target, nginx)
            assert _served_der(tunnel, target.host.name)
            open_tunnel = own.tunnel(target, nginx)
            assert "sleep 60" in _cmdlines(target.processes())
            raise RuntimeError("the test fails")
    open_tunnel.close()
    assert _in_netns(netns) == []
    assert not any(pid_alive(p) for p in (holder, sshd, *services))
    assert processes_under(base) == []
    assert link not in _links()


def test_a_target_that_does_not_start_is_stopped(tmp_path: Path) -> None:
    def broken(root: Path) -> SandboxHost:
        host = build_host(root, "modern")
        host.fault("nginx.nostart")
        return host

    with Targets(tmp_path / "own") as own:
        with pytest.raises(RuntimeError, match="did not start"):
            own.add("delta", broken)
        target = own["delta"]
        assert _in_netns(target.netns) == [] and target.link not in _links()
        assert processes_under(own.base) == []
        with pytest.raises(ValueError):
            own.add("delta", broken)
        with pytest.raises(FileNotFoundError):
            own.add("epsilon", functools.partial(build_release, release="0.0"))
        working = own.add("zeta", functools.partial(build_host, generation="legacy"))
        assert own.ssh(working, "true").returncode == 0
