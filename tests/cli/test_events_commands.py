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
