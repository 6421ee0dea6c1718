"""Mail when a run ends (SPEC §9): ``all:`` addresses always, ``error:`` addresses when the run
did not succeed, from the job's and the project's ``notifications`` both.

The server is ``ANNA_RUN_SMTP_URL`` (``smtp://`` or ``smtps://``, optional ``user:password@``;
STARTTLS when a plain server offers it), the sender ``ANNA_RUN_SMTP_FROM``. A mail is one
attempt with a short timeout and one retry; what cannot be sent comes back as a warning text for
the run's log. Mail never changes a run: nothing here raises for a mail that failed.
"""

from __future__ import annotations

import os
import re
import smtplib
import socket
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import unquote, urlsplit

from .errors import ConfigError
from .project import Job, Notifications, Project
from .record import RunRecord

SMTP_URL_ENV = "ANNA_RUN_SMTP_URL"
SMTP_FROM_ENV = "ANNA_RUN_SMTP_FROM"
TIMEOUT_S = 5.0  # per attempt: a mail server that does not answer must not hold the run's end up
RETRY_PAUSE_S = 1.0
_TEMPLATE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_EMAIL = re.compile(r"[^@\s,<>]+@[^@\s,<>]+\.[^@\s,<>]+")
_SEND_ERRORS = (OSError, smtplib.SMTPException, ssl.SSLError)


@dataclass(frozen=True)
class SmtpServer:
    """Where mail goes: ``implicit_tls`` for ``smtps://``, else STARTTLS when the server offers it."""

    host: str
    port: int
    implicit_tls: bool = False
    user: str | None = None
    password: str | None = None

    @classmethod
    def from_url(cls, url: str) -> SmtpServer:
        """The server named by ``url``; ConfigError (naming no password) when it is malformed."""
        parts = urlsplit(url.strip())
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ConfigError(
                f"{SMTP_URL_ENV} must be smtp://host[:port] or smtps://user:password@host[:port]",
                hint="e.g. smtp://127.0.0.1:25 or smtps://me:secret@mail.example.com:465",
            )
        try:
            port = parts.port
        except ValueError:
            raise ConfigError(f"{SMTP_URL_ENV}: the port is not a number from 1 to 65535") from None
        tls = parts.scheme == "smtps"
        return cls(
            host=parts.hostname,
            port=port or (465 if tls else 25),
            implicit_tls=tls,
            user=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
        )

    def __str__(self) -> str:  # for messages: never the password
        return f"{'smtps' if self.implicit_tls else 'smtp'}://{self.host}:{self.port}"


def smtp_from_env(environ: Mapping[str, str] | None = None) -> SmtpServer | None:
    """The configured server, None when ``ANNA_RUN_SMTP_URL`` is not set."""
    url = (os.environ if environ is None else environ).get(SMTP_URL_ENV, "").strip()
    return SmtpServer.from_url(url) if url else None


def smtp_note(project: Project, environ: Mapping[str, str] | None = None) -> str | None:
    """What `validate` says once when the project asks for mail and no SMTP server is set."""
    wanted = [project.notifications, *(job.notifications for job in project.jobs)]
    if not any(n and (n.all or n.error) for n in wanted):
        return None
    if (os.environ if environ is None else environ).get(SMTP_URL_ENV, "").strip():
        return None
    return f"note: notifications are configured but {SMTP_URL_ENV} is not set: no mail is sent"


def recipients(project: Project, job: Job, record: RunRecord) -> tuple[str, ...]:
    """The addresses this run's end is mailed to, in file order, each once. A ``${VAR}`` address
    takes the run's (recorded, so masked) value; one that does not resolve to an address is left out."""
    lists: list[Notifications] = [n for n in (job.notifications, project.notifications) if n is not None]
    failed = record.status != "succeeded"
    found: dict[str, None] = {}
    for notifications in lists:
        for address in (*notifications.all, *(notifications.error if failed else ())):
            resolved = _TEMPLATE.sub(lambda m: record.variables.get(m[1] or m[2], ""), address).strip()
            if _EMAIL.fullmatch(resolved):
                found.setdefault(resolved.lower(), None)
    return tuple(found)


def message(
    project: Project, job: Job, record: RunRecord, *, sender: str, to: tuple[str, ...], mask: Callable[[str], str]
) -> EmailMessage:
    """The mail: subject and body name the project, job, run, status, reason and duration, masked."""
    name = Path(record.project_root).name if record.project_root else project.root.name
    duration = f"{record.duration_s:.1f} s" if record.duration_s is not None else "-"
    subject = f"[anna-run] {name} / {job.name}: {record.status} (run {record.id})"
    body = "\n".join(
        [
            f"Project:   {name} ({record.project})",
            f"Job:       {job.name}",
            f"Run:       {record.id}",
            f"Status:    {record.status}",
            f"Reason:    {record.reason or '-'}",
            f"Exit code: {record.exit_code if record.exit_code is not None else '-'}",
            f"Duration:  {duration}",
            f"Started:   {record.started_at or '-'}",
            f"Finished:  {record.finished_at or '-'}",
            f"Host:      {record.host or '-'}",
            "",
            f"See it with: anna-run show {record.id}   (and: anna-run logs {record.id})",
            "",
        ]
    )
    msg = EmailMessage()
    msg["Subject"] = " ".join(mask(subject).split())  # no line break can reach a header
    msg["From"] = sender
    msg["To"] = ", ".join(to)
    msg["X-Anna-Run-Id"] = record.id
    msg.set_content(mask(body))
    return msg


def send(server: SmtpServer, msg: EmailMessage, *, timeout: float = TIMEOUT_S) -> None:
    """Send ``msg`` once; raises OSError or smtplib.SMTPException."""
    context = ssl.create_default_context()
    local = socket.getfqdn()
    if server.implicit_tls:
        client: smtplib.SMTP = smtplib.SMTP_SSL(server.host, server.port, local, timeout=timeout, context=context)
    else:
        client = smtplib.SMTP(server.host, server.port, local, timeout=timeout)
    with client:
        client.ehlo()
        if not server.implicit_tls and client.has_extn("starttls"):
            client.starttls(context=context)
            client.ehlo()
        if server.user:
            client.login(server.user, server.password or "")
        client.send_message(msg)


def notify_run_end(project: Project, job: Job, record: RunRecord, mask: Callable[[str], str]) -> str | None:
    """Mail the end of the run ``record`` to whom the project asks. Returns None when all is well
    (or nothing was to be sent, or no SMTP server is set), else a warning text, masked, for the
    run's log. Never raises for mail: a run's status and exit code do not depend on it."""
    to = recipients(project, job, record)
    if not to:
        return None
    try:
        server = smtp_from_env()
    except ConfigError as exc:
        return mask(f"notification not sent: {exc.message}")
    if server is None:
        return None
    sender = os.environ.get(SMTP_FROM_ENV, "").strip() or f"anna-run@{socket.getfqdn()}"
    try:
        msg = message(project, job, record, sender=sender, to=to, mask=mask)
    except ValueError as exc:  # e.g. a sender the email package refuses
        return mask(f"notification not sent: {exc}")
    error: BaseException | None = None
    for attempt in range(2):
        if attempt:
            time.sleep(RETRY_PAUSE_S)
        try:
            send(server, msg)
            return None
        except _SEND_ERRORS as exc:
            error = exc
    return mask(f"notification to {', '.join(to)} not sent through {server} (2 attempts): {_why(error)}")


def _why(exc: BaseException | None) -> str:
    if isinstance(exc, smtplib.SMTPResponseException):
        text = exc.smtp_error
        return f"{exc.smtp_code} {text.decode(errors='replace') if isinstance(text, bytes) else text}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return f"{type(exc).__name__}: {exc}"
