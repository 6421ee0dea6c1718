"""notify.py against a real SMTP server (aiosmtpd) on 127.0.0.1."""

from __future__ import annotations

import socket
import textwrap
import time
from email import message_from_bytes
from email.message import Message
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from anna_run import notify
from anna_run.notify import SmtpServer, notify_run_end, recipients, smtp_note
from anna_run.project import load_project
from anna_run.record import RunRecord

SECRET = "hunter2-s3cr3t"


class Inbox:
    def __init__(self) -> None:
        self.mails: list[tuple[tuple[str, ...], Message]] = []

    async def handle_DATA(self, server, session, envelope) -> str:
        self.mails.append((tuple(envelope.rcpt_tos), message_from_bytes(envelope.original_content)))
        return "250 OK"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def inbox(monkeypatch):
    box = Inbox()
    controller = Controller(box, hostname="127.0.0.1", port=_free_port())
    controller.start()
    monkeypatch.setenv("ANNA_RUN_SMTP_URL", f"smtp://127.0.0.1:{controller.port}")
    monkeypatch.setenv("ANNA_RUN_SMTP_FROM", "anna-run@example.org")
    yield box
    controller.stop()


def _project(tmp_path: Path, yml: str):
    (tmp_path / "askanna.yml").write_text(textwrap.dedent(yml))
    return load_project(tmp_path / "askanna.yml")


YML = """
    notifications:
      all: {email: [everyone@example.com]}
      error: {email: [oncall@example.com]}
    train:
      job: [echo hi]
      notifications:
        error: {email: ["${OPS_MAIL}", team@example.com]}
    plain:
      job: [echo hi]
"""


def _record(status: str, **extra) -> RunRecord:
    return RunRecord(
        id="k68o-Mi2L-mYte-7E54",
        job="train",
        project="proj-id",
        project_root="/home/me/forecast",
        status=status,
        reason=extra.pop("reason", None if status == "succeeded" else f"command failed: echo {SECRET}"),
        exit_code=0 if status == "succeeded" else 3,
        duration_s=12.345,
        variables={"OPS_MAIL": "ops@example.com", "API_TOKEN": "***"},
        **extra,
    )


def _mask(text: str) -> str:
    return text.replace(SECRET, "***")


def test_success_mails_only_all_addresses(tmp_path, inbox):
    project = _project(tmp_path, YML)
    assert notify_run_end(project, project.job("train"), _record("succeeded"), _mask) is None
    [(to, mail)] = inbox.mails
    assert to == ("everyone@example.com",)
    assert mail["Subject"] == "[anna-run] forecast / train: succeeded (run k68o-Mi2L-mYte-7E54)"
    assert mail["From"] == "anna-run@example.org"
    body = mail.get_payload()
    for part in ("Project:   forecast", "Job:       train", "Status:    succeeded", "12.3 s"):
        assert part in body
    assert "anna-run show k68o-Mi2L-mYte-7E54" in body


@pytest.mark.parametrize("status", ["failed", "timeout", "cancelled"])
def test_failure_mails_job_and_global_error_addresses_too(tmp_path, inbox, status):
    project = _project(tmp_path, YML)
    assert notify_run_end(project, project.job("train"), _record(status), _mask) is None
    [(to, mail)] = inbox.mails
    # the job's (a ${VAR} one resolved from the run's variables) and the project's, once each
    assert set(to) == {"ops@example.com", "team@example.com", "everyone@example.com", "oncall@example.com"}
    assert status in mail["Subject"]
    assert "Reason:    command failed: echo ***" in mail.get_payload()


def test_a_job_without_its_own_entry_gets_the_global_ones(tmp_path, inbox):
    project = _project(tmp_path, YML)
    notify_run_end(project, project.job("plain"), _record("failed"), _mask)
    [(to, _)] = inbox.mails
    assert set(to) == {"everyone@example.com", "oncall@example.com"}


def test_secrets_are_absent_from_subject_and_body(tmp_path, inbox):
    project = _project(tmp_path, YML)
    record = _record("failed", reason=f"result missing: out/{SECRET}.json", name=f"nightly {SECRET}")
    notify_run_end(project, project.job("train"), record, _mask)
    [(_, mail)] = inbox.mails
    raw = mail.as_string()
    assert SECRET not in raw
    assert "out/***.json" in raw


def test_no_addresses_or_no_smtp_sends_nothing(tmp_path, inbox, monkeypatch):
    project = _project(tmp_path, "only:\n  job: [echo hi]\n")
    assert notify_run_end(project, project.job("only"), _record("failed"), _mask) is None
    monkeypatch.delenv("ANNA_RUN_SMTP_URL")
    project = _project(tmp_path, YML)
    assert notify_run_end(project, project.job("train"), _record("failed"), _mask) is None
    assert inbox.mails == []


def test_smtp_down_is_a_warning_quickly(tmp_path, monkeypatch):
    port = _free_port()  # nobody listens on it
    monkeypatch.setenv("ANNA_RUN_SMTP_URL", f"smtp://user:{SECRET}@127.0.0.1:{port}")
    project = _project(tmp_path, YML)
    started = time.monotonic()
    warning = notify_run_end(project, project.job("train"), _record("failed"), _mask)
    assert time.monotonic() - started < notify.TIMEOUT_S
    assert warning is not None
    assert f"smtp://127.0.0.1:{port}" in warning and "2 attempts" in warning
    assert SECRET not in warning


def test_a_server_that_refuses_the_mail_is_a_warning(tmp_path, monkeypatch):
    class Refuse:
        async def handle_DATA(self, server, session, envelope) -> str:
            return "554 no thanks"

    controller = Controller(Refuse(), hostname="127.0.0.1", port=_free_port())
    controller.start()
    try:
        monkeypatch.setenv("ANNA_RUN_SMTP_URL", f"smtp://127.0.0.1:{controller.port}")
        project = _project(tmp_path, YML)
        warning = notify_run_end(project, project.job("train"), _record("failed"), _mask)
    finally:
        controller.stop()
    assert warning is not None and "554" in warning


def test_recipients_resolve_templates_and_drop_unresolved(tmp_path):
    project = _project(tmp_path, YML)
    record = _record("failed").evolve(variables={"OPS_MAIL": "***"})
    assert recipients(project, project.job("train"), record) == (
        "team@example.com",
        "everyone@example.com",
        "oncall@example.com",
    )


def test_smtp_url_forms():
    assert SmtpServer.from_url("smtp://mail.local") == SmtpServer("mail.local", 25)
    server = SmtpServer.from_url("smtps://me%40x:p%3Ass@mail.local:2465")
    assert server == SmtpServer("mail.local", 2465, implicit_tls=True, user="me@x", password="p:ss")
    assert "p:ss" not in str(server)


def test_validate_note_only_when_mail_is_asked_and_no_smtp(tmp_path):
    project = _project(tmp_path, YML)
    assert "ANNA_RUN_SMTP_URL" in (smtp_note(project, {}) or "")
    assert smtp_note(project, {"ANNA_RUN_SMTP_URL": "smtp://127.0.0.1"}) is None
    assert smtp_note(_project(tmp_path, "a:\n  job: [echo]\n"), {}) is None


# -- TLS: STARTTLS when offered, smtps://, and a login ---------------------------------------------
@pytest.fixture
def tls_files(tmp_path, monkeypatch) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, trusted through SSL_CERT_FILE (which the default
    SSL context reads) for this test only."""
    import shutil
    import subprocess

    if shutil.which("openssl") is None:
        pytest.fail("openssl is needed to make a test certificate", pytrace=False)
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subject = ["-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"]
    files = ["-keyout", str(key), "-out", str(cert)]
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", *subject, *files],
        check=True,
        capture_output=True,
    )
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    return cert, key


class _Logins:
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def __call__(self, server, session, envelope, mechanism, auth_data):
        from aiosmtpd.smtp import AuthResult

        self.seen.append((auth_data.login.decode(), auth_data.password.decode()))
        return AuthResult(success=auth_data.password == b"pa:ss")


@pytest.mark.parametrize("implicit", [False, True], ids=["starttls", "smtps"])
def test_tls_and_login(tmp_path, tls_files, monkeypatch, implicit):
    import ssl

    cert, key = tls_files
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    box, logins, port = Inbox(), _Logins(), _free_port()
    # aiosmtpd does not count an implicit-TLS session as TLS for auth_require_tls: asked only of STARTTLS
    options = {"ssl_context": context} if implicit else {"tls_context": context, "require_starttls": True}
    controller = Controller(
        box, hostname="127.0.0.1", port=port, authenticator=logins, auth_require_tls=not implicit, **options
    )
    controller.start()
    try:
        scheme = "smtps" if implicit else "smtp"
        monkeypatch.setenv("ANNA_RUN_SMTP_URL", f"{scheme}://me:pa%3Ass@127.0.0.1:{port}")
        project = _project(tmp_path, YML)
        assert notify_run_end(project, project.job("plain"), _record("succeeded"), _mask) is None
    finally:
        controller.stop()
    assert logins.seen == [("me", "pa:ss")]
    [(to, _)] = box.mails
    assert to == ("everyone@example.com",)
