"""`vozvrat inbound list / drain / retry`: the letters to the refunds address, for ops."""
from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, update
from typer.testing import CliRunner

from cli.main import app
from models.db import make_engine
from models.settings import get_settings
from models.tables import InboundLetter
from tasks.inbound_mail import keep_letter

runner = CliRunner()
letter_t = InboundLetter.__table__
LETTER = "From: anna@example.ru\r\nTo: vozvrat@example.ru\r\nSubject: Возврат\r\n\r\nВерните деньги\r\n".encode()


@pytest.fixture
def db(sqlite_url, tmp_path, monkeypatch):
    monkeypatch.setenv("VOZVRAT_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    engine = make_engine(sqlite_url)
    yield sqlite_url, engine
    engine.dispose()
    get_settings.cache_clear()


def test_drain_processes_what_was_left_and_list_shows_it(db):
    url, engine = db
    letter_id = keep_letter(engine, LETTER, envelope_from="anna@example.ru", rcpt_tos=["vozvrat@example.ru"],
                            now=datetime.now(UTC) - timedelta(minutes=1))
    drained = runner.invoke(app, ["inbound", "drain", "--db", url])
    assert drained.exit_code == 0, drained.stderr
    assert json.loads(drained.stdout) == {"no_order_number": 1}
    listed = runner.invoke(app, ["inbound", "list", "--db", url, "--json"])
    [row] = [json.loads(line) for line in listed.stdout.splitlines()]
    assert (row["id"], row["status"], row["outcome"], row["from_address"]) == (letter_id, "processed", "no_order_number", "anna@example.ru")


def test_retry_gives_a_failed_letter_another_pass(db):
    url, engine = db
    letter_id = keep_letter(engine, LETTER, envelope_from="anna@example.ru", rcpt_tos=["vozvrat@example.ru"], now=datetime.now(UTC))
    with engine.begin() as conn:
        conn.execute(update(letter_t).values(status="failed", attempts=5, last_error="RuntimeError: boom"))
    assert "RuntimeError: boom" in runner.invoke(app, ["inbound", "list", "--db", url, "--status", "failed"]).stdout
    retried = runner.invoke(app, ["inbound", "retry", str(letter_id), "--db", url])
    assert retried.exit_code == 0, retried.stderr
    assert retried.stdout.strip() == f"letter {letter_id}: no_order_number"
    with engine.connect() as conn:
        assert conn.execute(select(letter_t.c.status)).scalar_one() == "processed"


@pytest.mark.parametrize("args, message", [
    (["inbound", "list", "--status", "lost"], "error: --status must be one of received, processed, failed, not 'lost'"),
    (["inbound", "retry", "99"], "error: no failed letter with id 99"),
])
def test_bad_input_is_one_line_and_exit_2(db, args, message):
    url, _ = db
    result = runner.invoke(app, [*args, "--db", url])
    assert result.exit_code == 2
    assert result.stderr.strip() == message
