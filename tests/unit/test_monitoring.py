"""status for monitoring systems: Nagios/Icinga plugin lines and codes, Prometheus textfiles."""
from __future__ import annotations

from pathlib import Path

import pytest

from certbot_wazo import cli, monitoring
from certbot_wazo.status import Report

NOT_AFTER = "2031-01-01T00:00:00+00:00"


def report(days: int = 60, problems: tuple[str, ...] = (), ok: bool = True) -> Report:
    return Report(root="/", hostname="wazo.example.com",
                  pair={"days_left": days, "not_after": NOT_AFTER},
                  endpoints=[{"endpoint": "127.0.0.1:443 (nginx)", "ok": ok, "detail": ""}],
                  problems=list(problems), last_success=1700000000.0)


@pytest.mark.parametrize("days, problems, ok, code", [
    (60, (), True, monitoring.OK),
    (10, ("/x/server.crt: expires in 10 days (check that renewal runs)",), True,
     monitoring.WARNING),
    (3, ("/x/server.crt: expires in 3 days (check that renewal runs)",), True,
     monitoring.CRITICAL),
    (60, ("127.0.0.1:443 (nginx) still serves the previous certificate",), False,
     monitoring.CRITICAL),
])
def test_the_plugin_state_follows_what_is_wrong(days: int, problems: tuple[str, ...], ok: bool,
                                                code: int) -> None:
    line, got = monitoring.nagios(report(days, problems, ok))
    assert got == code
    assert line.startswith(f"CERTBOT-WAZO {monitoring.STATES[code]} - wazo.example.com: "
                           f"{days} days left")
    text, perf = line.split(" | ")
    assert perf.split()[0] == f"days_left={days};14:;7:"
    assert (problems[0] in text) if problems else "expires" not in text


def test_several_hosts_report_the_worst_state_critical_first() -> None:
    assert monitoring.worst([monitoring.OK, monitoring.UNKNOWN, monitoring.CRITICAL]) == \
        monitoring.CRITICAL
    assert monitoring.worst([monitoring.WARNING, monitoring.UNKNOWN]) == monitoring.UNKNOWN
    assert monitoring.worst([]) == monitoring.OK


def test_the_textfile_has_each_metric_once_and_a_sample_per_host() -> None:
    text = monitoring.prometheus_many([(report(), "root@pbx-a"),
                                       (report(ok=False, problems=("x",)), 'root@"b"')])
    assert text.count("# TYPE certbot_wazo_healthy gauge") == 1
    assert 'certbot_wazo_healthy{host="root@pbx-a"} 1' in text
    assert 'certbot_wazo_healthy{host="root@\\"b\\""} 0' in text  # the exposition escapes
    assert 'certbot_wazo_certificate_expiry_timestamp_seconds{host="root@pbx-a"} 1924992000' \
        in text
    assert 'certbot_wazo_last_success_timestamp_seconds{host="root@pbx-a"} 1700000000' in text
    assert 'certbot_wazo_endpoint_up{host="root@pbx-a",endpoint="127.0.0.1:443 (nginx)"} 1' \
        in text
    assert text.endswith("\n")


def test_a_host_that_cannot_be_checked_is_unknown(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "ssh_config"
    config.write_text("")
    code = cli.main(["status", "--nagios", "--ssh", "root@nohost.invalid", "--ssh-config",
                     str(config)])
    out = capsys.readouterr().out.strip().splitlines()
    assert code == monitoring.UNKNOWN
    assert out == [out[0]] and out[0].startswith("CERTBOT-WAZO UNKNOWN - root@nohost.invalid: ")


def test_a_host_without_a_certificate_is_critical(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(["status", "--nagios", "--root", str(tmp_path)])
    [line] = capsys.readouterr().out.strip().splitlines()
    assert code == monitoring.CRITICAL and line.startswith("CERTBOT-WAZO CRITICAL - ")


def test_the_textfile_is_written_atomically_and_readable_by_the_collector(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prom = tmp_path / "certbot_wazo.prom"
    cli.main(["status", "--root", str(tmp_path), "--prometheus", str(prom)])
    assert "certbot_wazo_healthy" in prom.read_text()
    assert prom.stat().st_mode & 0o777 == 0o644


def test_a_six_day_certificate_has_thresholds_of_its_lifetime() -> None:
    """2 and 1 days (a third and a sixth), not 14 and 7: every healthy 6-day certificate would
    otherwise graph as critical."""
    report = Report(root="/", hostname="pbx.example.test", pair={
        "days_left": 1, "not_before": "2026-01-01T00:00:00+00:00",
        "not_after": "2026-01-07T00:00:00+00:00"},
        problems=["/c/server.crt: expires in 35 hours (check that renewal runs)"])
    line, code = monitoring.nagios(report)
    assert "days_left=1;2:;1:" in line
    assert code == monitoring.WARNING
