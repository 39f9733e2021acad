"""Stand-ins for Wazo's commands (xivo-update-config, wazo-service, systemctl, asterisk), and
`nginx -t` on the sandbox's configuration."""
from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import nginx, systemctl
from .common import counter, fault_armed, log_command, resolve_in_root, sandbox_dir, state
from .config import read_shell_vars
from .procs import read_pid, wait_until

# Service lists of upstream wazo-service: 18.03 (legacy) and current (modern).
_LEGACY_XIVO = ("xivo-dxtora xivo-provd xivo-agid asterisk xivo-amid wazo-call-logd xivo-agentd xivo-ctid "
                "xivo-dird xivo-dird-phoned xivo-ctid-ng xivo-websocketd").split()
_LEGACY_DEFAULT = ("dahdi wazo-admin-ui wazo-plugind wazo-webhookd xivo-sysconfd xivo-confgend xivo-confd "
                   "wazo-auth").split() + _LEGACY_XIVO
_MODERN_WAZO = ("wazo-dxtora wazo-provd wazo-agid asterisk wazo-amid wazo-call-logd wazo-agentd wazo-dird "
                "wazo-phoned wazo-calld wazo-websocketd wazo-chatd").split()
_MODERN_DEFAULT = ("dahdi wazo-plugind wazo-webhookd xivo-sysconfd wazo-confgend wazo-confd "
                   "wazo-auth").split() + _MODERN_WAZO
GROUPS = {
    "legacy": {"xivo": _LEGACY_XIVO, "default": _LEGACY_DEFAULT,
               "all": "rabbitmq-server consul postgresql nginx mongooseim".split() + _LEGACY_DEFAULT},
    "modern": {"wazo": _MODERN_WAZO, "xivo": _MODERN_WAZO, "default": _MODERN_DEFAULT,
               "all": "rabbitmq-server consul postgresql nginx".split() + _MODERN_DEFAULT},
}
PLACEHOLDER = re.compile(r"#[A-Z0-9_]+#")


def main(command: str, root: str, argv: list[str]) -> int:
    """Entry point of every generated stub script."""
    root_path = Path(root)
    log_command(root_path, argv)
    handlers = {"systemctl": systemctl.run, "wazo-service": wazo_service,
                "xivo-update-config": update_config, "asterisk": asterisk,
                "nginx": nginx_command, "sendmail": sendmail}
    return handlers[command](root_path, argv)


def nginx_command(root: Path, argv: list[str]) -> int:
    """nginx [-c CONF] -t [-q] | -s reload | -V, or nothing (start), on the host's configuration
    (rendered under root; -c names it as the host does and is otherwise ignored): what
    certbot-wazo and certbot's nginx plugin run."""
    args = argv[1:]
    if args[:1] == ["-c"]:
        args = args[2:]
    if sorted(args) in (["-t"], ["-q", "-t"]):
        return nginx.test(root, quiet="-q" in args)
    if args == ["-s", "reload"]:
        return nginx.reload(root)
    if args in (["-V"], ["-v"]):
        return subprocess.run([nginx.NGINX, *args], check=False, timeout=30).returncode
    if args == []:
        return nginx.start(root)
    print(f"nginx (sandbox): unsupported arguments {' '.join(argv[1:])}", file=sys.stderr)
    return 1


OUTBOX = "var/mail/sandbox-outbox"


def sendmail(root: Path, argv: list[str]) -> int:
    """The MTA stand-in (postfix's sendmail -t -oi): each message read from stdin is kept in
    OUTBOX as N.eml; the sendmail.fail fault refuses it like a full queue (EX_TEMPFAIL)."""
    if "-t" not in argv[1:]:
        print("sendmail (sandbox): only -t (recipients from the headers) is supported",
              file=sys.stderr)
        return 64
    data = sys.stdin.buffer.read()
    if fault_armed(root, "sendmail.fail"):
        print("sendmail: fatal: queue file write error", file=sys.stderr)
        return 75
    outbox = root / OUTBOX
    outbox.mkdir(parents=True, exist_ok=True)
    (outbox / f"{len(list(outbox.iterdir())) + 1}.eml").write_bytes(data)
    return 0


def _systemctl(root: Path, *args: str, quiet: bool = False) -> int:
    argv = ["systemctl", *args]
    log_command(root, argv)
    if not quiet:
        return systemctl.run(root, argv)
    with contextlib.redirect_stdout(io.StringIO()):
        return systemctl.run(root, argv)


def wazo_service(root: Path, argv: list[str]) -> int:
    """wazo-service ACTION [wazo|default|all], in upstream's order (restart = stop reversed, start)."""
    action = argv[1] if len(argv) > 1 else ""
    group_name = argv[2] if len(argv) > 2 else "default"
    generation = state(root)["generation"]
    groups = state(root).get("groups") or GROUPS[generation]
    if os.path.basename(argv[0]) == "xivo-service":
        print("Warning: xivo-service is a deprecated alias to wazo-service: use wazo-service instead",
              file=sys.stderr)
    if group_name not in groups or action not in ("start", "stop", "restart", "force-reload", "status"):
        if group_name not in groups:
            print(f'Invalid service filter "{group_name}"')
        print(f"usage : {argv[0]} action [services_filter]\navailables actions : status restart stop start")
        return 0
    if group_name == "xivo" and generation == "modern":
        print("Warning: xivo action is a deprecated alias to wazo: use wazo-service wazo", file=sys.stderr)
    units = [u for u in groups[group_name] if u in state(root)["units"]]
    if action == "status":
        for unit in units:
            print(f"\t{'running' if systemctl.active(root, unit) else 'stopped'}\t\t{unit}")
        return 0
    if action in ("restart", "force-reload"):
        if fault_armed(root, "restart-hangs"):
            time.sleep(3600)
        if fault_armed(root, "restart-fails"):
            print("ERR: sandbox fault restart-fails: nothing restarted", file=sys.stderr)
            return 1
    if action in ("stop", "restart", "force-reload"):
        print("Closing port 5060.\nWaiting for services to stop successfully...")
        for unit in reversed(units):
            _systemctl(root, "stop", unit)
    if action == "stop":
        return 0
    if fault_armed(root, "restart-slow"):  # every service is down for a while: signal it now
        (sandbox_dir(root) / "restart-stopped").touch()
        time.sleep(2)
    print("Waiting for services to start successfully...")
    for unit in units:
        if _systemctl(root, "status", unit, quiet=True) != 0:
            print(f"\tstarting {unit} ...", end="", flush=True)
            if _systemctl(root, "start", unit) != 0:
                print(" NOK\nOpening port 5060.")
                return 1
            print(" OK")
    print("Opening port 5060.\nWazo fully booted")
    return 0


def template_vars(root: Path) -> dict[str, str]:
    """XIVO_* variables as xivo-read-config computes them from common.conf and the environment."""
    values = {k: v for k, v in os.environ.items() if k.startswith(("XIVO_", "_XIVO_"))}
    values.update(read_shell_vars(root / "etc/xivo/common.conf"))
    fqdn = f"{values.get('XIVO_HOSTNAME', '')}.{values.get('XIVO_DOMAIN', '')}"
    values["XIVO_SMTP_ORIGIN"] = values.get("XIVO_SMTP_ORIGIN") or fqdn
    values["XIVO_NAMESERVER_LIST"] = "".join(f"nameserver {ns}\\n" for ns in
                                             values.get("XIVO_NAMESERVERS", "").split())
    values["_XIVO_SMTP_MYDOMAIN"] = values.get("XIVO_SMTP_MYDOMAIN") or values.get("XIVO_DOMAIN", "")
    values["XIVO_PROVD_NET4_IP"] = values.get("XIVO_PROVD_NET4_IP") or values.get("XIVO_NET4_IP", "")
    values["XIVO_PROVD_HTTP_PORT"] = values.get("XIVO_PROVD_HTTP_PORT") or "8667"
    values["XIVO_PROVD_HTTP_BASE_URL"] = values.get("XIVO_PROVD_HTTP_BASE_URL") or \
        f"http://{values['XIVO_PROVD_NET4_IP']}:{values['XIVO_PROVD_HTTP_PORT']}"
    values["_XIVO_MONIT_MODE"] = "active"
    return values


def update_config(root: Path, argv: list[str]) -> int:
    """xivo-update-config: render template modules (base, then custom overlay) into root."""
    print("Generating configuration")
    values = template_vars(root)
    if not values.get("XIVO_NET4_IP") or not values.get("XIVO_NET4_NETMASK"):
        print("ERROR: Network badly configured", file=sys.stderr)
        return 1
    if fault_armed(root, "update-config-fails"):
        print("ERROR: sandbox fault update-config-fails", file=sys.stderr)
        return 1
    if fault_armed(root, "update-config-slow"):  # a window before any restart: signal it now
        (sandbox_dir(root) / "update-config-running").touch()
        time.sleep(2)
    base, custom = root / "usr/share/xivo-config/templates", root / "etc/xivo/custom-templates"
    modules = sorted({p.name for d in (base, custom) if d.is_dir() for p in d.iterdir() if p.is_dir()})
    with tempfile.TemporaryDirectory(prefix="xivo-update-config.") as tmp:
        for module in modules:
            if (base / f"{module}.skip").exists() or (custom / f"{module}.skip").exists():
                continue
            result = Path(tmp) / module
            for source in (base / module, custom / module):
                if source.is_dir():
                    shutil.copytree(source, result, symlinks=True, dirs_exist_ok=True)
            files = sorted(p for p in result.rglob("*") if p.is_file())
            for path in files:
                text = path.read_text()
                for name, value in values.items():
                    text = text.replace(f"#{name}#", value)
                path.write_text(text)
            targets = {path: resolve_in_root(root, "/" + str(path.relative_to(result))) for path in files}
            if all(target.is_file() and target.read_bytes() == path.read_bytes()
                   for path, target in targets.items()):
                print(f"'{module}' configuration OK, skipping.")
                continue
            left = [f"/{p.relative_to(result)}: {line}" for p in files
                    for line in p.read_text().splitlines() if PLACEHOLDER.search(line)]
            if left:
                print(f"ERROR: generation from template '{module}' failed because all variables could not "
                      "be expanded:", file=sys.stderr)
                print("\n".join(left))
                continue
            for path, target in targets.items():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, target)
                shutil.copystat(path, target)
            print(f"'{module}' configuration UPDATED.")
    print("DONE")
    return 0


def asterisk(root: Path, argv: list[str]) -> int:
    """asterisk -rx COMMAND against the running stand-in."""
    command = argv[argv.index("-rx") + 1] if "-rx" in argv else ""
    pid = read_pid(sandbox_dir(root) / "asterisk.pid")
    if not systemctl.active(root, "asterisk") or pid is None:
        print("Unable to connect to remote asterisk (does /var/run/asterisk/asterisk.ctl exist?)")
        return 1
    words = command.split()
    if words[:2] == ["module", "reload"] and words[2:] in (["http"], ["http.so"], []):
        # Like Asterisk 13.19 (legacy Wazo): before 13.24 __ast_http_load() returns early when
        # http.conf is unchanged (size and mtime), so the TLS pair is not reloaded.
        http_conf = root / "etc/asterisk/http.conf"
        seen = sandbox_dir(root) / "asterisk.http-conf-stamp"
        stamp = f"{http_conf.stat().st_size}:{http_conf.stat().st_mtime_ns}"
        if state(root)["generation"] == "legacy" and seen.exists() and seen.read_text() == stamp:
            print("Module 'http' reloaded successfully.")
            return 0
        seen.write_text(stamp)
        reloads = sandbox_dir(root) / "asterisk.reloads"
        before = counter(reloads)
        os.kill(pid, signal.SIGHUP)
        wait_until(lambda: counter(reloads) > before, 5.0)
        print("Module 'http' reloaded successfully.")
    elif command == "core show version":
        version = "13.19.2" if state(root)["generation"] == "legacy" else "20.5.2"
        print(f"Asterisk {version} built by sandbox @ sandbox on a x86_64 running Linux")
    elif command:
        print(f"No such command '{command}' (type 'core show help {words[0]}' for other possible commands)")
    return 0
