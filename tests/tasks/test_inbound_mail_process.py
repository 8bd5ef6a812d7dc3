"""The inbound mail server as `make up` runs it (`python -m tasks.inbound_mail`, a child process): it
drains what a crash left behind when it starts, takes a letter, keeps it and sends the reply itself."""
from __future__ import annotations

import os
import signal
import smtplib
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage

from sqlalchemy import select

from models.db import make_engine
from models.tables import InboundLetter
from tasks.inbound_mail import keep_letter
from tasks.smtp_sink import free_port, start_sink

letter_t = InboundLetter.__table__


def _wait(what: str, check, timeout: float = 60.0):
    """Poll for something the child process does on its own (not a clock wait)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_the_server_process_drains_at_start_takes_mail_and_sends_replies(sqlite_url, tmp_path, monkeypatch):
    data = tmp_path / "data"
    sink = start_sink("127.0.0.1", 0, tmp_path / "mail")
    port = free_port()
    env = dict(os.environ, VOZVRAT_DATABASE_URL=sqlite_url, VOZVRAT_DATA_DIR=str(data), VOZVRAT_SMTP_PORT=str(sink.port),
               VOZVRAT_INBOUND_SMTP_PORT=str(port), VOZVRAT_OUTBOUND_EMAIL_ENABLED="true")
    monkeypatch.setenv("VOZVRAT_DATA_DIR", str(data))
    from models.settings import get_settings

    get_settings.cache_clear()
    engine = make_engine(sqlite_url)
    now = datetime.now(UTC)
    # a letter a crashed server kept but never processed
    left = keep_letter(engine, b"From: left@example.ru\r\nTo: vozvrat@example.ru\r\nSubject: hello\r\n\r\nno number here\r\n",
                       envelope_from="left@example.ru", rcpt_tos=["vozvrat@example.ru"], now=now - timedelta(minutes=5))
    proc = subprocess.Popen([sys.executable, "-m", "tasks.inbound_mail"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        _wait("the server listening", lambda: _listening(port) or proc.poll() is not None)
        assert proc.poll() is None, proc.stdout.read().decode()

        message = EmailMessage()
        message["From"], message["To"], message["Subject"] = "anna@example.ru", "vozvrat@example.ru", "Возврат"
        message.set_content("Верните деньги за концерт")
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as smtp:
            smtp.send_message(message)

        def processed():
            with engine.connect() as conn:
                rows = conn.execute(select(letter_t.c.id, letter_t.c.status, letter_t.c.outcome).order_by(letter_t.c.id)).all()
            return rows if len(rows) == 2 and all(r.status == "processed" for r in rows) else None

        rows = _wait("both letters processed", processed)
        assert [(r.id, r.outcome) for r in rows] == [(left, "no_order_number"), (rows[1].id, "no_order_number")]
        replies = _wait("two replies in the sink", lambda: len(sink.messages()) == 2 and sink.messages())
        assert sorted(m["To"] for m in replies) == ["anna@example.ru", "left@example.ru"]
        assert all(m["Auto-Submitted"] == "auto-generated" for m in replies)  # our replies never start a loop elsewhere
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=15)
        sink.stop()
        engine.dispose()
        get_settings.cache_clear()
