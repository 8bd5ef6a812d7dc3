"""`vozvrat mass-sends show / untold / resend`: a rejected "give bank details" send shows the buyers it
left untold, and is queued again as a new held send that another supervisor must approve."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from typer.testing import CliRunner

from cli.main import app
from models.db import make_engine
from models.settings import get_settings
from models.tables import OutboxMessage
from tasks.accounts import create_user
from tasks.mass_sends import get_mass_send, hold_event_mail, reject_mass_send
from tests import factories as f

runner = CliRunner()
NOW = datetime(2026, 11, 25, 9, 30, tzinfo=UTC)
PASSWORD = "correct horse battery"


@pytest.fixture(autouse=True)
def threshold(monkeypatch):
    monkeypatch.setenv("VOZVRAT_MASS_SEND_THRESHOLD", "2")
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_a_rejected_send_shows_who_was_not_told_and_is_resent(sqlite_url, tmp_path):
    engine = make_engine(sqlite_url)
    outbox_t = OutboxMessage.__table__
    with engine.begin() as conn:
        event_id = f.event(conn, starts_at=NOW + timedelta(days=30))
        ids = [f.claim_in_payout(conn, payment_method="cash", now=NOW, event_id=event_id) for _ in range(3)]
        conn.execute(outbox_t.delete().where(outbox_t.c.claim_id.in_(ids), outbox_t.c.template != "bank_details_needed"))
        conn.execute(outbox_t.update().where(outbox_t.c.claim_id.in_(ids)).values(status="held"))
        (mass_send_id,) = hold_event_mail(conn, event_id=event_id, started_by="staff:supervisor:anna@example.ru", now=NOW)
    boris = create_user(engine, login="boris@example.ru", password=PASSWORD, kind="staff", role="supervisor", now=NOW).principal
    create_user(engine, login="sam@example.ru", password=PASSWORD, kind="staff", role="support", now=NOW)
    reject_mass_send(engine, mass_send_id, principal=boris, now=NOW, note="не та формулировка")
    numbers = get_mass_send(engine, mass_send_id).buyer_not_told
    assert len(numbers) == 3

    r = runner.invoke(app, ["mass-sends", "show", str(mass_send_id), "--db", sqlite_url], env={"COLUMNS": "300"})
    assert r.exit_code == 0, r.output
    assert "не та формулировка" in r.output and "buyer not told: 3 claim(s)" in r.output and all(n in r.output for n in numbers)
    r = runner.invoke(app, ["mass-sends", "untold", "--db", sqlite_url], env={"COLUMNS": "300"})
    assert r.exit_code == 0 and all(n in r.output for n in numbers), r.output

    pw = tmp_path / "pw"
    pw.write_text(PASSWORD + "\n", encoding="utf-8")
    r = runner.invoke(app, ["mass-sends", "resend", str(mass_send_id), "--as", "sam@example.ru", "--password-file", str(pw), "--db", sqlite_url])
    assert r.exit_code == 0 and "held until another staff supervisor approves it" in r.output, r.output
    again = get_mass_send(engine, mass_send_id).resent_as[0]
    assert get_mass_send(engine, again).status == "held"
    r = runner.invoke(app, ["mass-sends", "resend", str(mass_send_id), "--as", "sam@example.ru", "--password-file", str(pw), "--db", sqlite_url])
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1 and "повторять нечего" in r.output, r.output
    r = runner.invoke(app, ["mass-sends", "resend", str(again), "--as", "sam@example.ru", "--password-file", str(pw), "--db", sqlite_url])
    assert r.exit_code == 2 and "только отклонённую" in r.output, r.output


def test_into_a_pipe_the_list_and_a_send_are_printed_whole_not_cut_at_80_columns(sqlite_url, monkeypatch):
    """Used to go wrong: `vozvrat mass-sends list | less` (no terminal, no COLUMNS) cut every cell to
    «refund…», «organi…», so the approver could not read the template or who started the send."""
    monkeypatch.delenv("COLUMNS", raising=False)
    engine = make_engine(sqlite_url)
    outbox_t = OutboxMessage.__table__
    starter = "organizer:1:user:maria.ivanova-petrova@sever-concert.example.ru"
    with engine.begin() as conn:
        event_id = f.event(conn, starts_at=NOW + timedelta(days=30))
        ids = [f.claim_in_payout(conn, payment_method="cash", now=NOW, event_id=event_id) for _ in range(3)]
        conn.execute(outbox_t.delete().where(outbox_t.c.claim_id.in_(ids), outbox_t.c.template != "bank_details_needed"))
        conn.execute(outbox_t.update().where(outbox_t.c.claim_id.in_(ids)).values(status="held"))
        (mass_send_id,) = hold_event_mail(conn, event_id=event_id, started_by=starter, now=NOW)
    r = runner.invoke(app, ["mass-sends", "list", "--db", sqlite_url])
    assert r.exit_code == 0, r.output
    assert "bank_details_needed" in r.output and starter in r.output and "…" not in r.output
    r = runner.invoke(app, ["mass-sends", "show", str(mass_send_id), "--db", sqlite_url])
    assert r.exit_code == 0, r.output
    assert f"started by {starter} at" in r.output and "status held (ждёт одобрения)" in r.output
    r = runner.invoke(app, ["mass-sends", "list", "--db", sqlite_url], env={"COLUMNS": "60"})  # a narrow terminal: folded, still whole
    assert r.exit_code == 0 and "…" not in r.output, r.output
