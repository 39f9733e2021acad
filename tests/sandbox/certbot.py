"""Running real certbot (PyPI's and Debian's) against the sandbox's Pebble."""
from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path
from typing import Protocol

from .acme import Pebble
from .common import REPO

CERTBOT_MAIN = "import sys; from certbot.main import main; sys.exit(main())"


def certbot_variants() -> dict[str, list[str]]:
    """Available certbot launchers: "pypi" (repo .venv) and "debian" (.venv-debian over python3-certbot)."""
    candidates = {
        "pypi": os.environ.get("CERTBOT_WAZO_PYPI_PYTHON", str(REPO / ".venv/bin/python")),
        "debian": os.environ.get("CERTBOT_WAZO_DEBIAN_PYTHON", str(REPO / ".venv-debian/bin/python")),
    }
    return {name: [python, "-c", CERTBOT_MAIN] for name, python in candidates.items() if _has_certbot(python)}


@functools.cache
def _has_certbot(python: str) -> bool:
    if not Path(python).exists():
        return False
    return subprocess.run([python, "-c", "import certbot"], capture_output=True, timeout=60).returncode == 0


def lineage(config_dir: Path, pair: tuple[Path, Path], name: str) -> Path:
    """A lineage laid out as certbot lays it out (live/NAME/*.pem -> ../../archive/NAME/*1.pem)
    holding pair, without an ACME server; returns live/NAME."""
    archive, live = config_dir / "archive" / name, config_dir / "live" / name
    archive.mkdir(parents=True)
    live.mkdir(parents=True)
    for kind, source in (("fullchain", pair[0]), ("cert", pair[0]), ("privkey", pair[1])):
        shutil.copy(source, archive / f"{kind}1.pem")
        (live / f"{kind}.pem").symlink_to(f"../../archive/{name}/{kind}1.pem")
    return live


class Certbot:
    """One certbot launcher bound to a Pebble and a private config/work/logs tree."""

    def __init__(self, argv: list[str], pebble: Pebble, workdir: Path,
                 working_tree: bool = True) -> None:
        self.argv = list(argv)
        self.working_tree = working_tree
        self.pebble = pebble
        self.workdir = Path(workdir)
        self.config_dir = self.workdir / "config"
        self.work_dir = self.workdir / "work"
        self.logs_dir = self.workdir / "logs"
        self.workdir.mkdir(parents=True, exist_ok=True)

    def live(self, name: str) -> Path:
        """The lineage directory config_dir/live/NAME."""
        return self.config_dir / "live" / name

    def standalone_args(self) -> list[str]:
        """Authenticator options for an HTTP-01 standalone validation by Pebble."""
        return ["-a", "standalone", "--http-01-port", str(self.pebble.http_port),
                "--http-01-address", "127.0.0.1"]

    def env(self, env_extra: dict[str, str] | None = None) -> dict[str, str]:
        """The environment certbot (and its hooks) run with. The working tree's certbot_wazo
        comes first (unless working_tree is False, to test the installed package): a venv that
        sees Debian's site-packages would otherwise import an installed python3-certbot-wazo."""
        tree = {"PYTHONPATH": str(REPO)} if self.working_tree else {}
        return {**os.environ, **tree, "REQUESTS_CA_BUNDLE": str(self.pebble.api_ca_path),
                "SSL_CERT_FILE": str(self.pebble.trust_bundle_path), **(env_extra or {})}

    def run(self, *args: str, env_extra: dict[str, str] | None = None,
            timeout: float = 180) -> subprocess.CompletedProcess[str]:
        """certbot ARGS... with --server, private dirs, non-interactive account options."""
        common = ["--server", self.pebble.directory_url, "--config-dir", str(self.config_dir),
                  "--work-dir", str(self.work_dir), "--logs-dir", str(self.logs_dir),
                  "--non-interactive", "--agree-tos", "-m", "admin@example.test"]
        if args[:1] == ("renew",):
            common.append("--no-random-sleep-on-renew")
        return subprocess.run([*self.argv, *args, *common], capture_output=True, text=True,
                              env=self.env(env_extra), timeout=timeout, cwd=self.workdir)


class CertbotFactory(Protocol):
    """What the `certbot` fixture returns: variant (None = first available) -> Certbot."""

    def __call__(self, variant: str | None = None) -> Certbot:
        """Make a Certbot for this variant."""
