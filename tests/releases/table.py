"""The README's release table, generated from the corpus and the product's own decisions.

    python -m tests.releases.table            # print it
    python -m tests.releases.table --write    # replace it in README.md

Each row builds the release's sandbox tree (nothing started) and asks the product what it sees:
family and procedure, endpoints discovered, what a certificate-only renewal runs.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from certbot_wazo import services
from certbot_wazo.host import LEGACY, Host
from tests.sandbox.release import build_release, facts, releases

README = Path(__file__).resolve().parents[2] / "README.md"
BEGIN = "<!-- release table: python -m tests.releases.table --write -->"
END = "<!-- end of release table -->"


def _renewal(host: Host) -> str:
    generation = host.generation()
    commands = services.gentle_commands(host, host.endpoints()) if generation == LEGACY \
        else services.restart_commands(host, generation)
    words = [" ".join(Path(c[0]).name if i == 0 else c[i] for i in range(len(c)))
             for c in commands]
    return "; ".join(words) or "-"


def row(release: str, scratch: Path) -> str:
    data = facts(release)
    host = Host(build_release(scratch / release, release).root)
    family = host.family()
    assert family is not None, release
    endpoints = ", ".join(f"{e.unit} {e.port}" for e in host.endpoints())
    debian = data["debian"]
    doc = family.doc.split(";")[0]
    return (f"| {release} | {debian['version']} ({debian['codename']}) | {family.name} "
            f"({host.generation()}) | {endpoints} | {_renewal(host)} | {doc} |")


def table() -> str:
    lines = ["| release | Debian | family (deployed as) | TLS endpoints discovered | "
             "certificate-only renewal runs | upstream page followed |",
             "|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as scratch:
        lines += [row(release, Path(scratch)) for release in releases()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args(argv)
    text = table()
    if not args.write:
        print(text)
        return 0
    readme = README.read_text()
    start, end = readme.index(BEGIN) + len(BEGIN), readme.index(END)
    README.write_text(readme[:start] + "\n" + text + "\n" + readme[end:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
