"""The certbot-wazo command: deploy a pair from any ACME client, show the host's status, revert."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

from certbot_wazo import options
from certbot_wazo.deployment import Deployment, Settings
from certbot_wazo.errors import WazoError

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def _common(parser: argparse.ArgumentParser) -> None:
    sup = argparse.SUPPRESS
    parser.add_argument("--root", default=sup, metavar="DIR",
                        help="Wazo root (default: $CERTBOT_WAZO_ROOT, else /)")
    parser.add_argument("--profile", default=sup, choices=options.PROFILES,
                        help="Wazo generation (default: auto, read from the host)")
    parser.add_argument("--hostname", default=sup, metavar="NAME",
                        help="name the services use (default: the certificate's first DNS name)")
    parser.add_argument("--probe", default=sup, metavar="ADDR:PORT[,...]",
                        help="TLS endpoints to check (default: from the host's configuration)")
    parser.add_argument("--probe-timeout", default=sup, type=float, metavar="SECONDS",
                        help=f"how long services get to come back (default "
                             f"{options.DEFAULT_PROBE_TIMEOUT:g})")


def build_parser() -> argparse.ArgumentParser:
    """The command line parser."""
    parser = argparse.ArgumentParser(
        prog="certbot-wazo", description="Deploy a certificate into a Wazo (XiVO) host safely: "
        "validated, probed before and after the restart, rolled back on failure.")
    _common(parser)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    deploy = commands.add_parser("deploy", help="deploy a certificate and its key")
    _common(deploy)
    deploy.add_argument("--lineage", metavar="DIR", help="a certbot lineage (live/NAME): "
                        "uses DIR/fullchain.pem and DIR/privkey.pem")
    deploy.add_argument("--cert", metavar="FULLCHAIN", help="the certificate with its chain")
    deploy.add_argument("--key", metavar="KEY", help="its private key")
    revert = commands.add_parser("revert", help="back to the state before the first deployment")
    _common(revert)
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    """Settings from parsed arguments and the environment.

    :raises ValueError: an option is invalid
    """
    return options.settings(
        root=getattr(args, "root", None) or os.environ.get("CERTBOT_WAZO_ROOT") or "/",
        profile=getattr(args, "profile", "auto"), hostname=getattr(args, "hostname", None),
        probe=getattr(args, "probe", None),
        probe_timeout=getattr(args, "probe_timeout", options.DEFAULT_PROBE_TIMEOUT), prefix="--")


def _pair_paths(args: argparse.Namespace, parser: argparse.ArgumentParser) -> tuple[Path, Path]:
    if args.lineage and (args.cert or args.key):
        parser.error("give --lineage DIR, or --cert FULLCHAIN --key KEY, not both")
    if args.lineage:
        lineage = Path(args.lineage)
        if not lineage.is_dir():
            parser.error(f"{lineage}: not a directory (give a certbot lineage such as "
                         "/etc/letsencrypt/live/NAME)")
        return lineage / "fullchain.pem", lineage / "privkey.pem"
    if not (args.cert and args.key):
        parser.error("give --lineage DIR, or both --cert FULLCHAIN and --key KEY")
    return Path(args.cert), Path(args.key)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the command; exit 0 done, 1 failed (the host left as it was, or restored), 2 usage."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = settings_from(args)
    except ValueError as exc:
        parser.error(str(exc))
    deployment = Deployment(settings, notify=print)
    try:
        if args.command == "deploy":
            cert, key = _pair_paths(args, parser)
            deployment.run(cert, key)
        elif args.command == "revert":
            deployment.restore(deployment.journal.original, "original")
    except WazoError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
