"""`make demo`: migrate a sandbox legacy Wazo from its self-signed pair to a pebble certificate, renew it."""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.sandbox.acme import Pebble
from tests.sandbox.certbot import Certbot, certbot_variants
from tests.sandbox.host import SandboxHost, build_host
from tests.sandbox.tree import differences, snapshot

START = time.monotonic()


def say(title: str) -> None:
    print(f"\n=== [{time.monotonic() - START:5.1f}s] {title}", flush=True)


def show(result: subprocess.CompletedProcess[str], command: str) -> None:
    print(f"$ {command}")
    text = (result.stdout + result.stderr).strip()
    print("\n".join(line for line in text.splitlines()
                    if line.strip() and not line.startswith(("- - -", "If you like", " * Don",
                                                              "Saving debug log"))))
    if result.returncode != 0:
        raise SystemExit(f"demo: '{command}' failed with exit code {result.returncode}")


def restarted(host: SandboxHost, since: int) -> str:
    events = host.events()[since:]
    stopped = [e.split()[1] for e in events if e.startswith("stop ")]
    restarted_units = [e.split()[1] for e in events if e.startswith("restart ")]
    reloaded = [e.split()[1] for e in events if e.startswith("reload ")]
    parts = [f"{len(stopped)} services stopped and started again"] if stopped else []
    parts += [f"{len(restarted_units)} daemons serving TLS restarted"] if restarted_units else []
    parts += [f"{unit} reloaded" for unit in reloaded]
    parts.append("asterisk restarted: live calls dropped" if "asterisk" in stopped
                 else "asterisk not restarted: calls kept")
    return "; ".join(parts)


def status(host: SandboxHost, cb: Certbot) -> None:
    command = [str(Path(cb.argv[0]).parent / "certbot-wazo"), "status", "--root", str(host.root),
               "--config-dir", str(cb.config_dir)]
    result = subprocess.run(command, capture_output=True, text=True, env=cb.env(), timeout=60)
    print(f"$ certbot-wazo status --root {host.root}  (exit {result.returncode})")
    print(result.stdout.strip())


def main() -> int:
    variants = certbot_variants()
    variant = "debian" if "debian" in variants else next(iter(variants))
    work = Path(tempfile.mkdtemp(prefix="certbot-wazo-demo-"))
    try:
        with Pebble() as pebble:
            say("A local ACME server (pebble) and a sandbox legacy Wazo host")
            pebble.start(work / "pebble")
            print(f"pebble: {pebble.directory_url}; trust store for the probes: "
                  f"{pebble.trust_bundle_path}")
            # Its nginx serves plain HTTP where pebble validates HTTP-01 (port 80 on a real host)
            with build_host(work / "wazo", "legacy", http_port=pebble.http_port) as host:
                host.start()
                print(f"Wazo root: {host.root} ({len(host.endpoints)} TLS endpoints: "
                      f"{', '.join(sorted(host.endpoints))})")
                cb = Certbot(variants[variant], pebble, work / "certbot")
                print(f"certbot: {variant} ({' '.join(cb.argv[:1])})")
                say("Before: Wazo's self-signed certificate")
                status(host, cb)

                say("Migration: one command; Wazo's own nginx answers the challenge, the "
                    "plugin deploys")
                before, mark = snapshot(host.root), len(host.events())
                command = ["run", "--configurator", "wazo", "--http-01-port",
                           str(pebble.http_port), "--wazo-root", str(host.root), "-d", host.name]
                show(cb.run(*command), "certbot " + " ".join(command))
                print("\nFiles changed:\n  " + "\n  ".join(differences(before,
                                                                     snapshot(host.root))))
                print(f"Services: {restarted(host, mark)}")

                say("Renewal: certbot renew deploys the new certificate through the plugin")
                mark = len(host.events())
                show(cb.run("renew", "--force-renewal"), "certbot renew --force-renewal")
                print(f"Services: {restarted(host, mark)}")

                say("After: what the host serves")
                status(host, cb)
            say("Cleaning up (every process stopped, sandbox removed)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"Demo done in {time.monotonic() - START:.1f}s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
