"""`vozvrat regimes …`, `vozvrat events postpone / history / vouchers`, `vozvrat vouchers …`: output, and bad input as one line and exit 2."""
from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from cli.main import app
from models.claim_store import event_t
from models.db import make_engine
from tests import factories as f

MSK = ZoneInfo("Europe/Moscow")
runner = CliRunner()
TODAY = datetime.now(UTC).date()  # the CLI acts on the real clock: dates are taken relative to it


def run(*args: str):
    return runner.invoke(app, list(args))


@pytest.fixture
def world(sqlite_url):
    engine = make_engine(sqlite_url)
    with engine.begin() as conn:
        org = f.organizer(conn, policy={"vouchers_offered": True, "regime_postponed_refunds": False})
        venue = f.venue(conn, region="77", tz="Asia/Yekaterinburg")
        start = datetime.combine(TODAY - timedelta(days=3), datetime.min.time(), tzinfo=MSK).replace(hour=19)
        event = f.event(conn, starts_at=start, organizer_id=org, venue_id=venue, title="Фестиваль")
        other = f.event(conn, starts_at=start + timedelta(days=200), organizer_id=org, venue_id=venue, title="Позже")
        for i in range(3):
            f.ticket(conn, event_id=event, order_id=f.order(conn, created_at=start - timedelta(days=60), buyer_email=f"b{i}@example.ru"))
    return {"db": sqlite_url, "engine": engine, "event": event, "other": other}


def test_regimes_add_end_list(world):
    db = world["db"]
    added = run("regimes", "add", "--region", "77", "--from", str(TODAY - timedelta(days=10)), "--json", "--db", db)
    assert added.exit_code == 0, added.output
    regime = json.loads(added.output)
    assert regime["ends_on"] is None and regime["created_by"].startswith("ops:")
    ended = run("regimes", "end", str(regime["id"]), "--on", str(TODAY), "--db", db)
    assert ended.exit_code == 0 and f"publish changes by {TODAY + timedelta(days=14)}" in ended.output
    assert f"refund cancelled events by {TODAY + timedelta(days=180)}" in ended.output
    listed = run("regimes", "list", "--db", db)
    assert listed.output.split() == [str(regime["id"]), "77", str(TODAY - timedelta(days=10)), str(TODAY)]
    by_iso = run("regimes", "list", "--region", "RU-MOW", "--json", "--db", db)
    assert by_iso.exit_code == 0, by_iso.output
    assert [r["id"] for r in json.loads(by_iso.output)] == [regime["id"]]  # stored as 77, found by its ISO code
    assert run("regimes", "list", "--region", "50", "--db", db).output.strip() == "no regimes"
    crimea = run("regimes", "add", "--region", "91", "--from", str(TODAY), "--json", "--db", db)
    assert crimea.exit_code == 0, crimea.output
    assert json.loads(crimea.output)["region"] == "91"


@pytest.mark.parametrize(("args", "message"), [
    (("regimes", "add", "--region", "77", "--from", "yesterday"), "error: --from: malformed date 'yesterday' (expected e.g. 2027-06-01)"),
    (("regimes", "add", "--region", " ", "--from", "2026-01-01"), "error: region: Укажите регион."),
    (("regimes", "add", "--region", "Мск", "--from", "2026-01-01"),
     "error: region: Неизвестный регион «Мск»: укажите код субъекта РФ, как у площадок (например 77 — Москва, 50 — Московская область), "
     "или код ISO 3166-2:RU (например RU-MOW)."),
    (("regimes", "add", "--region", "99", "--from", "2026-01-01"),
     "error: region: Неизвестный регион «99»: укажите код субъекта РФ, как у площадок (например 77 — Москва, 50 — Московская область), "
     "или код ISO 3166-2:RU (например RU-MOW)."),
    (("regimes", "list", "--region", "Мск"),
     "error: region: Неизвестный регион «Мск»: укажите код субъекта РФ, как у площадок (например 77 — Москва, 50 — Московская область), "
     "или код ISO 3166-2:RU (например RU-MOW)."),
    (("regimes", "end", "999", "--on", "2026-01-01"), "error: regime_id: Режим не найден."),
    (("events", "postpone", "999", "--to", "2030-01-01T19:00"), "error: event 999 not found"),
    (("events", "postpone", "1", "--to", "next friday"), "error: --to: malformed date-time 'next friday' (expected e.g. 2027-06-01T19:00)"),
    (("events", "postpone", "1", "--to", "2020-01-01T19:00"), "error: new_starts_at: Новая дата мероприятия должна быть в будущем."),
    (("events", "vouchers", "1"), "error: event_id: Ваучеры выдаются по мероприятиям, отменённым или перенесённым в период режима повышенной готовности."),
    (("vouchers", "show", "VCH-NONE"), "error: number: Ваучер не найден."),
])
def test_bad_input_is_one_line_and_exit_2(world, args, message):
    result = run(*args, "--db", world["db"])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [message]


def test_postpone_in_the_venues_time_then_exchange_for_vouchers_and_redeem(world):
    db, event = world["db"], world["event"]
    run("regimes", "add", "--region", "77", "--from", str(TODAY - timedelta(days=10)), "--db", db)
    new_day = TODAY + timedelta(days=300)
    postponed = run("events", "postpone", str(event), "--to", f"{new_day}T19:00", "--claims-until", str(TODAY + timedelta(days=30)), "--json", "--db", db)
    assert postponed.exit_code == 0, postponed.output
    data = json.loads(postponed.output)
    assert data["notices_written"] == 3 and data["regime_rule"]["rule"] == "decree_442_postponed_within_18_months"
    with world["engine"].connect() as conn:
        starts = conn.execute(select(event_t.c.starts_at).where(event_t.c.id == event)).scalar_one()
    assert starts == datetime.combine(new_day, datetime.min.time(), tzinfo=ZoneInfo("Asia/Yekaterinburg")).replace(hour=19)  # the venue's zone
    history = run("events", "history", str(event), "--json", "--db", db)
    assert [h["rule"] for h in json.loads(history.output)] == ["decree_442_postponed_within_18_months"]

    exchanged = run("events", "vouchers", str(event), "--chunk-size", "2", "--json", "--db", db)
    assert json.loads(exchanged.output) == {"event_id": event, "tickets": 3, "issued": 3, "skipped": 0, "chunks": 2}
    from models.claim_store import voucher_t

    with world["engine"].connect() as conn:
        number = conn.execute(select(voucher_t.c.number).order_by(voucher_t.c.id)).scalars().first()
    redeemed = run("vouchers", "redeem", number, "--event", str(world["other"]), "--db", db)
    assert redeemed.exit_code == 0, redeemed.output
    assert json.loads(redeemed.output)["status"] == "redeemed"
    assert json.loads(run("vouchers", "show", number, "--db", db).output)["redeemed_event_id"] == world["other"]
    assert run("vouchers", "expire", "--db", db).output.strip() == "0 expired voucher(s) turned into refunds"
    assert date.fromisoformat(json.loads(redeemed.output)["valid_until"]) > TODAY


def test_bench_vouchers_prints_one_json_line_and_issues_nothing_twice(tmp_path):
    result = run("bench", "vouchers", "--tickets", "30", "--chunk-size", "7", "--url", f"sqlite:///{tmp_path / 'bench.db'}", "--json")
    assert result.exit_code == 0, result.output
    (line,) = result.stdout.strip().splitlines()
    data = json.loads(line)
    assert (data["issued"], data["rerun_issued"], data["vouchers"], data["claims"], data["audit_rows"]) == (30, 0, 30, 30, 60)
    assert data["held_emails"] == 0 and data["outbox_rows"] == 30  # 30 recipients: under the mass-send threshold
