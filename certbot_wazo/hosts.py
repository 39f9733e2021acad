"""The custom hosts template that makes the certificate's name resolve to 127.0.0.1."""
from __future__ import annotations

import re
from typing import Optional

from certbot_wazo import wazoconfig
from certbot_wazo.errors import HostError
from certbot_wazo.files import FILE, LINK, FileState, read_state
from certbot_wazo.host import HOSTS_BASE, HOSTS_CUSTOM, Host

PLACEHOLDER = re.compile(r"#(XIVO_[A-Z0-9_]+)#")
MARK = "# certbot-wazo"
# The one line certbot-wazo adds: an admin's line that merely mentions the mark is theirs.
OUR_LINE = re.compile(r"^127\.0\.0\.1\t(?P<name>\S+)\t" + re.escape(MARK) + "$")


def render(text: str, variables: dict[str, str]) -> str:
    """Substitute #XIVO_*# placeholders like xivo-update-config (unknown ones are left)."""
    return PLACEHOLDER.sub(lambda m: variables.get(m.group(1), m.group(0)), text)


def desired_template(host: Host, hostname: str) -> FileState:
    """The custom template: the admin's (else the base one) with 127.0.1.1 made 127.0.0.1 and
    hostname mapped to 127.0.0.1 even when it is not the host's FQDN.

    :raises HostError: no base template, the custom one is a symlink, or an unknown placeholder
    """
    custom = host.path(HOSTS_CUSTOM)
    current = read_state(custom)
    if current.kind == LINK:
        raise HostError(f"{custom}: is a symlink (replace it with a regular file)")
    if current.kind == FILE:
        source = current.data.decode("utf-8", errors="surrogateescape")
    else:
        base = host.path(HOSTS_BASE)
        try:
            source = base.read_text(encoding="utf-8", errors="surrogateescape")
        except OSError:
            raise HostError(f"{base}: the base hosts template is missing (reinstall xivo-config: "
                            "apt-get install --reinstall xivo-config)") from None
    # The mapping certbot-wazo added for a previous name goes: only the current name is ours.
    lines = [re.sub(r"^127\.0\.1\.1(?=\s)", "127.0.0.1", line) for line in source.split("\n")
             if not ((m := OUR_LINE.match(line)) and m.group("name") != hostname)]
    if lines and lines[-1] == "":
        lines.pop()
    variables = host.common_conf()
    text = "\n".join(lines) + "\n"
    if wazoconfig.hosts_address(render(text, variables), hostname) != "127.0.0.1":
        text += f"127.0.0.1\t{hostname}\t{MARK}\n"
    unknown = sorted({m for m in PLACEHOLDER.findall(text) if m not in variables})
    if unknown:
        where = custom if current.kind == FILE else host.path(HOSTS_BASE)
        raise HostError(f"{where}: unknown placeholder #{unknown[0]}# (define "
                        f"{unknown[0]} in {host.path('/etc/xivo/common.conf')} or remove it "
                        "from the template)")
    data = text.encode("utf-8", errors="surrogateescape")
    if current.kind == FILE and data == current.data:
        return current
    mode = current.mode if current.kind == FILE else 0o644
    return FileState.file(data, mode, current.uid, current.gid)


def leftover_template(host: Host) -> Optional[FileState]:
    """The custom hosts template when it is only the base one with the procedure's 127.0.0.1
    mapping (its sed of 127.0.1.1, or a line naming the certificate), so that removing it
    loses nothing of the admin's; None otherwise (absent, or holds more)."""
    custom = host.path(HOSTS_CUSTOM)
    current = read_state(custom)
    if current.kind != FILE:
        return None
    try:
        base = host.path(HOSTS_BASE).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    text = current.data.decode("utf-8", errors="replace")
    mine = [line for line in text.split("\n") if line and not OUR_LINE.match(line)]
    procedure = [re.sub(r"^127\.0\.1\.1(?=\s)", "127.0.0.1", line) for line in base.split("\n")]
    if mine in ([line for line in procedure if line], [line for line in base.split("\n") if line]):
        return FileState.absent()
    return None
