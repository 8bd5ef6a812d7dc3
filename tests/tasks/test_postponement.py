"""Postponements on both databases: the history, the original date, buyers told, claims_until enforced, regimes."""
from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select, text

from models.claim_store import event_t, outbox_t
from models.tables import EventChange
from tasks.intake import IntakeError, file_buyer_claim
from tasks.postponement import event_history, notify_postponement, record_postponement
from tasks.regimes import RegimeInputError, add_regime, end_regime, list_regimes, send_to_buyers
from tests import factories as f

MSK = ZoneInfo("Europe/Moscow")
ORIGINAL = datetime(2026, 4, 10, 19, 0, tzinfo=MSK)
NOW = datetime(2026, 3, 20, 12, 0, tzinfo=MSK)


def _event(engine, *, tickets: int = 3, region: str = "77", policy: dict | None = None) -> tuple[int, list[int]]:
    with engine.begin() as conn:
        org = f.organizer(conn, email="org@example.ru", policy=policy)
        venue = f.venue(conn, region=region)
        event = f.event(conn, starts_at=ORIGINAL, organizer_id=org, venue_id=venue, title="Фестиваль")
        ids = []
        for i in range(tickets):
            order = f.order(conn, created_at=NOW - timedelta(days=30), buyer_email=f"buyer{i}@example.ru")
            ids.append(f.ticket(conn, event_id=event, order_id=order))
    return event, ids


def _notices(engine, template="event_postponed"):
    with engine.connect() as conn:
        return conn.execute(select(outbox_t).where(outbox_t.c.template == template).order_by(outbox_t.c.id)).mappings().all()


def test_postponed_twice_keeps_its_original_date_and_history(engine):
    event, _ = _event(engine)
    first = record_postponement(engine, event_id=event, new_starts_at=ORIGINAL + timedelta(days=60), claims_until=date(2026, 5, 1),
                                actor="organizer:1:user:anna@example.ru", now=NOW)
    second = record_postponement(engine, event_id=event, new_starts_at=ORIGINAL + timedelta(days=200), claims_until=None,
                                 actor="staff:supervisor:ivan@example.ru", now=NOW + timedelta(days=10))
    assert first.original_starts_at == second.original_starts_at == ORIGINAL
    assert second.previous_starts_at == ORIGINAL + timedelta(days=60)
    with engine.connect() as conn:
        row = conn.execute(select(event_t).where(event_t.c.id == event)).one()
    assert (row.status, row.starts_at, row.original_starts_at) == ("postponed", ORIGINAL + timedelta(days=200), ORIGINAL)
    history = event_history(engine, event_id=event)
    assert [h["changed_by"] for h in history] == ["organizer:1:user:anna@example.ru", "staff:supervisor:ivan@example.ru"]
    assert all(datetime.fromisoformat(h["original_starts_at"]) == ORIGINAL for h in history)
    assert [h["rule"] for h in history] == [None, None]  # no regime: Art. 52.1


def test_every_buyer_is_told_once_with_the_new_date_and_options(engine):
    event, _ = _event(engine, tickets=3)
    change = record_postponement(engine, event_id=event, new_starts_at=ORIGINAL + timedelta(days=60), claims_until=date(2026, 5, 1),
                                 actor="staff:support:s@example.ru", now=NOW)
    assert notify_postponement(engine, change_id=change.change_id, now=NOW, started_by="staff:support:s@example.ru", chunk_size=2) == 3
    assert notify_postponement(engine, change_id=change.change_id, now=NOW, started_by="staff:support:s@example.ru", chunk_size=2) == 0  # idempotent
    notices = _notices(engine)
    assert sorted(n["recipient"] for n in notices) == ["buyer0@example.ru", "buyer1@example.ru", "buyer2@example.ru"]
    payload = notices[0]["payload"]
    assert (payload["new_date"], payload["claims_until"], payload["refunds_accepted"]) == ("2026-06-09", "2026-05-01", True)
    assert "52.1" in payload["rule_ru"] and all(n["status"] == "pending" for n in notices)


def test_a_send_to_more_buyers_than_the_threshold_is_held(engine, monkeypatch):
    from models.settings import get_settings

    monkeypatch.setenv("VOZVRAT_MASS_SEND_THRESHOLD", "2")
    get_settings.cache_clear()
    monkeypatch.setattr("tasks.mass_sends.threshold", lambda: 2)
    event, _ = _event(engine, tickets=3)
    change = record_postponement(engine, event_id=event, new_starts_at=ORIGINAL + timedelta(days=60), claims_until=None, actor="x", now=NOW)
    notify_postponement(engine, change_id=change.change_id, now=NOW, started_by="x", chunk_size=1)  # chunks of 1, 3 in all
    assert {n["status"] for n in _notices(engine)} == {"held"}
    with engine.connect() as conn:  # the three chunks wait under ONE send for the approver, with its full count
        sends = conn.execute(text("SELECT template, recipient_count, status FROM mass_send")).all()
    assert [tuple(r) for r in sends] == [("event_postponed", 3, "held")]
    with engine.begin() as conn:  # a small send stays pending
        assert send_to_buyers(conn, template="event_postponed", now=NOW, started_by="x", messages=[
            (None, "one@example.ru", {"claim_number": "A", "order_number": "A", "event_title": "t", "original_date": "2026-04-10", "rule_ru": "r"},
             "one-off")]) == 1
    assert [n["status"] for n in _notices(engine) if n["dedup_key"] == "one-off"] == ["pending"]


@pytest.mark.parametrize(("filed_on", "allowed"), [(date(2026, 5, 1), True), (date(2026, 5, 2), False)])
def test_a_postponed_events_claims_after_claims_until_are_refused(engine, filed_on, allowed):
    event, tickets = _event(engine)
    record_postponement(engine, event_id=event, new_starts_at=ORIGINAL + timedelta(days=60), claims_until=date(2026, 5, 1), actor="x", now=NOW)
    at = datetime.combine(filed_on, datetime.min.time(), tzinfo=MSK).replace(hour=23, minute=30)
    if allowed:
        filed = file_buyer_claim(engine, actor="buyer:order:test", ticket_id=tickets[0], reason="postponed", now=at, start_flow=False)
        assert filed.quote["percent"] == 100
    else:
        with pytest.raises(IntakeError) as refused:
            file_buyer_claim(engine, actor="buyer:order:test", ticket_id=tickets[0], reason="postponed", now=at, start_flow=False)
        assert refused.value.code == "CLAIMS_CLOSED" and "01.05.2026" in refused.value.message_ru


@pytest.mark.parametrize(("new_starts_at", "claims_until", "field"), [
    (NOW - timedelta(days=1), None, "new_starts_at"),  # in the past
    (ORIGINAL, None, "new_starts_at"),  # the same date
    (ORIGINAL + timedelta(days=30), date(2026, 3, 1), "claims_until"),  # last day already past
    (ORIGINAL + timedelta(days=30), date(2026, 6, 1), "claims_until"),  # after the new date
])
def test_bad_postponements_are_refused_in_russian(engine, new_starts_at, claims_until, field):
    event, _ = _event(engine)
    with pytest.raises(RegimeInputError) as refused:
        record_postponement(engine, event_id=event, new_starts_at=new_starts_at, claims_until=claims_until, actor="x", now=NOW)
    assert refused.value.field == field and refused.value.status == 422
    with engine.connect() as conn:
        assert conn.execute(select(EventChange.id)).all() == []


def test_another_organizers_event_is_not_found(engine):
    event, _ = _event(engine)
    with pytest.raises(RegimeInputError) as refused:
        record_postponement(engine, event_id=event, new_starts_at=ORIGINAL + timedelta(days=1), claims_until=None, actor="x", now=NOW,
                            organizer_id=999)
    assert refused.value.status == 404


def test_postponed_under_its_regions_regime_the_notice_cites_decree_442(engine):
    keep = {"regime_postponed_refunds": False, "vouchers_offered": True}
    event, tickets = _event(engine, policy=keep)
    other, _ = _event(engine, region="50", policy=keep)
    regime = add_regime(engine, region="77", starts_on=date(2026, 3, 16), actor="staff:supervisor:s@example.ru", now=NOW)
    end_regime(engine, regime_id=regime.id, ends_on=date(2026, 4, 30), actor="staff:supervisor:s@example.ru", now=NOW)
    here = record_postponement(engine, event_id=event, new_starts_at=ORIGINAL + timedelta(days=365), claims_until=None, actor="x", now=NOW)
    there = record_postponement(engine, event_id=other, new_starts_at=ORIGINAL + timedelta(days=365), claims_until=None, actor="x", now=NOW)
    assert here.regime_id == regime.id and here.ruling.rule == "decree_442_postponed_within_18_months"
    assert there.regime_id is None and there.ruling is None  # an event in another region: Art. 52.1
    notify_postponement(engine, change_id=here.change_id, now=NOW, started_by="x")
    payload = _notices(engine)[0]["payload"]
    assert "№ 442" in payload["rule_ru"] and payload["refunds_accepted"] is False and payload["vouchers_offered"] is True
    # The buyer who claims anyway is refused at assessment with the rule (quote), not at the door.
    filed = file_buyer_claim(engine, actor="buyer:order:test", ticket_id=tickets[0], reason="postponed", now=NOW + timedelta(days=1), start_flow=False)
    assert filed.quote["refusal_code"] == "REGIME_TICKETS_VALID" and "№ 442" in filed.quote["rule_ru"]


def test_regimes_in_one_region_do_not_overlap(engine):
    add_regime(engine, region="77", starts_on=date(2026, 3, 16), ends_on=date(2026, 4, 30), actor="x", now=NOW)
    with pytest.raises(RegimeInputError) as refused:
        add_regime(engine, region="77", starts_on=date(2026, 4, 1), actor="x", now=NOW)
    assert refused.value.status == 409
    add_regime(engine, region="78", starts_on=date(2026, 4, 1), actor="x", now=NOW)  # another region is fine


@pytest.mark.parametrize("region", ["91", "92"])
def test_a_venue_in_crimea_or_sevastopol_falls_under_its_regions_regime(engine, region):
    """91 (Республика Крым) and 92 (Севастополь), as venues store them (the Russian list of federal subjects)."""
    event, _ = _event(engine, region=region, policy={"regime_postponed_refunds": False, "vouchers_offered": True})
    regime = add_regime(engine, region=region, starts_on=date(2026, 3, 16), actor="staff:supervisor:s@example.ru", now=NOW)
    assert regime.region == region
    here = record_postponement(engine, event_id=event, new_starts_at=ORIGINAL + timedelta(days=365), claims_until=None, actor="x", now=NOW)
    assert here.regime_id == regime.id and here.ruling.rule == "decree_442_postponed_within_18_months"


def test_the_region_filter_accepts_every_form_and_refuses_an_unknown_one(engine):
    moscow = add_regime(engine, region="77", starts_on=date(2026, 3, 16), actor="x", now=NOW)
    add_regime(engine, region="RU-MOS", starts_on=date(2026, 3, 16), actor="x", now=NOW)
    sevastopol = add_regime(engine, region="92", starts_on=date(2026, 3, 16), actor="x", now=NOW)
    for given in ("77", " 77 ", "RU-MOW", "ru-mow", "MOW"):
        assert [r.id for r in list_regimes(engine, region=given)] == [moscow.id]
    assert [r.id for r in list_regimes(engine, region="92")] == [sevastopol.id]
    assert len(list_regimes(engine)) == 3
    with pytest.raises(RegimeInputError) as refused:
        list_regimes(engine, region="Москва")
    assert refused.value.field == "region" and refused.value.message_ru.startswith("Неизвестный регион «Москва»")


def test_an_event_that_has_taken_place_is_not_postponed_unless_a_regime_stopped_it(engine):
    """Regression: a `scheduled` event dated last week could be postponed (and its buyers offered 100 %)."""
    event, _ = _event(engine)
    after = ORIGINAL + timedelta(days=7)
    with pytest.raises(RegimeInputError) as refused:
        record_postponement(engine, event_id=event, new_starts_at=after + timedelta(days=30), claims_until=None, actor="x", now=after)
    assert (refused.value.field, refused.value.status, refused.value.code) == ("event_id", 409, "event_taken_place")
    assert refused.value.message_ru.startswith("Мероприятие уже состоялось (10.04.2026 19:00): перенести его нельзя")
    with engine.connect() as conn:
        assert conn.execute(select(EventChange.id)).all() == []
        assert conn.execute(select(event_t.c.status).where(event_t.c.id == event)).scalar_one() == "scheduled"
    # Decree 442: a regime in force on the event's day kept it from taking place; it is postponed afterwards.
    add_regime(engine, region="77", starts_on=date(2026, 4, 1), ends_on=date(2026, 4, 15), actor="x", now=NOW)
    done = record_postponement(engine, event_id=event, new_starts_at=after + timedelta(days=30), claims_until=None, actor="x", now=after)
    assert done.regime_id is not None
