"""E-mail what status finds wrong through the host's own MTA, at most once a day per problem."""
from __future__ import annotations

import email.message
import email.utils
import hashlib
import json
import logging
import re
import secrets
import socket
import textwrap
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

from certbot_wazo import services
from certbot_wazo.errors import CommandError, HostError, WazoError
from certbot_wazo.files import FileState
from certbot_wazo.host import Host
from certbot_wazo.pair import read_regular
from certbot_wazo.status import Report

logger = logging.getLogger(__name__)

# Where Wazo keeps its own alert recipients: /etc/xivo/common.conf, XIVO_ALERT_EMAILS, several
# addresses separated by spaces (wazo-platform/xivo-config wazo-18.03..wazo-23.16,
# sbin/xivo-create-config; monit's `set alert` lines were made from it). 15.12 writes "None"
# when unset; 24.04 dropped it. Without it, root: the local mailbox postfix delivers.
ALERT_VARIABLE = "XIVO_ALERT_EMAILS"
DEFAULT_RECIPIENT = "root"
# What was sent, per problem, in the host's state directory.
SENT_FILE = "alerts.json"
RESEND_AFTER = 24 * 3600
# A problem's identity: its text without the time left, which changes from one day to the next.
_TIME_LEFT = re.compile(r"\b\d+ (days?|hours?)\b")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# An address sendmail and the To header take as they are: ASCII local part (RFC 5322 atext and
# dots), optional @domain; nothing that reads as a group, a comment or an encoded word.
_ADDRESS = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+(@[A-Za-z0-9.-]+)?\Z")

Clock = Callable[[], float]


def recipients(host: Host, override: Optional[str] = None) -> list[str]:
    """Who gets the alerts: override (comma- or space-separated), else Wazo's alert
    addresses, else root.

    :raises HostError: an address is not one
    """
    text = override
    origin = "--alert-to"
    if not text:
        try:
            text = host.common_conf().get(ALERT_VARIABLE, "")
        except HostError:
            text = ""
        origin = str(host.path("/etc/xivo/common.conf"))
        if text.strip() == "None":  # xivo-15.12 writes None for "no address"
            text = ""
    found = [a for a in re.split(r"[\s,]+", text or "") if a]
    for address in found:
        if not _ADDRESS.match(address) or address.startswith("-"):
            raise HostError(f"{origin}: {address!r} is not an e-mail address (give "
                            "--alert-to ADDRESS)")
    return found or [DEFAULT_RECIPIENT]


def problem_key(problem: str) -> str:
    """The identity of a problem from one day to the next."""
    return hashlib.sha256(_TIME_LEFT.sub(r"# \1", problem).encode()).hexdigest()[:16]


def host_label(report: Report, where: Optional[str] = None) -> str:
    """How the mail names the host: the SSH destination, else the services' name, else this
    machine's name (a self-signed pair's "localhost" names nothing)."""
    if where:
        return where
    if report.hostname and report.hostname != "localhost":
        return report.hostname
    return socket.gethostname() or report.root


def message(report: Report, problems: Sequence[str], to: Sequence[str],
            extra: Sequence[str] = (), where: Optional[str] = None) -> bytes:
    """The alert: what is wrong, each with the command that fixes it, and where to look;
    plain text wrapped for a terminal's `mail`."""
    name = host_label(report, where)
    mail = email.message.EmailMessage()
    mail["To"] = ", ".join(to)
    first = " ".join(_CONTROL.sub(" ", problems[0]).split())
    head, sep, rest = first.partition(": ")
    if sep and head.startswith("/") and " " not in head:  # the file's name; its path is below
        first = f"{head.rsplit('/', 1)[-1]}: {rest}"
    first = first[:120]
    mail["Subject"] = f"certbot-wazo on {' '.join(name.split())}: {first}" + \
        (f" (and {len(problems) - 1} more)" if len(problems) > 1 else "")
    mail["Date"] = email.utils.formatdate(localtime=True)
    mail["Auto-Submitted"] = "auto-generated"
    body = [f"certbot-wazo found what needs attention on the Wazo host {name}:", ""]
    body += [textwrap.fill(problem, 76, initial_indent="- ", subsequent_indent="  ",
                           break_long_words=False, break_on_hyphens=False)
             for problem in problems]
    body += ["", *extra,
             "Each line says what fixes it. Then `certbot-wazo status` shows the host's state;",
             "`certbot-wazo retry` deploys a renewal whose deployment failed; `certbot renew`",
             "renews (certbot.timer runs both twice a day).", "",
             "You get this at most once a day for each problem."]
    mail.set_content("\n".join(body) + "\n")
    return bytes(mail)


def send(host: Host, report: Report, override: Optional[str] = None,
         extra_problems: Sequence[str] = (), clock: Clock = time.time,
         where: Optional[str] = None) -> tuple[list[str], list[str]]:
    """Mail the problems (extra_problems, then the report's) not mailed in the last day to
    recipients(host, override); remember what was sent, and forget what is solved (it is
    mailed again if it comes back).

    :returns: the problems mailed now, and to whom
    :raises WazoError: a recipient is invalid, or the MTA refused the message (nothing is
        recorded as sent)
    """
    problems = [*extra_problems, *report.problems]
    sent_path = host.path(f"/var/lib/certbot-wazo/{SENT_FILE}")
    sent = _load(sent_path)
    if not problems and not sent:
        return [], []
    state_dir = host.access.private_dir(sent_path.parent)
    now = clock()
    recorded = sent
    # A stamp in the future (a clock set back, a hand edit) would silence a problem for good:
    # it counts as never sent.
    sent = {key: stamp for key, stamp in sent.items() if stamp <= now}
    due = [p for p in problems
           if problem_key(p) not in sent or now - sent[problem_key(p)] >= RESEND_AFTER]
    keep = {problem_key(p): sent[problem_key(p)] for p in problems if problem_key(p) in sent}
    to: list[str] = []
    if due:
        to = recipients(host, override)
        _deliver(host, state_dir, message(report, due, to, where=where))
        keep.update({problem_key(p): now for p in due})
    if keep != recorded:
        host.access.apply_state(sent_path, FileState.file(
            json.dumps(keep, sort_keys=True).encode(), 0o600))
    return due, to


def _load(path: Path) -> dict[str, float]:
    """What was sent when (an unreadable record sends again: better twice than never)."""
    try:
        data = json.loads(read_regular(path))
    except (OSError, ValueError, WazoError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): float(v) for k, v in data.items() if isinstance(v, (int, float))}


def _deliver(host: Host, state_dir: Path, data: bytes) -> None:
    """Hand the message to the host's sendmail (postfix's), recipients from its To header.

    :raises WazoError: no sendmail, or it refused the message
    """
    sendmail = services.require(host, "sendmail")
    shell = services.require(host, "sh")
    for stale in state_dir.glob("alert-*.eml"):  # a run killed before removing its own
        try:
            if time.time() - stale.lstat().st_mtime > 3600:
                host.access.apply_state(stale, FileState.absent())
        except (OSError, WazoError) as exc:
            logger.warning("%s", exc)
    spool = state_dir / f"alert-{secrets.token_hex(6)}.eml"
    host.access.apply_state(spool, FileState.file(data, 0o600))
    try:
        host.access.run([str(shell), "-c", 'exec "$0" -t -oi < "$1"', str(sendmail),
                         str(spool)], timeout=120)
    except CommandError as exc:
        raise HostError(f"{sendmail}: could not send the alert ({exc})") from None
    finally:
        try:
            host.access.apply_state(spool, FileState.absent())
        except WazoError as exc:
            logger.warning("%s", exc)

