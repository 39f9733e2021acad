"""What a Wazo host serves and whether it is healthy: the installed pair, endpoints, overrides, lineage."""
from __future__ import annotations

import dataclasses
import datetime
import logging
import stat
from pathlib import Path
from typing import Any, Callable, Optional

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from certbot_wazo import desired, directories, discovery, overrides, releases, tls
from certbot_wazo.deployment import Deployment
from certbot_wazo.errors import LockBusyError, WazoError
from certbot_wazo.files import ABSENT, host_meta, read_state
from certbot_wazo.host import CUSTOM_FILE, LINK_NAME, Host
from certbot_wazo.pair import (
    Pair,
    dns_names,
    load_chain,
    load_key,
    not_after,
    not_before,
    public_key_der,
    read_regular,
)

logger = logging.getLogger(__name__)

EXPIRY_WARNING_DAYS = 14


@dataclasses.dataclass
class Report:
    """The status of one host; healthy when problems is empty."""

    root: str
    generation: str = "unknown"
    release: str = "unknown"
    family: str = "unknown"
    procedure: str = ""
    hostname: str = ""
    pair: dict[str, Any] = dataclasses.field(default_factory=dict)
    endpoints: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    configuration: dict[str, Any] = dataclasses.field(default_factory=dict)
    lineage: Optional[dict[str, Any]] = None
    problems: list[str] = dataclasses.field(default_factory=list)
    # What Wazo itself would skip, or what certbot-wazo cannot know (an unknown release): said,
    # not a problem.
    warnings: list[str] = dataclasses.field(default_factory=list)
    # When a deployment last committed (its undo log became `previous`), seconds since the epoch.
    last_success: Optional[float] = None

    @property
    def healthy(self) -> bool:
        """Nothing needs attention."""
        return not self.problems

    def as_json(self) -> dict[str, Any]:
        """For monitoring systems."""
        return dict(dataclasses.asdict(self), healthy=self.healthy)

    def as_text(self) -> str:
        """For people."""
        lines = [f"Wazo host {self.root}: release {self.release}, family {self.family} "
                 f"({self.generation})",
                 f"  procedure:   {self.procedure or '-'}",
                 f"  name:        {self.hostname or '-'}"]
        if self.pair:
            p = self.pair
            lines += [f"  certificate: {', '.join(p.get('names', [])) or '-'}; issuer "
                      f"{p.get('issuer', '-')}; expires {p.get('not_after', '-')} "
                      f"({p.get('days_left', '?')} days)",
                      f"  key:         {'matches' if p.get('key_matches') else 'DOES NOT MATCH'}"
                      f"; files: " + ", ".join(f"{f['path']} {f['owner']} {f['mode']}"
                                               for f in p.get("files", []))]
        for e in self.endpoints:
            seen = " (found listening; no configuration names it)" \
                if e.get("source") == "observed" else ""
            lines.append(f"  endpoint:    {e['endpoint']}: {'ok' if e['ok'] else 'FAIL'}, "
                         f"{e['detail']}{seen}")
        for warning in self.warnings:
            lines.append(f"  warning:     {warning}")
        for key, value in self.configuration.items():
            lines.append(f"  {key + ':':<12} {value}")
        if self.lineage:
            lines.append(f"  lineage:     {self.lineage['path']} (expires "
                         f"{self.lineage['not_after']}); installed: "
                         f"{'yes' if self.lineage['installed'] else 'NO'}")
        lines.append("Healthy." if self.healthy else "Needs attention:")
        lines += [f"  - {problem}" for problem in self.problems]
        return "\n".join(lines)


def check(deployment: Deployment, config_dir: Path,
          now: Optional[datetime.datetime] = None) -> Report:
    """Inspect the host (after finishing an interrupted deployment, when no other one runs)."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    host = deployment.host
    report = Report(root=str(host.root))
    _recover(deployment, report)
    # its handshakes overlap the checks of the files below
    deployment.observe_early(quiet_after=discovery.REPORT_QUIET_AFTER)
    manifest = deployment.journal.previous.path / "manifest.json"
    if manifest.is_file():
        report.last_success = manifest.stat().st_mtime
    try:
        report.generation = host.generation(deployment.settings.profile)
    except WazoError as exc:
        report.problems.append(str(exc))
    _describe_release(host, report, deployment.settings.profile)
    pair = _installed_pair(host, report, now)
    if pair is None:
        return report
    report.hostname = deployment.settings.hostname or _deployed_name(deployment, pair) or \
        host.pick_name([n for n in pair.names if not n.startswith("*.")]) or _default_name(pair)
    _check_endpoints(deployment, pair, report)
    _check_nginx_foreign(host, pair, report)
    _check_configuration(deployment, pair, report)
    _check_directories(host, pair, report)
    _check_lineage(_lineages(deployment, config_dir), report, pair)
    report.warnings = list(host.warnings)
    try:
        failure = deployment.journal.failure()
    except WazoError as exc:
        report.problems.append(str(exc))
        failure = None
    if failure is not None:
        report.problems.append(f"the deployment of {failure.cert} failed at {failure.failed_at}: "
                               f"{failure.error} (`certbot-wazo retry` deploys it; certbot.timer "
                               "runs it twice a day)")
    return report


def _check_directories(host: Host, pair: Pair, report: Report) -> None:
    """The directory definitions of the asterisk database that the installed pair breaks (a
    CA-issued certificate for the host's name: localhost and server.crt no longer verify)."""
    summary, found = directories.problems(host, report.hostname)
    report.configuration["directories"] = summary
    if pair.leaf.issuer != pair.leaf.subject:
        report.problems += found


def _deployed_name(deployment: Deployment, pair: Pair) -> str:
    """The name the last deployment used for the installed pair (its --hostname), if known."""
    try:
        if deployment.journal.previous.exists():
            record = deployment.journal.last_deployment()
            if record.new_leaf == pair.leaf_der:
                return record.hostname
    except WazoError:
        pass  # a damaged record: the name is chosen as deploy would
    return ""


def _check_nginx_foreign(host: Host, pair: Pair, report: Report) -> None:
    """nginx answering for the name with a certificate file of its own that is not the pair
    (what deploy refuses, with its message)."""
    if not report.hostname:
        return
    try:
        report.problems += desired.nginx_conflicts(host, pair.leaf_der, report.hostname)[1]
    except WazoError as exc:
        report.problems.append(str(exc))


def _safe(check: Callable[[], bool]) -> bool:
    """A yes/no question about the host; a host that cannot answer it says no (its error is
    reported elsewhere)."""
    try:
        return check()
    except WazoError:
        return False


def _describe_release(host: Host, report: Report, profile: str) -> None:
    """The release the host runs, its family and upstream's procedure for it."""
    version = host.version()
    family = host.family()
    if version is not None:
        report.release = f"{version[0]}.{version[1]:02d}"
    if family is None:
        report.procedure = ("release unknown (no " + " or ".join(releases.VERSION_FILES) +
                            "): the generation is read from the configuration")
        return
    report.family = f"{family.name} ({family.releases})"
    report.procedure = f"{family.procedure} [upstream: {family.doc}]"
    if not family.overrides and _safe(lambda: overrides.wanted(host, profile, report.generation)):
        report.procedure += ("; this host's daemons still verify server.crt: certbot-wazo "
                             "deploys the pair into Wazo's certificate directory with the "
                             "overrides, so they keep working")


def _recover(deployment: Deployment, report: Report) -> None:
    try:
        deployment.recover_if_idle(wait=0.0)
    except LockBusyError:
        report.problems.append(f"{deployment.journal.state_dir / 'lock'}: a deployment is "
                               "running now (check again when it is done)")
    except WazoError as exc:
        report.problems.append(str(exc))


def _default_name(pair: Pair) -> str:
    try:
        return pair.default_hostname()
    except WazoError:
        return ""


def _installed_pair(host: Host, report: Report, now: datetime.datetime) -> Optional[Pair]:
    try:
        dirs = host.require_cert_dirs()
    except WazoError as exc:
        report.problems.append(str(exc))
        return None
    pairs: list[Pair] = []
    files: list[dict[str, Any]] = []
    for directory in dirs:
        for name in ("server.crt", "server.key"):
            files.append(_file_info(host, directory / name, report))
        try:
            pairs.append(Pair.load(directory / "server.crt", directory / "server.key"))
        except WazoError as exc:
            report.problems.append(str(exc))
    if not pairs:
        return None
    pair = pairs[0]
    if any(p.chain_pem != pair.chain_pem or p.key_pem != pair.key_pem for p in pairs[1:]):
        report.problems.append(f"{dirs[1]}: holds another pair than {dirs[0]} (deploy again)")
    leaf = pair.leaf
    key = load_key(pair.key_pem, pair.key_path)
    matches = public_key_der(key.public_key()) == public_key_der(leaf.public_key())
    days = (not_after(leaf) - now).days
    issuer = leaf.issuer.rfc4514_string()
    report.pair = {"names": dns_names(leaf), "issuer": issuer, "subject": leaf.subject.rfc4514_string(),
                   "not_before": not_before(leaf).isoformat(), "not_after": not_after(leaf).isoformat(),
                   "days_left": days, "sha256": pair.fingerprint, "key_matches": matches,
                   "files": files}
    if not matches:
        report.problems.append(f"{pair.key_path}: the key does not match {pair.cert_path} "
                               "(deploy the pair again)")
    if leaf.issuer == leaf.subject:
        report.problems.append(f"{pair.cert_path}: still Wazo's self-signed certificate "
                               "(migrate: certbot run -i wazo, see the README)")
    elif not_after(leaf) < now:
        report.problems.append(f"{pair.cert_path}: expired {-days} days ago (renew and deploy)")
    elif not_after(leaf) - now < warning_window(leaf):
        report.problems.append(f"{pair.cert_path}: expires in {_left(not_after(leaf) - now)} "
                               "(check that renewal runs: systemctl list-timers certbot.timer)")
    return pair


def warning_window(leaf: x509.Certificate) -> datetime.timedelta:
    """How long before its expiry a certificate that was not renewed needs attention:
    EXPIRY_WARNING_DAYS, or a third of its lifetime when that is shorter (a 6-day certificate
    is renewed with 3 or 4 days left, and is always within 14 days of its expiry)."""
    lifetime = not_after(leaf) - not_before(leaf)
    return min(datetime.timedelta(days=EXPIRY_WARNING_DAYS), lifetime / 3)


def _left(delta: datetime.timedelta) -> str:
    """A time left, in days, or hours under two days."""
    if delta >= datetime.timedelta(days=2):
        return f"{delta.days} days"
    return f"{int(delta.total_seconds() // 3600)} hours"


def _file_info(host: Host, path: Path, report: Report) -> dict[str, Any]:
    try:
        st = path.lstat()
    except FileNotFoundError:
        report.problems.append(f"{path}: missing (deploy a certificate)")
        return {"path": str(path), "owner": "-", "mode": "-"}
    mode, uid, gid = host_meta(path, st)
    group = "www-data" if _is_www_data(host, gid) else str(gid)
    info = {"path": str(path), "owner": f"{uid}:{group}",
            "mode": f"{mode:04o}", "link": stat.S_ISLNK(st.st_mode)}
    if stat.S_ISLNK(st.st_mode):
        report.problems.append(f"{path}: is a symlink (Wazo's package chowns it; install a real "
                               "file: certbot-wazo deploy)")
    elif group != "www-data":
        report.problems.append(f"{path}: group is not www-data (Wazo's services cannot read it: "
                               "certbot-wazo deploy fixes it)")
    elif path.name == "server.key" and mode & 0o007:
        report.problems.append(f"{path}: readable by others (chmod 0640 it now)")
    return info


def _is_www_data(host: Host, gid: int) -> bool:
    try:
        return host.www_data_gid() == gid
    except WazoError:
        return False


def _check_endpoints(deployment: Deployment, pair: Pair, report: Report) -> None:
    name = report.hostname or "localhost"
    try:
        endpoints, extra = deployment.every_endpoint(name, [pair.leaf_der],
                                                     quiet_after=discovery.REPORT_QUIET_AFTER)
    except WazoError as exc:
        report.problems.append(str(exc))
        return
    observed = {o.endpoint for o in extra}
    self_signed = pair.leaf.issuer == pair.leaf.subject
    results = tls.probe_until(endpoints, name, pair.leaf_der, 0.5, verify=not self_signed,
                              connect=deployment.access.connect)
    for result in results:
        report.endpoints.append({"endpoint": str(result.endpoint), "ok": result.ok,
                                 "detail": result.detail, "sha256": result.fingerprint,
                                 "source": "observed" if result.endpoint in observed
                                 else "configuration"})
        if not result.ok:
            report.problems.append(f"{result.endpoint} {result.detail} (restart that service, "
                                   "or run certbot-wazo deploy again)")


def _check_configuration(deployment: Deployment, pair: Pair, report: Report) -> None:
    """Every path deploy manages against what deploy would leave there for the installed pair
    (desired.desired(), the same answer deploy acts on): overrides' content, links, hosts
    template, leftovers of the pre-19.01 procedure. Before the first deployment (Wazo's
    self-signed pair) only the leftovers count: the rest is what the migration writes."""
    host = deployment.host
    try:
        state = desired.desired(host, pair, report.hostname, deployment.settings.profile)
    except WazoError as exc:  # what deploy would refuse, with its fix
        report.problems.append(str(exc))
        return
    self_signed = pair.leaf.issuer == pair.leaf.subject
    reported = {p for p in report.problems for f in ("server.crt", "server.key") if f in p}
    drift = [(path, wanted) for path, wanted in state.drift()
             if not (self_signed and wanted.kind != ABSENT)
             and not any(p.startswith(f"{path}:") for p in reported)]
    report.problems += [desired.describe_drift(host, path, wanted) for path, wanted in drift]
    if not state.overrides or self_signed:
        return
    custom = host.path(CUSTOM_FILE)
    links = [path for path, _ in state.files if path.name == LINK_NAME]
    wrong_links = [path for path, _ in drift if path in links]
    report.configuration["overrides"] = "ok" if all(p != custom for p, _ in drift) else \
        "missing" if read_state(custom).kind == ABSENT else "differs"
    report.configuration["links"] = "ok" if not wrong_links else \
        f"{len(wrong_links)} of {len(links)} missing or wrong"
    name = report.hostname
    where = host.resolves_to_loopback(name) if name else "no name"
    report.configuration["hosts"] = "ok" if where is None else f"{name} -> {where}"
    if where is not None:
        report.problems.append(f"{host.path('/etc/hosts')}: {name} resolves to {where}, not "
                               "127.0.0.1 (certbot-wazo deploy fixes the hosts template)")


def _lineages(deployment: Deployment, config_dir: Path) -> list[Path]:
    """The certbot lineages that may hold the host's certificate: every one here, or in remote
    mode only the one this machine's ledger recorded for the host (a host claiming another
    customer's name gets no hint of that customer's lineage)."""
    ledger = deployment.access.ledger
    if ledger is None:
        live = config_dir / "live"
        return sorted(live.iterdir()) if live.is_dir() else []
    try:
        entry = ledger.trusted()
    except WazoError as exc:
        logger.warning("%s", exc)
        return []
    lineage = Path(entry.cert).parent if entry is not None and entry.cert else None
    return [lineage] if lineage is not None and lineage.parent == config_dir / "live" else []


def _check_lineage(lineages: list[Path], report: Report, pair: Pair) -> None:
    newest: Optional[tuple[datetime.datetime, Path, Any]] = None
    for lineage in lineages:
        fullchain = lineage / "fullchain.pem"
        try:
            leaf = load_chain(read_regular(fullchain), fullchain)[0]
        except (OSError, WazoError) as exc:  # not this host's concern: said, then skipped
            logger.warning("%s", exc)
            continue
        if report.hostname in dns_names(leaf) and (newest is None or not_before(leaf) > newest[0]):
            newest = (not_before(leaf), lineage, leaf)
    if newest is None:
        return
    _, lineage, leaf = newest
    installed = leaf.public_bytes(Encoding.DER) == pair.leaf_der
    report.lineage = {"path": str(lineage), "not_after": not_after(leaf).isoformat(),
                      "installed": installed}
    if not installed:
        report.problems.append(f"{lineage}: the newest certificate for {report.hostname} is not "
                               f"the one installed (certbot-wazo deploy --lineage {lineage})")
