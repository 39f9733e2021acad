"""Alert recipients, the identity of a problem, the message, and at most once a day."""
from __future__ import annotations

import email
import email.policy
import json
from pathlib import Path
from typing import Sequence

import pytest

from certbot_wazo import alerts
from certbot_wazo.errors import HostError
from certbot_wazo.host import Host
from certbot_wazo.status import Report


def _host(tmp_path: Path, common: str = "") -> Host:
    conf = tmp_path / "etc/xivo/common.conf"
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text(common)
    return Host(tmp_path)


@pytest.mark.parametrize(("common", "override", "expected"), [
    ('XIVO_ALERT_EMAILS="a@example.test b@example.test"\n', None, ["a@example.test", "b@example.test"]),
    ('XIVO_ALERT_EMAILS="None"\n', None, ["root"]),  # xivo-15.12 when unset
    ('XIVO_ALERT_EMAILS=""\n', None, ["root"]),
    ("", None, ["root"]),  # 24.04 on: gone
    ('XIVO_ALERT_EMAILS="a@example.test"\n', "noc@example.test,x@example.test",
     ["noc@example.test", "x@example.test"]),
])
def test_recipients(tmp_path: Path, common: str, override: str, expected: list[str]) -> None:
    assert alerts.recipients(_host(tmp_path, common), override) == expected


def test_a_bad_address_names_where_it_comes_from(tmp_path: Path) -> None:
    with pytest.raises(HostError, match=r"common.conf: '-oQ/x' is not an e-mail address"):
        alerts.recipients(_host(tmp_path, 'XIVO_ALERT_EMAILS="-oQ/x"\n'))
    with pytest.raises(HostError, match="--alert-to: 'a<b' is not"):
        alerts.recipients(_host(tmp_path), "a<b")
    for odd in ("x:y@z", "\u00e9@x.org", "a(b@c"):  # a group, an encoded word, a comment
        with pytest.raises(HostError, match="is not an e-mail address"):
            alerts.recipients(_host(tmp_path), odd)


def test_a_problem_keeps_its_identity_as_days_pass() -> None:
    assert alerts.problem_key("/c/server.crt: expires in 9 days (x)") == \
        alerts.problem_key("/c/server.crt: expires in 8 days (x)")
    assert alerts.problem_key("/c/server.crt: expires in 9 days") != \
        alerts.problem_key("/c/server.key: missing")
    assert alerts.problem_key("127.0.0.1:443 (nginx): fails") != \
        alerts.problem_key("127.0.0.1:9497 (wazo-auth): fails")


def test_the_message_says_what_and_how_to_fix() -> None:
    report = Report(root="/", hostname="pbx.example.test")
    data = alerts.message(report, ["one (fix: a)", "two"], ["a@example.test", "root"])
    mail = email.message_from_bytes(data, policy=email.policy.default)
    assert mail["To"] == "a@example.test, root"
    assert mail["Subject"] == "certbot-wazo on pbx.example.test: one (fix: a) (and 1 more)"
    assert mail["Auto-Submitted"] == "auto-generated"
    body = mail.get_content()  # type: ignore[attr-defined]
    assert "- one (fix: a)\n- two\n" in body and "certbot-wazo retry" in body


def test_the_subject_leads_with_what_is_wrong_however_long_the_path() -> None:
    """A deep root (a sandbox, a test's temporary directory) must not push "expires in" out of
    the subject: it names the file, the body its path."""
    report = Report(root="/", hostname="pbx.example.test")
    path = "/" + "/".join(["deep"] * 40) + "/usr/share/wazo-certs/server.crt"
    data = alerts.message(report, [f"{path}: expires in 4 days (check that renewal runs)"],
                          ["root"])
    mail = email.message_from_bytes(data, policy=email.policy.default)
    assert mail["Subject"] == ("certbot-wazo on pbx.example.test: server.crt: expires in 4 days "
                               "(check that renewal runs)")
    assert path in mail.get_content()  # type: ignore[attr-defined]


def test_a_problem_with_line_breaks_makes_a_one_line_subject() -> None:
    """nginx's or a command's output can end up in a problem: never a header injection."""
    report = Report(root="/", hostname="pbx.example.test")
    data = alerts.message(report, ["first line\nBcc: x@evil.test\r\n\tthird"], ["root"])
    mail = email.message_from_bytes(data, policy=email.policy.default)
    assert mail["Bcc"] is None
    assert mail["Subject"] == "certbot-wazo on pbx.example.test: first line Bcc: x@evil.test third"


def test_once_a_day_per_problem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    host = _host(tmp_path)
    sent: list[bytes] = []
    monkeypatch.setattr(alerts, "_deliver", lambda h, d, data: sent.append(data))
    now = [1000.0]

    def send(problems: Sequence[str]) -> list[str]:
        return alerts.send(host, Report(root="/", problems=list(problems)),
                           clock=lambda: now[0])[0]

    assert send(["a: expires in 9 days", "b"]) == ["a: expires in 9 days", "b"]
    assert send(["a: expires in 9 days", "b"]) == []
    now[0] += 3600
    assert send(["a: expires in 8 days", "c"]) == ["c"]  # a new problem goes out at once
    now[0] += 86400 - 3600
    assert send(["a: expires in 8 days"]) == ["a: expires in 8 days"]
    assert len(sent) == 3
    assert send([]) == []
    record = tmp_path / "var/lib/certbot-wazo/alerts.json"
    assert json.loads(record.read_text()) == {}
    assert record.stat().st_mode & 0o077 == 0


def test_a_refused_message_is_not_recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    host = _host(tmp_path)

    def refuse(*args: object) -> None:
        raise HostError("sendmail: refused")

    monkeypatch.setattr(alerts, "_deliver", refuse)
    with pytest.raises(HostError):
        alerts.send(host, Report(root="/", problems=["x"]))
    assert not (tmp_path / "var/lib/certbot-wazo/alerts.json").exists()


def test_a_killed_runs_message_file_is_removed_later(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A run killed between writing its message and removing it leaves alert-*.eml (0600) in
    the state directory: the next run removes it once it is an hour old, not a concurrent
    run's."""
    import os
    host = _host(tmp_path)
    state = tmp_path / "var/lib/certbot-wazo"
    state.mkdir(parents=True)
    old, fresh = state / "alert-0123456789ab.eml", state / "alert-ba9876543210.eml"
    for path in (old, fresh):
        path.write_text("To: root\n")
    os.utime(old, (0, 0))
    ran: list[list[str]] = []
    monkeypatch.setattr(alerts.services, "require", lambda h, name: Path(f"/usr/sbin/{name}"))
    monkeypatch.setattr(host.access, "run", lambda argv, timeout: ran.append(list(argv)) or "")
    alerts.send(host, Report(root="/", problems=["x"]))
    assert not old.exists() and fresh.exists()
    assert ran and ran[0][-1].startswith(str(state / "alert-"))
    assert sorted(p.name for p in state.glob("alert-*.eml")) == [fresh.name]


def test_a_stamp_in_the_future_does_not_silence_a_problem(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A clock set back (or a hand edit) leaves a stamp ahead of now: the problem is mailed
    now and the stamp replaced, instead of never again."""
    host = _host(tmp_path)
    sent: list[bytes] = []
    monkeypatch.setattr(alerts, "_deliver", lambda h, d, data: sent.append(data))
    record = tmp_path / "var/lib/certbot-wazo/alerts.json"
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({alerts.problem_key("x: broken"): 10.0 ** 12}))
    assert alerts.send(host, Report(root="/", problems=["x: broken"]), clock=lambda: 5000.0)[0] \
        == ["x: broken"]
    assert json.loads(record.read_text()) == {alerts.problem_key("x: broken"): 5000.0}
    assert len(sent) == 1


@pytest.mark.parametrize("kind", ["fifo", "device", "huge"])
def test_an_alert_record_that_is_not_a_small_file_is_read_as_empty(tmp_path: Path, kind: str) -> None:
    import os
    record = tmp_path / "alerts.json"
    if kind == "fifo":
        os.mkfifo(record)
    elif kind == "device":
        record.symlink_to("/dev/zero")
    else:
        with open(record, "wb") as stream:
            stream.truncate(2 * 1024 ** 3)
    assert alerts._load(record) == {}
