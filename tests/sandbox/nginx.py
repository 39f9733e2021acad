"""Runs the real nginx on the sandbox's Wazo-path config by rendering it with root-prefixed paths."""
from __future__ import annotations

import functools
import glob
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from .common import fault_armed, pinned, resolve_in_root, under, wazo_path
from .procs import pid_alive, read_pid, terminate

NGINX = "/usr/sbin/nginx"
PATH_DIRECTIVE = re.compile(
    r"(?<![\w$])((include|ssl_certificate_key|ssl_certificate|ssl_dhparam|ssl_trusted_certificate"
    r"|ssl_client_certificate|pid|error_log|access_log|root|alias|\w+_temp_path)\s+[\"']?)(/[^\s;\"']+)")


def mirror(root: Path) -> Path:
    """Where the rendered configuration tree lives."""
    return root / "run/nginx/rendered"


def render(root: Path, path: str, seen: dict[str, int], depth: int = 0) -> Path:
    """Render one config file (and what it includes) with paths mapped under root."""
    if depth > 10:
        raise RuntimeError(f"nginx include depth exceeded at {path}")
    text = resolve_in_root(root, path).read_text()

    def rewrite(match: re.Match[str]) -> str:
        lead, directive, target = match.group(1), match.group(2), match.group(3)
        if directive == "include":
            for found in sorted(glob.glob(str(under(root, target)))):
                render(root, wazo_path(root, found), seen, depth + 1)
            return lead + str(mirror(root) / wazo_path(root, target).lstrip("/"))
        if directive.startswith("ssl_certificate"):
            seen[directive] = seen.get(directive, 0) + 1
            role = f"{directive}-{seen[directive]}"
            return lead + str(pinned(root, "nginx", role, resolve_in_root(root, target)))
        return lead + str(under(root, target))

    out = mirror(root) / wazo_path(root, path).lstrip("/")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(PATH_DIRECTIVE.sub(rewrite, text))
    return out


@functools.cache
def _has_error_log_switch() -> bool:
    """nginx has -e (the error log used before the configuration is read) from 1.19.5 on;
    Debian 11's 1.18 has not, and opens its default log (the package's /var/log/nginx) instead."""
    found = re.search(r"nginx/(\d+)\.(\d+)\.(\d+)",
                      subprocess.run([NGINX, "-v"], capture_output=True, text=True, timeout=30).stderr)
    return found is None or tuple(int(x) for x in found.groups()) >= (1, 19, 5)


def _nginx(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    shutil.rmtree(mirror(root), ignore_errors=True)
    conf = render(root, "/etc/nginx/nginx.conf", {})
    errlog = root / "var/log/nginx/error.log"
    errlog.parent.mkdir(parents=True, exist_ok=True)
    early_log = ["-e", str(errlog)] if _has_error_log_switch() else []
    return subprocess.run([NGINX, "-c", str(conf), *early_log, *args],
                          capture_output=True, text=True, timeout=30)


def test(root: Path, quiet: bool = False) -> int:
    """nginx -t on the host's configuration, with nginx's own messages."""
    result = _nginx(root, "-t", *(["-q"] if quiet else []))
    sys.stderr.write(result.stderr)
    return result.returncode


def pid(root: Path) -> int | None:
    """The master pid, when nginx runs."""
    master = read_pid(root / "run/nginx.pid")
    return master if master is not None and pid_alive(master) else None


def start(root: Path) -> int:
    """Like nginx.service: test the config, then start the daemon."""
    for args in (("-t", "-q"), ()):
        result = _nginx(root, *args)
        if result.returncode != 0:
            print(result.stderr.strip(), file=sys.stderr)
            return 1
    return 0


def reload(root: Path) -> int:
    """Graceful reload (SIGHUP through nginx -s reload) unless the nginx.noreload fault is armed."""
    if pid(root) is None:
        print("nginx.service is not active, cannot reload.", file=sys.stderr)
        return 1
    if fault_armed(root, "nginx.noreload"):
        return 0
    result = _nginx(root, "-s", "reload")
    if result.returncode != 0:
        print(result.stderr.strip(), file=sys.stderr)
    return result.returncode


def stop(root: Path) -> None:
    """Graceful quit, then kill what is left."""
    master = pid(root)
    if master is not None:
        terminate(master, signal.SIGQUIT)
    (root / "run/nginx.pid").unlink(missing_ok=True)
