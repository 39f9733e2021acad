"""Remote mode's pure parts: destinations, per-host roots, the mirror's lines and names.
(The SSH side runs against real sshd in tests/remote.)"""
from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

from certbot_wazo import fleet, options, remote
from certbot_wazo.deployment import Settings
from certbot_wazo.files import read_state


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_destinations_come_from_ssh_lists_and_a_hosts_file_without_repeats(tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_text("# the HA pair\nroot@pbx-a\n\nroot@pbx-c  # and one more\nroot@pbx-b\n")
    found = options.destinations(["root@pbx-a,root@pbx-b", "pbx.example.com"], str(hosts))
    assert found == ["root@pbx-a", "root@pbx-b", "pbx.example.com", "root@pbx-c"]


@pytest.mark.parametrize("bad", ["-oProxyCommand=touch /tmp/x", "root@pbx x", "root@", "a;b"])
def test_a_destination_that_ssh_could_read_as_an_option_or_a_command_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match=r"^--ssh: .* is not \[USER@\]HOST"):
        options.destinations([bad])
    with pytest.raises(ValueError, match=r"--wazo-ssh: "):
        options.settings(ssh=bad)


def test_an_unreadable_hosts_file_is_one_line_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=rf"^{tmp_path}/missing: cannot be read"):
        options.destinations([], str(tmp_path / "missing"))


def test_host_colon_root_gives_that_host_its_own_root() -> None:
    base = Settings(root=Path("/"))
    assert fleet.at(base, "root@pbx-a") == Settings(root=Path("/"), ssh="root@pbx-a")
    assert fleet.at(base, "root@pbx-b:/srv/wazo") == Settings(root=Path("/srv/wazo"),
                                                              ssh="root@pbx-b")
    assert options.settings(ssh="root@pbx-b:/srv/wazo").root == Path("/srv/wazo")


def test_the_mirror_names_paths_and_commands_as_the_host_does() -> None:
    access = remote.SshAccess("root@pbx", Path("/srv/wazo"))
    try:
        local = access.local_root(Path("/srv/wazo"))
        crt = local / "usr/share/xivo-certs/server.crt"
        assert access.describe(f"{crt}: expired") == \
            "root@pbx:/srv/wazo/usr/share/xivo-certs/server.crt: expired"
        command = [str(local / "usr/bin/wazo-service"), "restart", "all"]
        on_host = access.host_argv(command)
        assert on_host == ["/srv/wazo/usr/bin/wazo-service", "restart", "all"]
        assert access.local_argv(on_host) == command
    finally:
        access.close()
    assert not local.exists()  # the mirror (it holds keys) is gone with the connection


@pytest.mark.skipif(os.geteuid() != 0, reason="the mirror keeps the host's owners (root)")
def test_fetched_lines_become_files_links_and_directories_with_their_owner_and_mode(
        tmp_path: Path) -> None:
    remote._mirror_entry(tmp_path, f"D 755 0 0 1700000000 {b64('etc/xivo')}")
    remote._mirror_entry(tmp_path, f"F 640 0 33 1700000001 {b64('etc/xivo/server.key')} "
                                   f"{b64('KEY')}")
    remote._mirror_entry(tmp_path, f"L 0 0 0 0 {b64('etc/xivo/link')} {b64('server.key')}")
    remote._mirror_entry(tmp_path, f"X 755 0 0 0 {b64('usr/bin/wazo-service')}")
    key = read_state(tmp_path / "etc/xivo/server.key")
    assert (key.data, key.mode, key.uid, key.gid) == (b"KEY", 0o640, 0, 33)
    assert (tmp_path / "etc/xivo/server.key").stat().st_mtime == 1700000001
    assert os.readlink(tmp_path / "etc/xivo/link") == "server.key"
    assert os.access(tmp_path / "usr/bin/wazo-service", os.X_OK)


@pytest.mark.parametrize("rel", ["../escape", "/etc/passwd", "etc/../../escape"])
def test_a_fetched_path_outside_the_root_is_ignored(tmp_path: Path, rel: str) -> None:
    box = tmp_path / "box"
    (box / "root").mkdir(parents=True)
    remote._mirror_entry(box / "root", f"F 644 0 0 0 {b64(rel)} {b64('x')}")
    assert sorted(p.name for p in box.rglob("*")) == ["root"]


def sh(script: str, *args: str, stdin: bytes = b"") -> str:
    """One of remote.py's scripts, run by this machine's sh as the host's sh would run it."""
    import subprocess
    return subprocess.run(["sh", "-c", script, "sh", *args], input=stdin, capture_output=True,
                          check=True).stdout.decode()


def test_a_transfer_cut_short_is_never_renamed_into_place(tmp_path: Path) -> None:
    import hashlib
    data = b"-----BEGIN PRIVATE KEY-----\n"
    owner = (str(os.geteuid()), str(os.getegid()))
    whole = hashlib.sha256(data).hexdigest()
    cut = sh(remote.CHANGE, str(tmp_path), "put", "certs/server.key", "t1", "640", *owner,
             whole, stdin=data[:10])
    assert cut.strip() == "ERR WRITE the transfer was cut short"
    assert sorted(p.name for p in (tmp_path / "certs").iterdir()) == []  # no temporary left
    done = sh(remote.CHANGE, str(tmp_path), "put", "certs/server.key", "t2", "640", *owner,
              whole, stdin=data)
    assert done.strip() == f"OK {whole}"
    key = tmp_path / "certs/server.key"
    assert key.read_bytes() == data and key.stat().st_mode & 0o777 == 0o640


def test_a_symlink_on_the_way_is_refused_by_the_hosts_sh(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    (tmp_path / "certs").symlink_to("real")
    answer = sh(remote.CHANGE, str(tmp_path), "put", "certs/server.key", "t", "640", "0", "0",
                "x", stdin=b"k")
    assert answer.strip() == "ERR SYMLINK ./certs"
    assert list((tmp_path / "real").iterdir()) == []


def test_only_the_lock_holder_records_its_running_command(tmp_path: Path) -> None:
    """A status run's psql must not overwrite (then delete) the deployment's restart record."""
    lock = tmp_path / "lock.d"
    lock.mkdir()
    (lock / "owner").write_text("111 222 ctl-1\n")
    (lock / "command").write_text("333 444\n")
    out = sh(remote.RUN, str(tmp_path), str(lock), "-", "5", "-", "true")
    assert "CWRC 0" in out
    assert (lock / "command").read_text() == "333 444\n"
    out = sh(remote.RUN, str(tmp_path), str(lock), "111 222", "5", "-", "true")
    assert "CWRC 0" in out and not (lock / "command").exists()  # the holder's: cleared after


def _line(kind: str, rel: str, payload: bytes = b"", mode: str = "755") -> str:
    """A FETCH line, as a (hostile) host may print it."""
    encoded = base64.b64encode(rel.encode()).decode()
    tail = f" {base64.b64encode(payload).decode()}" if kind in ("F", "L") else ""
    return f"{kind} {mode} 0 0 0 {encoded}{tail}"


def test_a_hostile_host_never_shapes_the_controllers_files(tmp_path: Path) -> None:
    """Symlink trees pointing into the controller, special files, huge files, a directory
    described through a link: each is refused with one line, and nothing outside the mirror is
    created or changed (modes included)."""
    import os

    from certbot_wazo import remote
    from certbot_wazo.errors import HostError
    mirror, controller = tmp_path / "mirror", tmp_path / "controller"
    mirror.mkdir(mode=0o700)
    controller.mkdir(mode=0o700)
    (controller / "secret").write_text("controller's own\n")
    before = sorted((p.name, p.stat().st_mode) for p in [controller, *controller.iterdir()])
    attacks = [
        [_line("L", "etc/xivo/l", str(controller).encode()),
         _line("D", "etc/xivo/l/evil", mode="777")],
        [_line("L", "etc/xivo/l", str(controller).encode()),
         _line("F", "etc/xivo/l/planted", b"x")],
        [_line("L", "etc/xivo/up", b"../../.."), _line("D", "etc/xivo/up/evil")],
        [_line("L", "etc/x", str(controller).encode()), _line("D", "etc/x", mode="777")],
        [_line("O", "etc/nginx/fifo")],
        [_line("F", "etc/nginx/huge", b"x" * (remote.MAX_FILE + 1))],
    ]
    refused = 0
    for lines in attacks:
        try:
            for line in lines:
                assert remote._mirror_entry(mirror, line)
        except HostError as exc:
            refused += 1
            assert "\n" not in str(exc) and len(str(exc)) < 400
    assert sorted((p.name, p.stat().st_mode) for p in [controller, *controller.iterdir()]) \
        == before
    assert refused == 5  # the directory described over a link replaces the link, in the mirror
    assert not os.path.lexists(controller / "evil") and not (tmp_path / "evil").exists()
    assert [p for p in mirror.rglob("*") if p.is_fifo()] == []


def test_a_hosts_symlinks_never_lead_the_controller_out_of_the_mirror(tmp_path: Path) -> None:
    """Absolute targets, `..` past the root and `..` after a link: whatever the host wrote,
    following a mirrored link on the controller stays in the mirror (an absolute target names
    a path under the host's root, as on the host), and read_state still gives the host's text
    (what the undo log records and puts back)."""
    import os

    from certbot_wazo import remote
    from certbot_wazo.files import read_state
    mirror, controller = tmp_path / "mirror", tmp_path / "controller"
    mirror.mkdir(mode=0o700)
    controller.mkdir(mode=0o700)
    (controller / "privkey.pem").write_text("another customer's key\n")
    climb = "../" * (len(controller.parts) + 3)
    links = {
        "etc/xivo/abs": str(controller / "privkey.pem"),
        "etc/xivo/rel": climb + str(controller / "privkey.pem").lstrip("/"),
        "etc/xivo/chain": "b/c",
        "etc/xivo/after": "chain/../../../../.." + str(controller),
        "etc/xivo/custom-link": "/etc/xivo/custom/custom-certificate.yml",
    }
    lines = [_line("D", "etc/xivo/b/c"), _line("F", "etc/xivo/custom/custom-certificate.yml",
                                                 b"enabled: true\n")]
    lines += [_line("L", path, target.encode()) for path, target in links.items()]
    for line in lines:
        assert remote._mirror_entry(mirror, line)
    for path, target in links.items():
        link = mirror / path
        assert read_state(link).target == target  # the host's own text
        real = os.path.realpath(link)
        assert real == str(mirror) or real.startswith(str(mirror) + "/"), (path, real)
        if link.is_file():
            assert "another customer" not in link.read_text()
    # an absolute target is a path under the host's root, as the host itself follows it
    assert (mirror / "etc/xivo/custom-link").read_text() == "enabled: true\n"


def test_the_mirror_keeps_owners_and_modes_as_data(tmp_path: Path) -> None:
    """No chown and no host-chosen mode on this machine (a controller that is not root can
    mirror): the files are this user's, 0600 (0700 when executable), the directories 0700,
    and read_state gives the host's owner and mode; a renamed or removed entry takes them."""
    import os
    import stat

    from certbot_wazo import files, remote
    from certbot_wazo.files import read_state
    mirror = tmp_path / "mirror"
    mirror.mkdir(mode=0o700)
    for line in (_line("D", "usr/share/xivo-certs", mode="555"),
                 _line("F", "usr/share/xivo-certs/server.key", b"k", mode="640"),
                 _line("X", "usr/bin/psql")):
        assert remote._mirror_entry(mirror, line.replace(" 0 0 0 ", " 0 33 0 ", 1))
    key, certs = mirror / "usr/share/xivo-certs/server.key", mirror / "usr/share/xivo-certs"
    for path, disk in ((key, 0o600), (certs, 0o700), (mirror / "usr/bin/psql", 0o700)):
        info = os.lstat(path)
        assert (stat.S_IMODE(info.st_mode), info.st_uid) == (disk, os.geteuid()), path
    assert (read_state(key).mode, read_state(key).uid, read_state(key).gid) == (0o640, 0, 33)
    assert (read_state(certs).mode, read_state(certs).gid) == (0o555, 33)
    moved = mirror / "usr/share/xivo-certs/server.key.old"
    os.rename(key, moved)
    files.move_host_views(key, moved)
    assert read_state(moved).gid == 33
    files.forget_host_views(mirror)
    assert read_state(moved).gid == os.getegid()


def test_a_host_that_streams_bytes_is_cut_off_at_the_bound() -> None:
    import time

    from certbot_wazo import access
    from certbot_wazo.errors import OutputLimitError
    started = time.monotonic()
    with pytest.raises(OutputLimitError, match="printed more than 64 KiB and was stopped"):
        access.spawn(["yes"], timeout=30, limit=64 * 1024, stop_at_limit=True)
    assert time.monotonic() - started < 5
    # a Wazo command is never stopped: what it prints past the bound is dropped
    code, text = access.spawn(["sh", "-c", "head -c 300000 /dev/zero | tr '\\0' x; echo done"],
                              timeout=30, limit=1000)
    assert code == 0 and text == "x" * 1000
