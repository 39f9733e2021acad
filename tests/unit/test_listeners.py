"""Listening sockets and their owners, read from the kernel's tables (/proc), local or printed
by a remote host's sh."""
from __future__ import annotations

import os
import socket
from pathlib import Path

from certbot_wazo import listeners
from certbot_wazo.listeners import Listener

# Tables in the kernel's format (net/ipv4/tcp_ipv4.c get_tcp4_sock, net/ipv6/tcp_ipv6.c
# get_tcp6_sock). tcp: one socket listening on 0.0.0.0:9296, one on 127.0.0.1:5040, one
# connection; tcp6: [::]:443 and [::1]:9499.
TESTDATA = Path(__file__).parent / "testdata" / "proc"
TCP = (TESTDATA / "tcp").read_text()
TCP6 = (TESTDATA / "tcp6").read_text()
CGROUP_V1 = ("12:pids:/system.slice/wazo-admin-ui.service\n"
             "1:name=systemd:/system.slice/wazo-admin-ui.service\n")
CGROUP_V2 = "0::/system.slice/nginx.service\n"


def test_listening_sockets_of_both_tables() -> None:
    assert listeners.parse_table(TCP) == [listeners.Socket("0.0.0.0", 9296, 4101),
                                          listeners.Socket("127.0.0.1", 5040, 4102)]
    assert listeners.parse_table(TCP6) == [listeners.Socket("::", 443, 4104),
                                           listeners.Socket("::1", 9499, 4105)]


def test_garbage_in_a_table_is_skipped() -> None:
    assert listeners.parse_table("header\nnot a socket line\n 0: zz:zz 0:0 0A a b c d e f\n") == []


def test_the_unit_comes_from_the_systemd_hierarchy_v1_or_v2() -> None:
    assert listeners.unit_of(CGROUP_V1) == "wazo-admin-ui"
    assert listeners.unit_of(CGROUP_V2) == "nginx"
    assert listeners.unit_of("0::/user.slice/user-0.slice/session-3.scope\n") == ""
    assert listeners.unit_of("4:memory:/system.slice/x.service\n") == ""  # not systemd's
    # a sandbox's hierarchy below its own group: the innermost service
    assert listeners.unit_of("1:name=systemd:/certbot-wazo-sandbox/abc/system.slice/"
                             "wazo-setupd.service\n") == "wazo-setupd"


def _proc(tmp_path: Path) -> Path:
    proc = tmp_path / "proc"
    (proc / "net").mkdir(parents=True)
    (proc / "net/tcp").write_text(TCP)
    (proc / "net/tcp6").write_text(TCP6)
    for pid, inodes, cgroup, comm in ((300, [4101, 77], CGROUP_V1, "python3"),
                                      (400, [4104], CGROUP_V2, "nginx"),
                                      (500, [4105], "0::/\n", "python3")):
        fd = proc / str(pid) / "fd"
        fd.mkdir(parents=True)
        for number, inode in enumerate(inodes):
            os.symlink(f"socket:[{inode}]", fd / str(number))
        os.symlink("/dev/null", fd / "9")
        (proc / str(pid) / "cgroup").write_text(cgroup)
        (proc / str(pid) / "comm").write_text(comm + "\n")
    (proc / "self").mkdir()
    return proc


def test_each_listener_with_its_process_and_unit(tmp_path: Path) -> None:
    assert listeners.observe(_proc(tmp_path)) == [
        Listener("::", 443, 400, "nginx", "nginx", 4104),
        Listener("127.0.0.1", 5040, 0, "", "", 4102),   # its holder is not visible
        Listener("0.0.0.0", 9296, 300, "wazo-admin-ui", "python3", 4101),
        Listener("::1", 9499, 500, "", "python3", 4105),  # no systemd service
    ]


def test_a_remote_report_gives_the_same_listeners(tmp_path: Path) -> None:
    """What remote.LISTENERS prints for the same tables and processes."""
    lines = [f"T4 {line.strip()}" for line in TCP.splitlines()[1:]] + \
        [f"T6 {line.strip()}" for line in TCP6.splitlines()[1:]]
    lines += ["O 300 4101", *(f"C 300 {c}" for c in CGROUP_V1.splitlines()), "N 300 python3",
              "O 400 4104", "C 400 0::/system.slice/nginx.service", "N 400 nginx",
              "O 500 4105", "C 500 0::/", "N 500 python3", "junk", "O x y"]
    assert listeners.parse_report("\n".join(lines)) == listeners.observe(_proc(tmp_path))


def test_this_machines_own_listener_is_seen_with_this_process() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        mine = [x for x in listeners.observe() if x.port == port]
    assert [(x.address, x.pid) for x in mine] == [("127.0.0.1", os.getpid())]


def test_where_a_probe_reaches_a_listener() -> None:
    assert listeners.reachable("0.0.0.0") == "127.0.0.1"
    assert listeners.reachable("::") == "::1"
    assert listeners.reachable("::ffff:127.0.0.1") == "127.0.0.1"
    assert listeners.reachable("10.1.2.3") == "10.1.2.3"
    assert listeners.reachable("nonsense") is None


def test_the_remote_script_reports_what_this_machine_observes() -> None:
    """remote.LISTENERS, run here by sh with coreutils, gives the listeners listeners.observe()
    reads from /proc itself (owners included)."""
    import subprocess

    from certbot_wazo import remote
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        out = subprocess.run(["sh", "-c", remote.LISTENERS], capture_output=True, text=True,
                             timeout=60, check=True).stdout
        local = [x for x in listeners.observe() if x.port == port]
    report = listeners.parse_report(out[out.index("CWBEGIN\n") + 8:out.rindex("\nEND")])
    # (only this test's own socket: others come and go while the machine runs other tests)
    assert [x for x in report if x.port == port] == local
    assert [(x.address, x.pid) for x in local] == [("127.0.0.1", os.getpid())]
