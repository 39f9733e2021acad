"""A 6-day certificate cycle end to end, time-compressed (one day = DAY seconds): pebble issues
6-day certificates, the host's nginx answers HTTP-01 (--configurator wazo), and Debian's
certbot.timer path renews and deploys: `certbot -q renew`, then the drop-in's ExecStopPost
commands (hooks/certbot-wazo.conf), at 00:00 and 12:00 each plus a random delay of up to 12
hours (certbot's Debian certbot.timer: OnCalendar twice a day, RandomizedDelaySec=43200).

With `renew_before_expiry = 4 days` (README), a renewal starts with at least 3 days left even
when a timer run comes as late as it can, and one failed run still leaves 2: the host never
serves a certificate within 2 days of its expiry."""
from __future__ import annotations

import random
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest
from cryptography import x509

from tests.bench.handshakes import HandshakeLoop
from tests.sandbox.acme import Pebble
from tests.sandbox.certbot import Certbot, certbot_variants
from tests.sandbox.common import REPO
from tests.sandbox.host import SandboxHost, build_host

DAY = 10.0  # seconds
LIFETIME_DAYS = 6
CYCLE = 1.3 * LIFETIME_DAYS * DAY  # timer runs over 7.8 days: renewals near days 2 and 4.5 (and 7)
CLI = Path(sys.executable).with_name("certbot-wazo")


@pytest.fixture(scope="module")
def short_pebble(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pebble]:
    with Pebble(validity=int(LIFETIME_DAYS * DAY)) as server:
        server.start(tmp_path_factory.mktemp("pebble-6-days"))
        yield server


@pytest.fixture
def host(tmp_path: Path, short_pebble: Pebble) -> Iterator[SandboxHost]:
    built = build_host(tmp_path / "root", "modern", http_port=short_pebble.http_port)
    try:
        built.start()
        yield built
    finally:
        built.stop()


def _drop_in_commands(host: SandboxHost, cb: Certbot) -> list[list[str]]:
    """The drop-in's ExecStopPost lines as this sandbox runs them."""
    text = (REPO / "hooks/certbot-wazo.conf").read_text()
    commands = []
    for line in re.findall(r"^ExecStopPost=-(.+)$", text, re.M):
        argv = line.split()
        assert argv[0] == "/usr/bin/certbot-wazo", line
        extra = ["--config-dir", str(cb.config_dir)] if argv[1] == "status" else []
        commands.append([str(CLI), *argv[1:], "--root", str(host.root), *extra])
    return commands


def _expiry(der: bytes) -> float:
    return x509.load_der_x509_certificate(der).not_valid_after_utc.timestamp()


def _timer_runs(start: float, end: float, seed: int) -> list[float]:
    """certbot.timer's activations: twice a day, each delayed by up to half a day."""
    rng = random.Random(seed)
    runs, slot = [], start
    while slot < end:
        runs.append(slot + rng.uniform(0, DAY / 2))
        slot += DAY / 2
    return sorted(runs)


@pytest.mark.parametrize("variant", ["pypi", "debian"])
def test_six_day_certificates_through_the_timer(host: SandboxHost, short_pebble: Pebble,
                                                tmp_path: Path, variant: str) -> None:
    if variant not in certbot_variants():
        pytest.fail(f"certbot {variant} is not installed (run .ci/bootstrap)")
    cb = Certbot(certbot_variants()[variant], short_pebble, tmp_path / "certbot")
    wazo = ["--wazo-root", str(host.root), "--wazo-probe-timeout", "10"]
    first = cb.run("run", "--configurator", "wazo", "--http-01-port", str(short_pebble.http_port),
                   *wazo, "-d", host.name)
    assert first.returncode == 0, first.stderr[-3000:]
    renewal = cb.config_dir / "renewal" / f"{host.name}.conf"
    text = renewal.read_text()
    assert "authenticator = wazo" in text
    # What the README tells admins to set for 6-day certificates, in compressed time.
    renewal.write_text(text.replace("[renewalparams]",
                                    f"renew_before_expiry = {int(4 * DAY)} seconds\n\n"
                                    "[renewalparams]", 1))
    drop_in = _drop_in_commands(host, cb)
    start = time.monotonic()
    with HandshakeLoop(host.endpoints["nginx"], host.name, interval=0.1) as served:
        for at in _timer_runs(start, start + CYCLE, seed=sum(map(ord, variant))):
            time.sleep(max(0.0, at - time.monotonic()))
            # certbot.service's ExecStart (`certbot -q renew`; the timer's random delay is
            # _timer_runs', so not certbot's own random sleep)
            cb.run("renew", "-q", timeout=120)
            for argv in drop_in:  # its ExecStopPost, whatever renew did
                subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False,
                               env=cb.env())
    renewals = len(list((cb.config_dir / "archive" / host.name).glob("cert*.pem"))) - 1
    least_left = min(_expiry(der) - at for at, der in served.served)
    print(f"{variant}: {renewals} renewals, least time left served {least_left:.1f} s "
          f"({least_left / DAY:.2f} compressed days)")
    assert renewals >= 2, renewals
    assert len({der for _, der in served.served}) >= renewals  # each renewal was served
    assert served.failed() == 0
    assert least_left >= 2 * DAY, (least_left, renewals)
    status = subprocess.run([str(CLI), "status", "--root", str(host.root), "--config-dir",
                             str(cb.config_dir)], capture_output=True, text=True, timeout=60,
                            env=cb.env())
    # Within 14 "real" days: status warns about the expiry, as it would for any 6-day
    # certificate; what matters is that the newest lineage is the one installed.
    assert "is not the one installed" not in status.stdout, status.stdout
