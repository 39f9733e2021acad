"""`make bench`, second part: certbot-wazo side by side with `certbot --nginx`, the tool a Wazo
admin would pick instead, on the same kind of host.

    python -m tests.bench.versus_nginx [--runs N] [--release R] [--json FILE]

Runs in a network and mount namespace of its own (it starts itself again under
`unshare --net --mount`): real ports 80 and 443, pebble validating HTTP-01 on port 80 like Let's
Encrypt. For each tool and run, a fresh sandbox host of release R (default 25.17: port 80
redirects to 443, daemons behind nginx and their own TLS listeners) is built from the corpus and
started, then:

issue+deploy
    `certbot run --configurator wazo --wazo-root ROOT -d NAME`, or
    `certbot run --nginx -d NAME` with certbot's nginx plugin reading the host's nginx tree
    (bind-mounted on /etc/nginx inside this process's own mount namespace, so certbot --nginx
    sees the Wazo paths its site names) and driving the host's nginx (--nginx-ctl: the sandbox's
    nginx command). Wall time of the command.
renewal
    `certbot renew --force-renewal` wall time, while a client does a fresh TLS handshake with
    443 every 5 ms: the failed handshakes from its start to 0.5 s after it returned.
every endpoint
    from the start of the command until every TLS endpoint of the host (nginx and the daemons
    that serve TLS themselves) serves the new certificate, each polled every 50 ms from the
    start; "never" when some still do not 10 s after the command returned (certbot --nginx only
    configures nginx), with how many do.

Prints a table (median [min-max]) per tool and writes the raw figures to JSON
(bench-versus-nginx.json). Stops every process it starts, also on an error.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Optional, Sequence

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from tests.bench.handshakes import HandshakeLoop
from tests.bench.report import Row, cell, summary, table
from tests.sandbox.acme import Pebble
from tests.sandbox.certbot import Certbot, certbot_variants
from tests.sandbox.common import REPO
from tests.sandbox.host import SandboxHost
from tests.sandbox.release import build_release

NAME = "wazo.example.test"
TOOLS = ("certbot-wazo", "certbot --nginx")
SERVE_WAIT = 10.0


def progress(message: str) -> None:
    print(f"[versus-nginx] {message}", file=sys.stderr, flush=True)


NAMESPACED = "CERTBOT_WAZO_BENCH_NAMESPACES"


def _in_private_namespaces(argv: Sequence[str]) -> None:
    """Run again in a network and mount namespace of its own (unless this is that run): the
    bind mount and ports 80 and 443 are then never the machine's."""
    if os.environ.get(NAMESPACED) == str(os.getpid()):  # sh -c exec keeps its pid
        with open("/proc/self/net/dev", encoding="ascii") as stream:
            links = [line.split(":", 1)[0].strip() for line in stream.readlines()[2:]]
        if links == ["lo"]:
            return
    script = 'ip link set lo up && CERTBOT_WAZO_BENCH_NAMESPACES=$$ exec "$0" "$@"'
    os.execvp("unshare", ["unshare", "--net", "--mount", "--propagation", "private", "sh", "-c",  # noqa: S606
                          script, sys.executable, "-m", "tests.bench.versus_nginx", *argv])


def _leaf(fullchain: Path) -> bytes:
    return x509.load_pem_x509_certificates(fullchain.read_bytes())[0].public_bytes(Encoding.DER)


class Watcher:
    """Polls every endpoint every 50 ms from its start: when each first served another
    certificate than before."""

    def __init__(self, host: SandboxHost) -> None:
        self.host = host
        self.before = {unit: self._served(unit) for unit in host.endpoints}
        self.changed: dict[str, tuple[float, bytes]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _served(self, unit: str) -> bytes:
        try:
            return self.host.served_cert(unit)
        except (OSError, RuntimeError):
            return b""

    def _run(self) -> None:
        while not self._stop.is_set() and len(self.changed) < len(self.before):
            for unit, old in self.before.items():
                if unit not in self.changed:
                    der = self._served(unit)
                    if der and der != old:
                        self.changed[unit] = (time.monotonic(), der)
            self._stop.wait(0.05)

    def __enter__(self) -> Watcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def result(self, leaf: bytes, start: float, returned: float) -> dict[str, Any]:
        """Seconds from start until every endpoint served leaf (None: some did not within
        SERVE_WAIT of the command's return)."""
        deadline = returned + SERVE_WAIT
        while len(self.changed) < len(self.before) and time.monotonic() < deadline:
            time.sleep(0.05)
        serving = [t for t, der in self.changed.values() if der == leaf]
        done = len(serving) == len(self.before)
        return {"seconds": max(serving) - start if done else None, "serving": len(serving),
                "of": len(self.before)}


def _command(tool: str, host: SandboxHost) -> list[str]:
    if tool == "certbot-wazo":
        return ["--configurator", "wazo", "--wazo-root", str(host.root)]
    return ["--nginx", "--nginx-server-root", "/etc/nginx", "--nginx-ctl",
            str(host.root / "usr/sbin/nginx")]


def one_run(tool: str, pebble: Pebble, work: Path, release: str) -> dict[str, Any]:
    """Issue+deploy, then renew, on a fresh host."""
    host = build_release(work / "root", release, NAME)
    mounted = False
    try:
        host.start()
        if tool == "certbot --nginx":
            subprocess.run(["mount", "--bind", str(host.root / "etc/nginx"), "/etc/nginx"],
                           check=True, timeout=30)
            mounted = True
        variants = certbot_variants()
        cb = Certbot(variants["pypi"], pebble, work / "certbot")
        cb.config_dir = host.root / "etc/letsencrypt"  # under the host, as on a real one
        figures: dict[str, Any] = {"tool": tool}
        with Watcher(host) as watcher:
            start = time.monotonic()
            result = cb.run("run", *_command(tool, host), "-d", NAME, timeout=300)
            returned = time.monotonic()
            if result.returncode != 0:
                raise RuntimeError(f"{tool}: certbot run failed:\n{result.stderr[-3000:]}")
            figures["issue_deploy_s"] = returned - start
            figures["issue_served"] = watcher.result(_leaf(cb.live(NAME) / "fullchain.pem"),
                                                     start, returned)
        loop = HandshakeLoop("127.0.0.1:443", NAME)
        loop.start()
        try:
            time.sleep(0.3)
            with Watcher(host) as watcher:
                start = time.monotonic()
                result = cb.run("renew", "--force-renewal", timeout=300)
                returned = time.monotonic()
                if result.returncode != 0:
                    raise RuntimeError(f"{tool}: certbot renew failed:\n{result.stderr[-3000:]}")
                figures["renew_served"] = watcher.result(
                    _leaf(cb.live(NAME) / "fullchain.pem"), start, returned)
            time.sleep(max(0.0, returned + 0.5 - time.monotonic()))
        finally:
            loop.stop()
        figures["renew_s"] = returned - start
        figures["renew_failed_handshakes_443"] = loop.result(start, returned + 0.5).failed
        return figures
    finally:
        if mounted:
            subprocess.run(["umount", "/etc/nginx"], check=False, timeout=30)
        host.stop()


def render(runs: Sequence[dict[str, Any]]) -> str:
    def series(tool: str, key: str, sub: Optional[str] = None) -> list[float]:
        values = [r[key] if sub is None else r[key][sub] for r in runs if r["tool"] == tool]
        return [v for v in values if v is not None]

    def served(tool: str, key: str) -> str:
        done = [r[key] for r in runs if r["tool"] == tool]
        if any(d["seconds"] is None for d in done):
            worst = min(d["serving"] for d in done)
            return f"never ({worst} of {done[0]['of']} endpoints)"
        return cell(summary([d["seconds"] for d in done]))

    rows = [Row("issuance + deployment (s)", [cell(summary(series(t, "issue_deploy_s")))
                                              for t in TOOLS]),
            Row("  until every endpoint serves it (s)", [served(t, "issue_served") for t in TOOLS]),
            Row("renewal (s)", [cell(summary(series(t, "renew_s"))) for t in TOOLS]),
            Row("  failed handshakes on 443", [cell(summary(series(
                t, "renew_failed_handshakes_443")), "{:.0f}") for t in TOOLS]),
            Row("  until every endpoint serves it (s)", [served(t, "renew_served") for t in TOOLS])]
    return table("side by side, median [min-max]", TOOLS, rows)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.versus_nginx")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--release", default="25.17")
    parser.add_argument("--json", default=str(REPO / "bench-versus-nginx.json"))
    args = parser.parse_args(argv)
    _in_private_namespaces(sys.argv[1:] if argv is None else argv)
    if "pypi" not in certbot_variants():
        raise SystemExit("versus_nginx: the PyPI certbot is not installed (run .ci/bootstrap)")
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="certbot-wazo-versus-") as tmp, \
            Pebble(http_port=80) as pebble:
        pebble.start(Path(tmp) / "pebble")
        for run in range(args.runs):
            for tool in TOOLS if run % 2 == 0 else reversed(TOOLS):
                progress(f"run {run + 1}/{args.runs}: {tool}")
                runs.append(one_run(tool, pebble, Path(tmp) / f"{run}-{tool.split()[-1]}",
                                    args.release))
    print(render(runs))
    print(f"(release {args.release}; certbot --nginx configures nginx only: the daemons that "
          "serve TLS themselves keep their certificate)")
    Path(args.json).write_text(json.dumps(runs, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
