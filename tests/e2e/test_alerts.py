"""status --alert: what needs attention reaches the admin by e-mail through the host's MTA (the
sandbox's sendmail stand-in keeps each message), once a day per problem."""
from __future__ import annotations

import datetime
import email
import email.policy
import json
import os
import subprocess
import sys
from email.message import EmailMessage
from pathlib import Path
from typing import Optional

from tests.pki import CA
from tests.sandbox.host import SandboxHost
from tests.sandbox.stubs import OUTBOX

CLI = Path(sys.executable).with_name("certbot-wazo")
NOW = datetime.datetime.now(datetime.timezone.utc)


def _deploy(host: SandboxHost, ca: CA, bundle: Path, tmp: Path, days: int) -> None:
    crt, key = ca.issue(tmp / f"pair-{days}", names=[host.name],
                        not_before=NOW - datetime.timedelta(days=90 - days),
                        not_after=NOW + datetime.timedelta(days=days))
    result = subprocess.run([str(CLI), "deploy", "--root", str(host.root), "--cert", str(crt),
                             "--key", str(key), "--probe-timeout", "10"], capture_output=True,
                            text=True, timeout=120, env={**os.environ, "SSL_CERT_FILE": str(bundle)})
    assert result.returncode == 0, result.stderr


def _status(host: SandboxHost, bundle: Path, *args: str,
            env: Optional[dict[str, str]] = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CLI), "status", "--alert", "--root", str(host.root),
                           "--config-dir", str(host.root / "no-certbot"), *args],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "SSL_CERT_FILE": str(bundle), **(env or {})})


def _mails(host: SandboxHost) -> list[EmailMessage]:
    outbox = host.root / OUTBOX
    if not outbox.is_dir():
        return []
    return [email.message_from_bytes(p.read_bytes(), policy=email.policy.default)  # type: ignore[misc]
            for p in sorted(outbox.iterdir(), key=lambda p: int(p.stem))]


def _text(mail: EmailMessage) -> str:
    """The body with its line wrapping undone."""
    return " ".join(mail.get_content().split())


def _a_day_passes(host: SandboxHost) -> None:
    sent = host.root / "var/lib/certbot-wazo/alerts.json"
    data = json.loads(sent.read_text())
    sent.write_text(json.dumps({k: v - 86400 for k, v in data.items()}))


def test_an_expiring_certificate_is_mailed_once_a_day_to_root(modern_host: SandboxHost, ca: CA,
                                                              bundle: Path, tmp_path: Path) -> None:
    host = modern_host
    _deploy(host, ca, bundle, tmp_path, days=5)
    first = _status(host, bundle)
    assert first.returncode == 1
    assert "Alert about 1 problem(s) sent to root" in first.stdout
    [mail] = _mails(host)
    assert mail["To"] == "root"
    assert "expires in" in mail["Subject"] and host.name in mail["Subject"]
    body = _text(mail)
    assert "systemctl list-timers certbot.timer" in body and "certbot renew" in body
    assert (host.root / "var/lib/certbot-wazo/alerts.json").stat().st_mode & 0o077 == 0
    assert _status(host, bundle).returncode == 1
    assert len(_mails(host)) == 1  # not again the same day
    _a_day_passes(host)
    assert _status(host, bundle).returncode == 1
    assert len(_mails(host)) == 2
    _deploy(host, ca, bundle, tmp_path, days=80)
    healthy = _status(host, bundle)
    assert healthy.returncode == 0 and "Alert" not in healthy.stdout
    assert len(_mails(host)) == 2
    assert json.loads((host.root / "var/lib/certbot-wazo/alerts.json").read_text()) == {}


def test_wazo_alert_addresses_and_a_failed_certbot_run(legacy_host: SandboxHost, ca: CA,
                                                       bundle: Path, tmp_path: Path) -> None:
    """XIVO_ALERT_EMAILS (space-separated, as xivo-create-config writes it) gets the mail;
    certbot.service's failure (systemd's SERVICE_RESULT/EXIT_STATUS in ExecStopPost) is one of
    its problems even when the host itself is healthy."""
    host = legacy_host
    _deploy(host, ca, bundle, tmp_path, days=80)
    conf = host.root / "etc/xivo/common.conf"
    conf.write_text(conf.read_text() + 'XIVO_ALERT_EMAILS="pbx-admin@example.test ops@example.test"\n')
    assert _status(host, bundle).returncode == 0
    assert _mails(host) == []
    failed = _status(host, bundle, env={"SERVICE_RESULT": "exit-code", "EXIT_STATUS": "1"})
    [mail] = _mails(host)
    assert mail["To"] == "pbx-admin@example.test, ops@example.test"
    assert "certbot renew failed (exit-code, exit status 1" in _text(mail)
    assert "journalctl -u certbot" in _text(mail)
    assert "sent to pbx-admin@example.test, ops@example.test" in failed.stdout
    other = _status(host, bundle, "--alert-to", "noc@example.test",
                    env={"SERVICE_RESULT": "timeout", "EXIT_STATUS": "0",
                         "CERTBOT_WAZO_UNIT": "certbot-wazo-repair"})
    assert other.returncode == 0
    assert _mails(host)[-1]["To"] == "noc@example.test"
    body = _text(_mails(host)[-1])
    assert "certbot-wazo-repair.service failed (timeout" in body
    assert "journalctl -u certbot-wazo-repair" in body and "certbot renew failed" not in body


def test_a_refusing_mta_is_one_line_and_the_alert_is_sent_later(modern_host: SandboxHost, ca: CA,
                                                                bundle: Path, tmp_path: Path) -> None:
    host = modern_host
    _deploy(host, ca, bundle, tmp_path, days=3)
    host.fault("sendmail.fail")
    refused = _status(host, bundle)
    assert refused.returncode == 1
    assert "could not send the alert" in refused.stderr and "queue file write error" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
    assert not list((host.root / "var/lib/certbot-wazo").glob("alert-*"))
    host.fault("sendmail.fail", on=False)
    assert _status(host, bundle).returncode == 1
    assert len(_mails(host)) == 1


def test_a_bad_alert_address_is_named(modern_host: SandboxHost, ca: CA, bundle: Path,
                                      tmp_path: Path) -> None:
    host = modern_host
    _deploy(host, ca, bundle, tmp_path, days=3)
    result = _status(host, bundle, "--alert-to=-oQ/tmp/x")
    assert result.returncode == 1
    assert "--alert-to: '-oQ/tmp/x' is not an e-mail address" in result.stderr
    assert _mails(host) == []
