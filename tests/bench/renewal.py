"""`make bench`: what one certificate renewal costs a Wazo host, measured on the sandbox.

    python -m tests.bench.renewal [--runs N] [--short] [--json FILE] [--check] [--certbot VARIANT]

For each generation (legacy, modern) a sandbox host is built, started, and migrated once with
`certbot run -a standalone -i wazo --wazo-root ROOT -d NAME` against a local pebble (not
measured). Then each run measures:

renewal
    `certbot renew --force-renewal --cert-name NAME` while two client threads each do a fresh TLS
    handshake every 5 ms (no verification: a completed handshake is a success) against the nginx
    endpoint and one daemon endpoint (legacy: the first daemon the host lists; modern:
    wazo-phoned). Per endpoint, from the start of the renew until 0.5 s after it returned: the
    failed handshakes, and the longest gap between two successful ones (the outage; about 6 ms
    when nothing happens). From the sandbox's service log: the units stopped or restarted, the
    units reloaded, and whether asterisk was stopped or started again (its start counter).
plugin overhead
    `certbot renew --force-renewal` of the wazo lineage (T_wazo) and of a second lineage obtained
    with `certonly` and no installer (T_plain): same pebble, certbot, authenticator and config
    directory, no client load, alternating which goes first. The restarts are stubbed out by
    subtraction, not replaced (a restart that does not happen would fail the post-restart probe
    and roll back): the benchmark puts a timing wrapper for wazo-service, systemctl and asterisk
    at ROOT/usr/sbin/NAME, the first place the plugin looks (the sandbox's asterisk, already there,
    moves to ROOT/usr/lib/certbot-wazo-bench/asterisk). Each wrapper logs its wall-clock start and
    end and runs the real command unchanged (same arguments, same basename, so the sandbox logs it
    as before). R = the time spent in those commands during T_wazo when they start, stop, restart
    or reload something (`asterisk -rx "module reload http"` included; status queries excluded).
    Overhead = (T_wazo - R - T_plain) / T_plain. The post-restart probe is counted as plugin time,
    waiting for a reloaded nginx included. Each term is a ~3-6 s process run, so a single pair is
    noisy (±10 % on a busy 2-CPU machine), and certbot's own polling of pebble makes the two
    runs differ by up to 0.5 s whatever the plugin does (T_plain polls once more when nothing
    delays its challenge): the figure is printed, not judged. The goal is judged on the plugin's
    own time, measured inside the same T_wazo run: the sum of the durations certbot's debug log
    gives for each of the plugin's methods ("certbot-wazo: METHOD took S s"), minus the restart
    phase it logs (from the first restart command until every endpoint serves the new
    certificate: the restart commands and the services' own time to come back, which the probe
    benchmark's lag bounds for the plugin's part), divided by T_plain; its median over the
    pairs. With --runs 3 or
    more, while the middle half of the pairs has figures of both signs (the noise hides the
    plugin), more pairs are measured, up to 3 × --runs.
probe
    K = 1, 4, 12 TLS listeners in this process that start listening after staggered delays (the
    slowest at 1 s), probed from t0 with certbot_wazo.tls.probe_until(..., timeout=10,
    verify=False). Lag = elapsed - the moment the slowest listener was up: probes run
    concurrently, so the total should be about the slowest service, not the sum.
status
    `certbot-wazo status --root ROOT --config-dir CONFIG` wall time on the legacy host right after
    its migration (healthy: exit 0), after one untimed warm-up call (page cache).

Prints a table (median [min–max]) and the goals, and writes every raw figure to JSON (default:
bench-results.json at the repo root, gitignored). Goals on counts (failed handshakes, asterisk
restarts, failed commands) must hold on every run (judged on the max); goals on timings are
judged on the median. Goals: plugin overhead ≤ 2 % (median), status ≤ 0.25 s
(median). A missed goal prints a "GOAL MISSED" line; the exit status is still 0 (it is
a benchmark) unless --check is given. --short (for CI): one run, and the probe benchmark with 1
and 12 endpoints only. Every process is stopped and every temporary file removed, also on Ctrl-C
or SIGTERM.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType
from typing import Any, Optional, Sequence

from certbot_wazo import tls
from tests.bench.handshakes import DelayedListener, HandshakeLoop, leaf_der, server_context
from tests.bench.report import Goal, Row, cell, goal, summary, table
from tests.pki import CA
from tests.sandbox.acme import Pebble
from tests.sandbox.certbot import Certbot, certbot_variants
from tests.sandbox.common import REPO, free_ports
from tests.sandbox.host import SandboxHost, build_host

GENERATIONS = ("legacy", "modern")
# The goals (issue 24): the plugin's own cost on a renewal, restarts excluded, as a share of a
# renewal without installer (median of the pairs), and a status check's wall time (median).
OVERHEAD_GOAL = 2.0
STATUS_GOAL = 0.25
# While the middle half of the overhead pairs has both signs, more pairs are measured, up to this
# many times --runs in all (with --runs 3 or more).
MORE_PAIRS = 3
IN_PLUGIN = re.compile(r"certbot-wazo: \w+ took ([0-9.]+) s")
SERVICES_BACK = re.compile(r"certbot-wazo: restarted, and every endpoint back, in ([0-9.]+) s")
RUN_START = "DEBUG:certbot._internal.main:certbot version:"
PLAIN_NAME = "plain.example.test"  # the lineage renewed without an installer
HANDSHAKE_INTERVAL = 0.005
TAIL = 0.5  # seconds observed after the renew returned
PROBE_COUNTS = (1, 4, 12)
PROBE_COUNTS_SHORT = (1, 12)
PROBE_SLOWEST = 1.0
PROBE_TIMEOUT = 10.0
WRAPPED = ("wazo-service", "systemctl", "asterisk")
RESTART_WORDS = {"start", "stop", "restart", "reload", "force-reload"}  # not status, is-active, show
WRAPPER = """#!/bin/sh
# certbot-wazo benchmark: time this command, then run the sandbox's own one unchanged.
start=$(date +%s%N)
{real} "$@"
status=$?
end=$(date +%s%N)
echo "$start $end $status {name} $*" >> {log}
exit $status
"""
START = time.monotonic()


def progress(message: str) -> None:
    """A progress line on standard error."""
    print(f"[{time.monotonic() - START:6.1f}s] {message}", file=sys.stderr, flush=True)


def _terminate(signum: int, frame: Optional[FrameType]) -> None:
    signal.signal(signum, signal.SIG_IGN)  # a second signal must not cut the cleanup short
    raise KeyboardInterrupt(f"signal {signum}")


# -- the sandbox host -------------------------------------------------------------------------
def install_restart_timers(host: SandboxHost) -> Path:
    """Timing wrappers for the restart commands at ROOT/usr/sbin/NAME, the first place the plugin
    looks (a command already there moves to ROOT/usr/lib/certbot-wazo-bench/NAME: same
    basename); returns the wrappers' log."""
    log = host.root / "var/log/bench-restarts.log"
    for name in WRAPPED:
        real = next((host.root / d / name for d in ("usr/sbin", "usr/bin", "sbin", "bin")
                     if (host.root / d / name).exists()), None)
        if real is None:
            raise RuntimeError(f"{host.root}: no {name} to wrap (the sandbox layout changed?)")
        wrapper = host.root / "usr/sbin" / name
        if real == wrapper:
            real = host.root / "usr/lib/certbot-wazo-bench" / name
            real.parent.mkdir(parents=True, exist_ok=True)
            wrapper.rename(real)
        wrapper.write_text(WRAPPER.format(real=shlex.quote(str(real)), name=name,
                                          log=shlex.quote(str(log))))
        wrapper.chmod(0o755)
    return log


def restart_seconds(log: Path, start_ns: int, end_ns: int) -> float:
    """Wall time spent in wrapped restart/reload/start/stop commands that ran between start_ns and
    end_ns (union of the intervals)."""
    intervals = []
    for line in log.read_text().splitlines() if log.exists() else []:
        words = line.split()
        begin, end = int(words[0]), int(words[1])
        if begin >= start_ns and end <= end_ns and RESTART_WORDS & set(words[4:]):
            intervals.append((begin, end))
    total, reach = 0, 0
    for begin, end in sorted(intervals):
        begin = max(begin, reach)
        if end > begin:
            total += end - begin
        reach = max(reach, end)
    return total / 1e9


def daemon_unit(host: SandboxHost) -> str:
    """The daemon endpoint the client loop runs through."""
    if "wazo-phoned" in host.endpoints and host.generation == "modern":
        return "wazo-phoned"
    return next(unit for unit in host.endpoints if unit not in ("nginx", "asterisk"))


def service_actions(events: Sequence[str], commands: Sequence[list[str]]) -> tuple[list[str], list[str]]:
    """(units stopped or restarted, units reloaded) in slices of the service and command logs; an
    `asterisk -rx "module reload http"` counts as reloading "asterisk (http)"."""
    restarted: list[str] = []
    reloaded: list[str] = []
    for event in events:
        action, _, unit = event.partition(" ")
        if action in ("stop", "restart") and unit not in restarted:
            restarted.append(unit)
        elif action == "reload" and unit not in reloaded:
            reloaded.append(unit)
    for argv in commands:
        if argv[:1] == ["asterisk"] and "-rx" in argv and "reload" in " ".join(argv).split() \
                and "asterisk (http)" not in reloaded:
            reloaded.append("asterisk (http)")
    return restarted, reloaded


# -- certbot ----------------------------------------------------------------------------------
def checked(result: subprocess.CompletedProcess[str], what: str) -> None:
    """Raise with certbot's last words when a setup step failed."""
    if result.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {result.returncode}):\n"
                           f"{(result.stdout + result.stderr)[-2000:]}")


def renew(cb: Certbot, name: str) -> tuple[float, subprocess.CompletedProcess[str]]:
    """`certbot renew --force-renewal --cert-name NAME`, timed."""
    began = time.monotonic()
    result = cb.run("renew", "--force-renewal", "--cert-name", name, timeout=300)
    return time.monotonic() - began, result


def failure_tail(result: subprocess.CompletedProcess[str]) -> str:
    """The end of what a failed command printed."""
    return "" if result.returncode == 0 else (result.stdout + result.stderr)[-1500:]


# -- one generation ---------------------------------------------------------------------------
def measure_renewal(cb: Certbot, host: SandboxHost, timers: Path, run: int) -> dict[str, Any]:
    """One renewal under client load."""
    units = ["nginx", daemon_unit(host)]
    loops = {unit: HandshakeLoop(host.endpoints[unit], host.name, HANDSHAKE_INTERVAL) for unit in units}
    for loop in loops.values():
        loop.start()
    try:
        began = time.monotonic()
        while not all(loop.succeeded_since(began) for loop in loops.values()):
            if time.monotonic() - began > 10:
                raise RuntimeError(f"{host.root}: no TLS handshake with {units} before the renewal")
            time.sleep(0.01)
        mark, starts, wall = len(host.events()), host.asterisk_starts(), time.time_ns()
        command_mark = len(host.commands())
        start = time.monotonic()
        seconds, result = renew(cb, host.name)
        restart = restart_seconds(timers, wall, time.time_ns())
        time.sleep(TAIL)
        end = time.monotonic()
    finally:
        for loop in loops.values():
            loop.stop()
    events, commands = host.events()[mark:], host.commands()[command_mark:]
    restarted, reloaded = service_actions(events, commands)
    started_again = host.asterisk_starts() - starts
    return {"run": run, "ok": result.returncode == 0, "seconds": seconds,
            "restart_command_seconds": restart, "daemon": units[1],
            "endpoints": {unit: loop.result(start, end).as_json() for unit, loop in loops.items()},
            "services_restarted": restarted, "services_reloaded": reloaded,
            "asterisk_restarted": "asterisk" in restarted or started_again > 0,
            "asterisk_starts": started_again, "events": events, "commands": commands,
            "error": failure_tail(result)}


def measure_overhead(cb: Certbot, host: SandboxHost, timers: Path, run: int) -> dict[str, Any]:
    """T_wazo and T_plain without load, alternating which goes first."""
    figures: dict[str, Any] = {"run": run, "first": "wazo" if run % 2 == 0 else "plain"}
    errors = []
    for which in (("wazo", "plain") if run % 2 == 0 else ("plain", "wazo")):
        wall = time.time_ns()
        seconds, result = renew(cb, host.name if which == "wazo" else PLAIN_NAME)
        figures[f"{which}_seconds"] = seconds
        if which == "wazo":
            figures["restart_command_seconds"] = restart_seconds(timers, wall, time.time_ns())
            figures["in_plugin_seconds"], figures["services_back_seconds"] = \
                in_plugin_seconds(cb.logs_dir / "letsencrypt.log")
        if result.returncode != 0:
            errors.append(f"{which}: {failure_tail(result)}")
    plain = figures["plain_seconds"]
    plugin = figures["wazo_seconds"] - figures["restart_command_seconds"] - plain
    direct = figures["in_plugin_seconds"] - figures["services_back_seconds"]
    figures.update(ok=not errors, plugin_seconds=plugin, ratio=plugin / plain,
                   direct_seconds=direct, direct_ratio=direct / plain, error="\n".join(errors))
    return figures


def in_plugin_seconds(log: Path) -> tuple[float, float]:
    """The time certbot spent in the plugin's methods during its last run, and of that the
    time from the first restart command until every endpoint served the new certificate (the
    services' own time), from certbot's debug log (installer.py logs each method: "certbot-
    wazo: METHOD took S s"; deployment.py the restart phase)."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return float("nan"), float("nan")
    text = text[text.rfind(RUN_START):]  # certbot appends each run to the same log here
    return (sum(float(m.group(1)) for m in IN_PLUGIN.finditer(text)),
            sum(float(m.group(1)) for m in SERVICES_BACK.finditer(text)))


def measure_status(cb: Certbot, host: SandboxHost, runs: int) -> list[dict[str, Any]]:
    """certbot-wazo status on the healthy host: one warm-up, then `runs` timed calls."""
    command = [str(Path(cb.argv[0]).parent / "certbot-wazo"), "status", "--root", str(host.root),
               "--config-dir", str(cb.config_dir)]
    samples = []
    for index in range(runs + 1):
        began = time.monotonic()
        result = subprocess.run(command, capture_output=True, text=True, env=cb.env(), timeout=120)
        seconds = time.monotonic() - began
        if index:
            samples.append({"seconds": seconds, "exit": result.returncode,
                            "error": "" if result.returncode == 0 else result.stdout[-1500:]})
    return samples


def bench_generation(generation: str, pebble: Pebble, variant: list[str], work: Path,
                     runs: int) -> dict[str, Any]:
    """Build, start and migrate one host, then measure `runs` renewals and overhead pairs."""
    out: dict[str, Any] = {"renewals": [], "overhead": [], "status": []}
    progress(f"{generation}: building and starting a sandbox host")
    with build_host(work / generation / "root", generation) as host:
        timers = install_restart_timers(host)
        host.start()
        cb = Certbot(variant, pebble, work / generation / "certbot")
        progress(f"{generation}: migration (certbot run -i wazo; not measured)")
        checked(cb.run("run", *cb.standalone_args(), "-i", "wazo", "--wazo-root", str(host.root),
                       "--wazo-probe-timeout", "30", "-d", host.name), "the migration")
        if generation == "legacy":
            progress(f"{generation}: certbot-wazo status x{runs}")
            out["status"] = measure_status(cb, host, runs)
        checked(cb.run("certonly", *cb.standalone_args(), "-d", PLAIN_NAME),
                "certonly for the lineage without installer")
        out["endpoints"] = dict(host.endpoints)
        for run in range(runs):
            progress(f"{generation}: run {run + 1}/{runs}: renewal under client load")
            out["renewals"].append(measure_renewal(cb, host, timers, run))
            progress(f"{generation}: run {run + 1}/{runs}: overhead pair (renew with and without -i wazo)")
            out["overhead"].append(measure_overhead(cb, host, timers, run))
        run = runs
        while runs >= 3 and undecided([o["ratio"] for o in out["overhead"]]) \
                and run < MORE_PAIRS * runs:
            progress(f"{generation}: the overhead's spread crosses zero: pair {run + 1} (at most "
                     f"{MORE_PAIRS * runs})")
            out["overhead"].append(measure_overhead(cb, host, timers, run))
            run += 1
    return out


def undecided(ratios: Sequence[float]) -> bool:
    """Whether the middle half of the overhead pairs holds figures of both signs: the noise of a
    pair (two ~3 s certbot runs) then hides the plugin's own cost, and more pairs are needed."""
    ordered = sorted(ratios)
    quarter = len(ordered) // 4
    middle = ordered[quarter:len(ordered) - quarter]
    return bool(middle) and middle[0] < 0 < middle[-1]


# -- probe benchmark --------------------------------------------------------------------------
def bench_probe(work: Path, counts: Sequence[int], runs: int) -> dict[str, list[dict[str, Any]]]:
    """probe_until over K listeners coming up after staggered delays (the slowest at PROBE_SLOWEST)."""
    name = "probe.bench.test"
    cert, key = CA("Bench").issue(work, names=(name,))
    context, der = server_context(cert, key), leaf_der(cert)
    results: dict[str, list[dict[str, Any]]] = {}
    for count in counts:
        results[str(count)] = []
        for _ in range(runs):
            ports = free_ports(count)
            listeners = [DelayedListener(port, context, PROBE_SLOWEST * (i + 1) / count)
                         for i, port in enumerate(ports)]
            endpoints = [tls.Endpoint("127.0.0.1", port) for port in ports]
            t0 = time.monotonic()
            for listener in listeners:
                listener.start(t0)
            try:
                probes = tls.probe_until(endpoints, name, der, PROBE_TIMEOUT, verify=False)
                elapsed = time.monotonic() - t0
            finally:
                for listener in listeners:
                    listener.stop()
            ups = [listener.up_at for listener in listeners]
            up = [u for u in ups if u is not None]
            slowest = max(up) - t0 if len(up) == len(ups) else float("nan")
            results[str(count)].append({
                "ok": all(p.ok for p in probes) and len(up) == len(ups), "elapsed": elapsed,
                "slowest_up": slowest, "lag": elapsed - slowest,
                "failures": tls.describe_failures(probes) or ""})
    return results


# -- report -----------------------------------------------------------------------------------
def _endpoint(renewals: list[dict[str, Any]], role: str, key: str) -> list[float]:
    return [r["endpoints"][r["daemon"] if role == "daemon" else "nginx"][key] for r in renewals]


def per_generation(data: dict[str, Any]) -> dict[str, dict[str, list[float]]]:
    """Raw series per generation, for the table, the summary and the goals."""
    series: dict[str, dict[str, list[float]]] = {}
    for generation, figures in data["generations"].items():
        renewals, overhead = figures["renewals"], figures["overhead"]
        series[generation] = {
            "renewal_seconds": [r["seconds"] for r in renewals],
            "nginx_failed": _endpoint(renewals, "nginx", "failed"),
            "nginx_outage_ms": _endpoint(renewals, "nginx", "longest_outage_ms"),
            "daemon_failed": _endpoint(renewals, "daemon", "failed"),
            "daemon_outage_ms": _endpoint(renewals, "daemon", "longest_outage_ms"),
            "services_restarted": [len(r["services_restarted"]) for r in renewals],
            "services_reloaded": [len(r["services_reloaded"]) for r in renewals],
            "asterisk_restarted": [1.0 if r["asterisk_restarted"] else 0.0 for r in renewals],
            "restart_command_seconds": [r["restart_command_seconds"] for r in renewals],
            "wazo_seconds": [o["wazo_seconds"] for o in overhead],
            "plain_seconds": [o["plain_seconds"] for o in overhead],
            "overhead_restart_seconds": [o["restart_command_seconds"] for o in overhead],
            "plugin_seconds": [o["plugin_seconds"] for o in overhead],
            "overhead_percent": [o["ratio"] * 100 for o in overhead],
            "direct_seconds": [o["direct_seconds"] for o in overhead],
            "direct_percent": [o["direct_ratio"] * 100 for o in overhead],
            "failed_commands": [float(sum(not r["ok"] for r in renewals)
                                      + sum(not o["ok"] for o in overhead))],
        }
    return series


ROWS = (  # (series key, label, format)
    ("renewal_seconds", "certbot renew under client load (s)", "{:.2f}"),
    ("nginx_failed", "nginx: failed handshakes", "{:.0f}"),
    ("nginx_outage_ms", "nginx: longest outage (ms)", "{:.0f}"),
    ("daemon_failed", "daemon: failed handshakes", "{:.0f}"),
    ("daemon_outage_ms", "daemon: longest outage (ms)", "{:.0f}"),
    ("services_restarted", "services stopped/restarted", "{:.0f}"),
    ("services_reloaded", "services reloaded", "{:.0f}"),
    ("asterisk_restarted", "asterisk restarted (1 = yes)", "{:.0f}"),
    ("restart_command_seconds", "time in restart commands (s)", "{:.2f}"),
    ("wazo_seconds", "overhead: renew with -i wazo (s)", "{:.2f}"),
    ("overhead_restart_seconds", "overhead: of which restarts (s)", "{:.2f}"),
    ("plain_seconds", "overhead: renew, no installer (s)", "{:.2f}"),
    ("plugin_seconds", "overhead: plugin, restarts excluded (s)", "{:.3f}"),
    ("overhead_percent", "overhead: plugin / plain renew (%)", "{:.1f}"),
    ("direct_seconds", "in the plugin's methods, restarts excluded (s)", "{:.3f}"),
    ("direct_percent", "  / plain renew (%): the goal's figure", "{:.1f}"),
)


def goals(series: dict[str, dict[str, list[float]]], data: dict[str, Any]) -> list[Goal]:
    """The issue's goals, each with its value and verdict."""
    result = []
    for generation, s in series.items():
        result += [
            goal(f"nginx failed handshakes during a certificate-only renewal ({generation})", "= 0",
                 s["nginx_failed"], "max", lambda v: v == 0),
            goal(f"asterisk restarted by a renewal ({generation})", "= 0",
                 s["asterisk_restarted"], "max", lambda v: v == 0),
            goal(f"plugin overhead, % of a renewal ({generation})", f"≤ {OVERHEAD_GOAL:g}",
                 s["direct_percent"], "median", lambda v: v <= OVERHEAD_GOAL),
        ]
    largest = str(max(int(k) for k in data["probe"]))
    result.append(goal(f"probe lag over the slowest service, {largest} endpoints (s)", "≤ 0.2",
                       [p["lag"] for p in data["probe"][largest]], "median", lambda v: v <= 0.2))
    status = data["generations"].get("legacy", {}).get("status", [])
    result.append(goal("certbot-wazo status on a healthy legacy host (s)", f"≤ {STATUS_GOAL:g}",
                       [s["seconds"] for s in status], "median", lambda v: v <= STATUS_GOAL))
    failed = sum(v for s in series.values() for v in s["failed_commands"])
    failed += sum(not p["ok"] for runs in data["probe"].values() for p in runs)
    failed += sum(s["exit"] != 0 for s in status)
    result.append(goal("failed renewals, probes or status calls (figures are void otherwise)",
                       "= 0", [failed], "max", lambda v: v == 0))
    return result


def render(data: dict[str, Any], series: dict[str, dict[str, list[float]]],
           verdicts: Sequence[Goal]) -> str:
    """The printed report."""
    generations = list(series)
    daemons = {g: data["generations"][g]["renewals"][0]["daemon"]
               for g in generations if data["generations"][g]["renewals"]}
    columns = [f"{g} (daemon: {daemons.get(g, '-')})" for g in generations]
    rows = [Row(label, [cell(summary(series[g][key]), fmt) for g in generations])
            for key, label, fmt in ROWS]
    meta = data["meta"]
    parts = [f"certbot-wazo renewal benchmark: {meta['runs']} run(s) per generation, certbot "
             f"{meta['certbot']} ({meta['certbot_variant']}), {meta['cpus']} CPU(s), load average "
             f"{meta['loadavg_start'][0]:.2f} at the start, {meta['loadavg_end'][0]:.2f} at the end; "
             "cells: median [min–max]", "",
             table("renewal", columns, rows), ""]
    probe_rows = [Row(f"{count} endpoint(s): lag over the slowest (s)",
                      [cell(summary([p["lag"] for p in runs]), "{:.3f}"),
                       cell(summary([p["elapsed"] for p in runs]), "{:.3f}"),
                       cell(summary([p["slowest_up"] for p in runs]), "{:.3f}")])
                  for count, runs in data["probe"].items()]
    parts += [table("probe_until, staggered services", ["lag", "elapsed", "slowest up"], probe_rows), ""]
    status = data["generations"].get("legacy", {}).get("status", [])
    parts += [table("certbot-wazo status", ["seconds"],
                    [Row("healthy legacy host, wall time (s)",
                         [cell(summary([s["seconds"] for s in status]), "{:.3f}")])]), ""]
    parts += ["Goals:", *(f"  {g.line()}" for g in verdicts)]
    return "\n".join(parts)


def certbot_version(python: str) -> str:
    """The version of the certbot this launcher runs."""
    result = subprocess.run([python, "-c", "import certbot; print(certbot.__version__)"],
                            capture_output=True, text=True, timeout=60)
    return result.stdout.strip() or "?"


# -- main -------------------------------------------------------------------------------------
def parse(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    """Command line."""
    parser = argparse.ArgumentParser(prog="python -m tests.bench.renewal",
                                     description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=5, metavar="N",
                        help="renewals (and overhead pairs, probe rounds, status calls) per "
                             "generation (default 5)")
    parser.add_argument("--short", action="store_true",
                        help="CI mode: 1 run, probe benchmark with 1 and 12 endpoints")
    parser.add_argument("--json", type=Path, default=REPO / "bench-results.json", metavar="FILE",
                        help="where to write every figure (default: bench-results.json at the repo root)")
    parser.add_argument("--check", action="store_true", help="exit 1 when a goal is missed")
    parser.add_argument("--certbot", default="pypi", choices=("pypi", "debian"),
                        help="which certbot runs the renewals (default pypi: the repo's .venv)")
    args = parser.parse_args(argv)
    if args.short:
        args.runs = 1
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every measurement; the figures as a JSON-ready dict."""
    variants = certbot_variants()
    if args.certbot not in variants:
        raise RuntimeError(f"certbot variant {args.certbot!r} is not installed (have "
                           f"{sorted(variants)}; run `make bootstrap`)")
    variant = variants[args.certbot]
    data: dict[str, Any] = {"meta": {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "runs": args.runs, "short": args.short, "certbot_variant": args.certbot,
        "certbot": certbot_version(variant[0]), "python": platform.python_version(),
        "cpus": os.cpu_count(), "loadavg_start": os.getloadavg(),
        "handshake_interval_s": HANDSHAKE_INTERVAL, "tail_s": TAIL,
        "probe_slowest_s": PROBE_SLOWEST}, "generations": {}}
    with tempfile.TemporaryDirectory(prefix="certbot-wazo-bench-") as tmp, Pebble() as pebble:
        work = Path(tmp)
        progress("starting pebble")
        pebble.start(work / "pebble")
        for generation in GENERATIONS:
            data["generations"][generation] = bench_generation(generation, pebble, variant, work,
                                                               args.runs)
        counts = PROBE_COUNTS_SHORT if args.short else PROBE_COUNTS
        progress(f"probe_until over {', '.join(map(str, counts))} staggered endpoint(s)")
        (work / "probe").mkdir()
        data["probe"] = bench_probe(work / "probe", counts, args.runs)
        progress("stopping pebble, removing the sandboxes")
    return data


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the benchmark, print the table and goals, write the JSON."""
    args = parse(argv)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        data = run(args)
    except KeyboardInterrupt:
        print("bench: interrupted; every sandbox process was stopped", file=sys.stderr)
        return 130
    data["meta"]["seconds"] = round(time.monotonic() - START, 1)
    data["meta"]["loadavg_end"] = os.getloadavg()
    series = per_generation(data)
    verdicts = goals(series, data)
    print(render(data, series, verdicts))
    missed = [g for g in verdicts if not g.passed]
    data["goals"] = [g.as_json() for g in verdicts]
    data["summary"] = {g: {key: summary(values) for key, values in s.items()} for g, s in series.items()}
    data["summary"]["probe"] = {k: summary([p["lag"] for p in v]) for k, v in data["probe"].items()}
    data["summary"]["status"] = summary([s["seconds"] for s in
                                         data["generations"].get("legacy", {}).get("status", [])])
    args.json.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    print(f"\n{len(missed)} goal(s) missed; figures in {args.json} "
          f"({data['meta']['seconds']:.0f} s)")
    return 1 if missed and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
