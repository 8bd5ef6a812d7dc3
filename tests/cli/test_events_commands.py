"""`vozvrat events cancel|replace`: one command body for both actions; each refuses bad input in one line."""
from __future__ import annotations

import pytest
from typer.testing import CliRunner

from cli.main import app


@pytest.mark.parametrize("command", ["cancel", "replace"])
def test_a_chunk_size_below_one_is_refused_in_one_line(command: str) -> None:
    result = CliRunner().invoke(app, ["events", command, "7", "--reason", "Отмена", "--chunk-size", "0"])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().splitlines() == ["error: --chunk-size is at least 1"]


@pytest.mark.parametrize(("command", "summary"), [("cancel", "Cancel an event"), ("replace", "Replace an event")])
def test_each_command_keeps_its_own_help(command: str, summary: str) -> None:
    result = CliRunner().invoke(app, ["events", command, "--help"])
    assert result.exit_code == 0
    assert summary in result.output and "--chunk-size" in result.output


def test_follow_ups_of_a_wrong_event_is_one_line_and_exit_2_not_an_empty_table(sqlite_url) -> None:
    """Used to go wrong: `vozvrat events follow-ups 999` printed an empty table and exited 0, as if the
    event's batch had gone through without a single claim left behind."""
    from datetime import UTC, datetime, timedelta

    from models.db import make_engine
    from tasks import mass
    from tests import factories as f

    now = datetime(2026, 11, 25, 9, 30, tzinfo=UTC)
    engine = make_engine(sqlite_url)
    with engine.begin() as conn:
        never_cancelled = f.event(conn, starts_at=now + timedelta(days=30))
        cancelled = f.event(conn, starts_at=now + timedelta(days=30))
    mass.begin(engine, event_id=cancelled, action="cancelled", reason="Болезнь артиста", started_by="staff:supervisor:anna", now=now)
    for event_id in (999, never_cancelled):
        result = CliRunner().invoke(app, ["events", "follow-ups", str(event_id), "--db", sqlite_url])
        assert result.exit_code == 2, result.output
        assert result.stderr.strip().splitlines() == [
            f"error: event {event_id} has no mass cancellation: no such event, or it was never cancelled with `vozvrat events cancel`"]
    result = CliRunner().invoke(app, ["events", "follow-ups", str(cancelled), "--db", sqlite_url])
    assert result.exit_code == 0 and f"Event {cancelled}: claims followed up one by one (0)" in result.output, result.output


@pytest.mark.parametrize("command", ["cancel", "replace"])
def test_an_event_that_has_taken_place_or_is_done_is_refused_in_one_line(db_url, tmp_path, monkeypatch, command) -> None:
    """Used to go wrong: a past `scheduled` event was cancelled and its tickets refunded; an event whose
    mass cancellation was done started a new run that did nothing. Refused before any run, nothing written."""
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import select, update

    from cli import events_commands
    from models.db import make_engine
    from models.tables import Event, MassCancellation
    from tasks import mass
    from tasks.accounts import create_user
    from tests import factories as f

    now = datetime(2026, 11, 25, 9, 30, tzinfo=UTC)
    monkeypatch.setattr(events_commands, "_now", lambda: now)
    engine = make_engine(db_url)
    create_user(engine, login="anna@example.ru", password="correct horse battery", kind="staff", role="supervisor", now=now)
    (tmp_path / "pw").write_text("correct horse battery\n")
    who = ["--as", "anna@example.ru", "--password-file", str(tmp_path / "pw"), "--db", db_url]
    with engine.begin() as conn:
        past = f.event(conn, starts_at=now - timedelta(hours=1))
        done = f.event(conn, starts_at=now + timedelta(days=30))
    action = {"cancel": "cancelled", "replace": "replaced"}[command]
    mass.begin(engine, event_id=done, action=action, reason="Болезнь артиста", started_by="staff:supervisor:anna", now=now)
    with engine.begin() as conn:
        conn.execute(update(MassCancellation.__table__).values(status="done"))

    result = CliRunner().invoke(app, ["events", command, str(past), "--reason", "Отмена", *who])
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: Мероприятие уже состоялось (25.11.2026 11:30)")  # the venue's time (Moscow)
    result = CliRunner().invoke(app, ["events", command, str(done), "--reason", "Отмена", *who])
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: Мероприятие уже " + ("отменено" if command == "cancel" else "заменено"))
    with engine.connect() as conn:
        assert conn.execute(select(Event.__table__.c.status).where(Event.__table__.c.id == past)).scalar_one() == "scheduled"
        assert conn.execute(select(MassCancellation.__table__.c.event_id)).scalars().all() == [done]
    engine.dispose()
