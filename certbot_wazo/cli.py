"""The certbot-wazo command: deploy a pair from any ACME client, show the host's status, revert."""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Any, Optional, Sequence

from certbot_wazo import files, fleet, monitoring, options, repair, status, upgrades
from certbot_wazo.deployment import Deployment, Settings
from certbot_wazo.errors import HostError, SignalledError, WazoError
from certbot_wazo.records import SavedSettings

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _common(parser: argparse.ArgumentParser) -> None:
    sup = argparse.SUPPRESS
    parser.add_argument("--root", default=sup, metavar="DIR",
                        help="Wazo root (default: $CERTBOT_WAZO_ROOT, else /)")
    parser.add_argument("--profile", default=sup, choices=options.PROFILES,
                        help="Wazo generation (default: auto, read from the host)")
    parser.add_argument("--force-profile", default=sup, action="store_true",
                        help="confirm a --profile that differs from the host's configuration")
    parser.add_argument("--hostname", default=sup, metavar="NAME",
                        help="name the services use (default: the certificate's name that is "
                             "this host's)")
    parser.add_argument("--probe", default=sup, metavar="ADDR:PORT[,...]",
                        help="TLS endpoints to check (default: from the host's configuration)")
    parser.add_argument("--probe-timeout", default=sup, type=float, metavar="SECONDS",
                        help=f"how long services get to come back (default "
                             f"{options.DEFAULT_PROBE_TIMEOUT:g})")
    parser.add_argument("--ssh", default=sup, action="append", metavar="[USER@]HOST[:/ROOT]",
                        help="run on a remote Wazo over SSH (the system's ssh client and its "
                             "configuration); repeat it, or give a comma-separated list, for "
                             "several hosts; --root (or :/ROOT) is then a path on that host")
    parser.add_argument("--ssh-hosts", default=sup, metavar="FILE",
                        help="more SSH destinations, one [USER@]HOST per line")
    parser.add_argument("--ssh-config", default=sup, metavar="FILE",
                        help="an ssh client configuration file (ssh -F)")
    parser.add_argument("--sudo", default=sup, action="store_true",
                        help="with --ssh: log in as an unprivileged user and run every command "
                             "on the host with sudo -n (for hosts with PermitRootLogin no; the "
                             "README shows the sudoers line)")
    parser.add_argument("-v", "--verbose", default=sup, action="store_true",
                        help="log every command with its output, every probe and every file "
                             "written to standard error")


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
    deploy.add_argument("--all-or-nothing", action="store_true", help="with several hosts: "
                        "restart none unless every host took the pair, and put every host back "
                        "when one fails after its restart")
    status = commands.add_parser("status", help="what the host serves, and whether it is "
                                 "healthy (exit 0 healthy, 1 needs attention)")
    _common(status)
    status.add_argument("--json", action="store_true", help="print JSON for monitoring")
    status.add_argument("--nagios", action="store_true", help="print one Nagios/Icinga plugin "
                        "line and exit 0 OK, 1 WARNING (expires soon), 2 CRITICAL, 3 UNKNOWN")
    status.add_argument("--prometheus", metavar="FILE", help="also write the figures as a "
                        "Prometheus textfile (node_exporter's textfile collector: a .prom file)")
    status.add_argument("--alert", action="store_true", help="e-mail what needs attention "
                        "through the host's MTA (sendmail), at most once a day per problem, to "
                        "Wazo's alert addresses (XIVO_ALERT_EMAILS in /etc/xivo/common.conf), "
                        "else root; run by certbot.service after each renewal attempt")
    status.add_argument("--alert-to", metavar="ADDRESS[,ADDRESS]", help="with --alert: send "
                        "to these addresses instead")
    status.add_argument("--config-dir", default="/etc/letsencrypt", metavar="DIR",
                        help="certbot's configuration directory, to find the newest lineage "
                             "(default /etc/letsencrypt)")
    retry = commands.add_parser("retry", help="deploy again a renewal whose deployment failed "
                                "(run after each certbot.timer run; nothing to do exits 0)")
    _common(retry)
    recover = commands.add_parser("recover", help="undo a deployment that was interrupted "
                                  "(killed, power cut); every command does it first anyway")
    _common(recover)
    recover.add_argument("--boot", action="store_true", help="at boot, before the services "
                         "start: only put the previous files back")
    recover.add_argument("--boot-database", action="store_true", help="at boot, once "
                         "PostgreSQL runs and before wazo-dird starts: only put the directory "
                         "definitions back")
    repair = commands.add_parser("repair", help="after a Wazo upgrade: check the host against "
                                 "what was deployed and, when it differs, deploy the same lineage "
                                 "again (exit 0 healthy, 1 still needs attention)")
    _common(repair)
    repair.add_argument("--config-dir", default="/etc/letsencrypt", metavar="DIR",
                        help="certbot's configuration directory, where the deployed lineage is "
                             "(default /etc/letsencrypt)")
    repair.add_argument("--wait-for-dpkg", type=float, default=0.0, metavar="SECONDS",
                        help="first wait up to SECONDS while dpkg or wazo-upgrade runs (a dpkg "
                             "trigger starts the repair before the upgrade ends)")
    revert = commands.add_parser("revert", help="back to the state before the first deployment")
    _common(revert)
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    """Settings from parsed arguments and the environment.

    :raises ValueError: an option is invalid
    """
    root = getattr(args, "root", None)
    return options.settings(
        root=root if root is not None else os.environ.get("CERTBOT_WAZO_ROOT") or "/",
        profile=getattr(args, "profile", "auto"), hostname=getattr(args, "hostname", None),
        probe=getattr(args, "probe", None),
        probe_timeout=getattr(args, "probe_timeout", options.DEFAULT_PROBE_TIMEOUT), prefix="--",
        force_profile=getattr(args, "force_profile", False),
        ssh_config=getattr(args, "ssh_config", None))


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
    """Run the command; exit 0 done (or healthy), 1 failed (the host left as it was, or
    restored) or needs attention, 2 usage."""
    previous = _catch_signals()  # status too: it may finish an interrupted deployment
    try:
        return _main(argv)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _main(argv: Optional[Sequence[str]]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "verbose", False):
        _log_to_stderr()
    try:
        settings = settings_from(args)
        remotes = options.destinations(getattr(args, "ssh", []), getattr(args, "ssh_hosts", None))
    except ValueError as exc:
        parser.error(str(exc))
    if getattr(args, "ssh_hosts", None) is not None and not remotes:
        parser.error(f"{args.ssh_hosts}: no host in it (give one [USER@]HOST per line)")
    if getattr(args, "sudo", False):
        if not remotes:
            parser.error("--sudo: only with --ssh (it is how commands run on a remote host "
                         "reached as an unprivileged user; drop it, or give --ssh USER@HOST)")
        settings = dataclasses.replace(settings, sudo=True)
    if remotes:
        return _on_hosts(parser, args, settings, remotes)
    if os.geteuid() != 0 and settings.root == Path("/"):
        _complain(f"certbot-wazo {args.command}: run as root (sudo certbot-wazo "
                  f"{args.command} …): it reads Wazo's private key"
                  + ("" if args.command == "status" else " and restarts its services"))
        return EXIT_FAILED
    if args.command == "status":
        try:
            return _status(settings, args)
        except (WazoError, OSError) as exc:
            if args.nagios:  # the plugin could not check: UNKNOWN, one line on stdout
                print(f"CERTBOT-WAZO UNKNOWN - {_one_line(exc)}")
                return monitoring.UNKNOWN
            _complain(_one_line(exc))
            return EXIT_FAILED
    deployment = Deployment(settings, notify=_say)
    try:
        if args.command == "deploy":
            cert, key = _pair_paths(args, parser)
            deployment.run(cert, key, remember=bool(args.lineage))
        elif args.command == "retry":
            deployment = Deployment(_retry_settings(deployment, args), notify=_say)
            deployment.retry()
        elif args.command == "recover":
            done = deployment.recover_database() if args.boot_database else \
                deployment.recover_if_idle(boot=args.boot)
            if not done:
                print("No interrupted deployment")
        elif args.command == "revert":
            deployment.revert()
        elif args.command == "repair":
            return _repair(deployment, args)
    except (WazoError, OSError) as exc:
        _complain(_one_line(exc))
        return EXIT_FAILED
    return EXIT_OK


def _repair(deployment: Deployment, args: argparse.Namespace) -> int:
    """repair on one host: its exit code (0 healthy afterwards).

    :raises WazoError: the repair failed
    """
    if args.wait_for_dpkg and not upgrades.wait_idle(deployment.host, args.wait_for_dpkg):
        raise HostError(f"{deployment.host.path(upgrades.DPKG_LOCK)}: dpkg or wazo-upgrade "
                        f"still runs after {args.wait_for_dpkg:g} s (run certbot-wazo repair "
                        "when it is done)")
    after = repair.repair(deployment, Path(args.config_dir))
    if after is None:
        return EXIT_OK
    if after.healthy:
        _say(deployment.access.describe("Repaired: the host is healthy"))
        return EXIT_OK
    for problem in after.problems:
        _complain(deployment.access.describe(problem))
    return EXIT_FAILED


def _on_hosts(parser: argparse.ArgumentParser, args: argparse.Namespace, settings: Settings,
              remotes: list[str]) -> int:
    """The command on each remote host, each its own transaction; which host ended where."""
    if args.command == "deploy":
        cert, key = _pair_paths(args, parser)
        outcomes = fleet.deploy(remotes, settings, cert, key, bool(args.lineage),
                                args.all_or_nothing, _say)
        if len(outcomes) > 1 or outcomes[0].state == fleet.FAILED:
            for outcome in outcomes:
                (_complain if outcome.state == fleet.FAILED else _say)(str(outcome))
        return EXIT_OK if all(o.state in (fleet.DEPLOYED, fleet.UNCHANGED)
                              for o in outcomes) else EXIT_FAILED
    reports: dict[str, Any] = {}
    failed = False
    for destination in remotes:
        one = fleet.at(settings, destination)
        try:
            if args.command == "status":
                reports[destination] = fleet.on_host(
                    one, _say, lambda d: _status_report(d, args))
                failed |= not reports[destination]["healthy"]
            else:
                fleet.on_host(one, _say, lambda d: _action(d, args))
        except WazoError as exc:
            failed = True
            reports[destination] = {"host": destination, "healthy": False,
                                    "problems": [str(exc)]}
            _complain(f"{destination}: {exc}" if not str(exc).startswith(destination)
                      else str(exc))
    if args.command == "status":
        checked = [(reports[d].pop("_report"), d) for d in remotes if "_report" in reports[d]]
        try:
            monitored = _monitoring(args, checked)
        except (WazoError, OSError) as exc:
            _complain(_one_line(exc))
            return monitoring.UNKNOWN if args.nagios else EXIT_FAILED
        if monitored is not None:
            unreachable = [d for d in remotes if not any(d == h for _, h in checked)]
            for destination in unreachable:
                print(f"CERTBOT-WAZO UNKNOWN - {destination}: "
                      f"{reports[destination]['problems'][0]}")
            return monitoring.worst([monitored] + [monitoring.UNKNOWN for _ in unreachable])
        if args.json:
            bare = [{k: v for k, v in reports[d].items() if k != "text"} for d in remotes]
            print(json.dumps(bare[0] if len(bare) == 1 else {"hosts": bare}, indent=2))
        else:
            print("\n".join(r.get("text", "\n".join(r["problems"])) for r in reports.values()))
    return EXIT_FAILED if failed else EXIT_OK


def _action(deployment: Deployment, args: argparse.Namespace) -> None:
    """retry, recover or revert on one host.

    :raises WazoError: it failed
    """
    if args.command == "retry":  # with the failed deployment's own settings, as locally
        saved = dataclasses.replace(_retry_settings(deployment, args),
                                    ssh=deployment.settings.ssh,
                                    ssh_config=deployment.settings.ssh_config,
                                    sudo=deployment.settings.sudo)
        Deployment(saved, notify=deployment.notify, access=deployment.access).retry()
    elif args.command == "recover":
        if not (deployment.recover_database() if args.boot_database
                else deployment.recover_if_idle(boot=args.boot)):
            print(deployment.access.describe(f"{deployment.host.root}: no interrupted "
                                             "deployment"))
    elif args.command == "revert":
        deployment.revert()
    elif args.command == "repair" and _repair(deployment, args) != EXIT_OK:
        raise HostError(deployment.access.describe(f"{deployment.host.root}: still needs "
                                                   "attention after the repair (certbot-wazo "
                                                   "status says what)"))


def _status_report(deployment: Deployment, args: argparse.Namespace) -> dict[str, Any]:
    messages: list[str] = []
    deployment.notify = messages.append
    report = status.check(deployment, Path(args.config_dir))
    describe = deployment.access.describe
    data = json.loads(describe(json.dumps(dict(report.as_json(), messages=messages))))
    data["host"] = deployment.settings.ssh
    data["text"] = describe("\n".join([*messages, report.as_text()]))
    described = status.Report(**{k: v for k, v in data.items()
                                 if k in status.Report.__dataclass_fields__})
    data["_report"] = described
    _alert(deployment, described, args)  # the host's paths, never the mirror's
    return dict(data)


def _complain(line: str) -> None:
    """One line on standard error, unless it is gone."""
    try:
        print(line, file=sys.stderr, flush=True)
    except OSError:
        pass


def _say(message: str) -> None:
    """Print, unless the terminal is gone (an SSH hang-up must not stop a rollback)."""
    try:
        print(message, flush=True)
    except OSError:
        pass


def _catch_signals() -> dict[int, Any]:
    """SIGINT, SIGTERM and SIGHUP stop the run at the next safe point, which then undoes what
    this run changed (a restart command under way is left to finish first); later signals are
    caught and dropped so that nothing interrupts the undo."""
    def later(signum: int, frame: Optional[FrameType]) -> None:
        """Caught and dropped (not SIG_IGN, which the commands run by the undo would inherit:
        services restarted by it would then ignore SIGTERM)."""

    def interrupt(signum: int, frame: Optional[FrameType]) -> None:
        for other in SIGNALS:
            signal.signal(other, later)
        raise SignalledError(f"interrupted by {signal.Signals(signum).name}")

    return {signum: signal.signal(signum, interrupt) for signum in SIGNALS}


def _one_line(exc: Exception) -> str:
    """The error as one line; an unexpected OSError still names its file."""
    if isinstance(exc, OSError):
        return f"{exc.filename or 'certbot-wazo'}: {exc.strerror or exc} (fix it, then run again)"
    return str(exc)


def _status(settings: Settings, args: argparse.Namespace) -> int:
    messages: list[str] = []
    deployment = Deployment(settings, notify=messages.append)
    report = status.check(deployment, Path(args.config_dir))
    monitored = _monitoring(args, [(report, None)])
    if monitored is None:
        if args.json:
            print(json.dumps(dict(report.as_json(), messages=messages), indent=2))
        else:
            print("\n".join([*messages, report.as_text()]))
    try:
        _alert(deployment, report, args)
    except WazoError as exc:
        _complain(_one_line(exc))
        return EXIT_FAILED if monitored is None else monitoring.worst([monitored,
                                                                       monitoring.UNKNOWN])
    if monitored is not None:
        return monitored
    return EXIT_OK if report.healthy else EXIT_FAILED


# The unit whose ExecStopPost runs `status --alert` (systemd gives it SERVICE_RESULT and
# EXIT_STATUS); certbot.service unless the unit says otherwise.
ALERT_UNIT = "CERTBOT_WAZO_UNIT"


def _alert(deployment: Deployment, report: status.Report, args: argparse.Namespace) -> None:
    """--alert: mail what needs attention, and a failed certbot run when certbot.service's
    ExecStopPost runs this (systemd gives it SERVICE_RESULT and EXIT_STATUS).

    :raises WazoError: an address is invalid, or the MTA refused the message
    """
    if not args.alert:
        return
    extra = []
    result = os.environ.get("SERVICE_RESULT")
    unit = os.environ.get(ALERT_UNIT, "certbot")
    if result and result != "success":
        again = "`certbot renew` runs it again" if unit == "certbot" else \
            f"`systemctl start {unit}` runs it again"
        what = "certbot renew" if unit == "certbot" else f"{unit}.service"
        extra.append(f"{what} failed ({result}, exit status "
                     f"{os.environ.get('EXIT_STATUS', '?')}; `journalctl -u {unit}` says why, "
                     f"{again})")
    from certbot_wazo import alerts  # the mail stack, only when mailing

    mailed, to = alerts.send(deployment.host, report, args.alert_to, extra,
                             where=deployment.settings.ssh)
    if mailed:
        _say(deployment.access.describe(f"Alert about {len(mailed)} problem(s) sent to "
                                        f"{', '.join(to)}"))


def _monitoring(args: argparse.Namespace,
                reports: Sequence[tuple[status.Report, Optional[str]]]) -> Optional[int]:
    """--prometheus: write the textfile; --nagios: print the plugin lines.

    :returns: the exit code when --nagios answered, else None (the usual output follows)
    :raises WazoError: the textfile cannot be written
    """
    if args.prometheus:
        path = Path(args.prometheus).absolute()
        text = monitoring.prometheus_many(reports)
        files.apply_state(path, files.FileState.file(text.encode(), 0o644))
    if not args.nagios:
        return None
    results = [monitoring.nagios(report) for report, _ in reports]
    code = monitoring.worst(c for _, c in results)
    for (_, host), (line, _) in zip(reports, results):
        print(line if host is None else line.replace(" - ", f" - {host}: ", 1))
    return code


def _log_to_stderr() -> None:
    """certbot-wazo's debug log on standard error (certbot's own log gets it from the plugin)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    package = logging.getLogger("certbot_wazo")
    package.addHandler(handler)
    package.setLevel(logging.DEBUG)


def _retry_settings(deployment: Deployment, args: argparse.Namespace) -> Settings:
    """The failed deployment's own settings, unless the command line gives others.

    :raises WazoError: the remembered deployment cannot be read
    """
    record = deployment.failure_to_retry()
    saved = record.settings if record is not None else SavedSettings()
    try:
        return options.settings(
            root=deployment.settings.root,
            profile=getattr(args, "profile", saved.profile),
            hostname=getattr(args, "hostname", saved.hostname),
            probe=getattr(args, "probe", ",".join(saved.probes) or None),
            probe_timeout=getattr(args, "probe_timeout",
                                  saved.probe_timeout or options.DEFAULT_PROBE_TIMEOUT),
            prefix="--",
            force_profile=getattr(args, "force_profile", saved.force_profile))
    except (TypeError, ValueError) as exc:
        raise WazoError(f"{deployment.journal.failure_path}: the remembered deployment's "
                        f"settings are damaged ({exc}; give them on the command line, or remove "
                        "the file)") from None


if __name__ == "__main__":
    sys.exit(main())
