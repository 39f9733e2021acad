"""status in the monitoring conventions admins already run: a Nagios/Icinga plugin line and exit
code, and a Prometheus textfile for node_exporter's textfile collector."""
from __future__ import annotations

import datetime
from typing import Iterable, Optional, Sequence

from certbot_wazo.status import EXPIRY_WARNING_DAYS, Report

# Nagios plugin exit codes (Monitoring Plugins Development Guidelines, "Plugin Return Codes").
OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
STATES = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL", UNKNOWN: "UNKNOWN"}
# Below this many days left, an expiry is critical, not a warning.
CRITICAL_DAYS = 7


def nagios(report: Report) -> tuple[str, int]:
    """One plugin output line (text | performance data) and the exit code: OK healthy, WARNING
    when only an expiry within the warning threshold is wrong, CRITICAL otherwise."""
    days = report.pair.get("days_left")
    warn, crit = thresholds(report)
    endpoints_ok = sum(1 for e in report.endpoints if e.get("ok"))
    endpoints_failed = len(report.endpoints) - endpoints_ok
    only_expiry = bool(report.problems) and all(" expires in " in p for p in report.problems)
    if report.healthy:
        code = OK
    elif only_expiry and isinstance(days, int) and days >= crit:
        code = WARNING
    else:
        code = CRITICAL
    what = f"{report.hostname or report.root}: " + (
        f"{days} days left, {endpoints_ok} endpoint(s) serve it" if isinstance(days, int)
        else "no certificate")
    if report.problems:
        what += f"; {report.problems[0]}" + (f" (and {len(report.problems) - 1} more)"
                                             if len(report.problems) > 1 else "")
    perf = [f"endpoints_ok={endpoints_ok}", f"endpoints_failed={endpoints_failed}",
            f"problems={len(report.problems)}"]
    if isinstance(days, int):
        # plugin range syntax: "14:" alerts below 14 (Monitoring Plugins guidelines)
        perf.insert(0, f"days_left={days};{warn}:;{crit}:")
    line = f"CERTBOT-WAZO {STATES[code]} - {what} | {' '.join(perf)}"
    return line.replace("\n", " "), code


def thresholds(report: Report) -> tuple[int, int]:
    """Days left below which the expiry is a warning, and critical: 14 and 7, or a third and
    a sixth of the certificate's lifetime when shorter (2 and 1 for a 6-day certificate)."""
    try:
        lifetime = (datetime.datetime.fromisoformat(str(report.pair["not_after"])) -
                    datetime.datetime.fromisoformat(str(report.pair["not_before"])))
    except (KeyError, ValueError):
        return EXPIRY_WARNING_DAYS, CRITICAL_DAYS
    days = lifetime.total_seconds() / 86400
    return min(EXPIRY_WARNING_DAYS, int(days / 3)), min(CRITICAL_DAYS, int(days / 6))


HELP = {
    "certbot_wazo_healthy": "1 when the Wazo host needs no attention.",
    "certbot_wazo_problems": "Problems certbot-wazo status found.",
    "certbot_wazo_certificate_expiry_timestamp_seconds": "When the installed certificate "
                                                          "expires.",
    "certbot_wazo_last_success_timestamp_seconds": "When a deployment last committed.",
    "certbot_wazo_endpoint_up": "1 when the endpoint serves the installed certificate.",
}


def worst(codes: Iterable[int]) -> int:
    """The state of several checks: CRITICAL over UNKNOWN over WARNING over OK."""
    rank = {OK: 0, WARNING: 1, UNKNOWN: 2, CRITICAL: 3}
    return max(codes, key=rank.__getitem__, default=OK)


def prometheus(report: Report, host: Optional[str] = None) -> str:
    """The report as Prometheus text exposition format (for a .prom textfile)."""
    return prometheus_many([(report, host)])


def prometheus_many(reports: Sequence[tuple[Report, Optional[str]]]) -> str:
    """Several hosts' reports in one textfile: each metric once (HELP, TYPE), a sample per
    host (label host: the SSH destination, else the root)."""
    samples: dict[str, list[str]] = {name: [] for name in HELP}
    for report, host in reports:
        label = _labels(host=host or report.root)
        samples["certbot_wazo_healthy"].append(f"{label} {1 if report.healthy else 0}")
        samples["certbot_wazo_problems"].append(f"{label} {len(report.problems)}")
        not_after = report.pair.get("not_after")
        if isinstance(not_after, str):
            expiry = datetime.datetime.fromisoformat(not_after).timestamp()
            samples["certbot_wazo_certificate_expiry_timestamp_seconds"].append(
                f"{label} {expiry:.0f}")
        if report.last_success is not None:
            samples["certbot_wazo_last_success_timestamp_seconds"].append(
                f"{label} {report.last_success:.0f}")
        for endpoint in report.endpoints:
            samples["certbot_wazo_endpoint_up"].append(
                f"{_labels(host=host or report.root, endpoint=str(endpoint['endpoint']))} "
                f"{1 if endpoint.get('ok') else 0}")
    lines = []
    for name, values in samples.items():
        if values:
            lines += [f"# HELP {name} {HELP[name]}", f"# TYPE {name} gauge"]
            lines += [f"{name}{value}" for value in values]
    return "\n".join(lines) + "\n"


def _labels(**labels: str) -> str:
    """{name="value",...} with the exposition format's escapes (backslash, quote, newline)."""
    def escape(value: str) -> str:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return "{" + ",".join(f'{k}="{escape(v)}"' for k, v in labels.items()) + "}"
