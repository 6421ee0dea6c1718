"""A real `anna-run` run mails its end (SPEC §9), and mail never changes the run."""

from __future__ import annotations

import socket
from email import message_from_bytes

from aiosmtpd.controller import Controller

BB = "anna-run/busybox:latest"
SECRET = "s3cr3t-value-for-mail"


class _Inbox:
    def __init__(self) -> None:
        self.mails: list = []

    async def handle_DATA(self, server, session, envelope) -> str:
        self.mails.append((tuple(envelope.rcpt_tos), message_from_bytes(envelope.original_content)))
        return "250 OK"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_run_end_is_mailed_and_smtp_down_changes_nothing(env, busybox):
    env.project(f"""
        environment: {{image: {BB}}}
        notifications: {{all: {{email: [all@example.com]}}}}
        fails:
          job: ["echo $TOKEN", "exit 3"]
          notifications: {{error: {{email: [ops@example.com]}}}}
        """)
    inbox = _Inbox()
    port = _free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        res = env.run(
            "fails", "--secret", f"TOKEN={SECRET}", "--network", "none", ANNA_RUN_SMTP_URL=f"smtp://127.0.0.1:{port}"
        )
    finally:
        controller.stop()
    assert res.returncode == 3, res.output
    record = env.last()
    [(to, mail)] = inbox.mails
    assert set(to) == {"all@example.com", "ops@example.com"}
    assert record["id"] in mail["Subject"] and "failed" in mail["Subject"]
    assert f"anna-run show {record['id']}" in mail.get_payload()
    assert SECRET not in mail.as_string()

    # The server gone: the same exit code and status, a warning in the record and the log.
    res = env.run(
        "fails", "--secret", f"TOKEN={SECRET}", "--network", "none", ANNA_RUN_SMTP_URL=f"smtp://127.0.0.1:{port}"
    )
    assert res.returncode == 3, res.output
    record = env.last()
    assert record["status"] == "failed"
    assert any("notification" in w for w in record["warnings"])
    assert "notification" in (env.run_dir(record["id"]) / "log.txt").read_text()
    assert SECRET not in res.output
