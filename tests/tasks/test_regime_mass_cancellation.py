"""A stadium cancelled while its region's regime is in force goes through the mass-cancellation steps
(tasks/mass.py, the chunks the `mass-cancellation` flow runs) with Decree 442 applied to every claim:
the regime is attached to the event, each claim's refund deadline is 180 days after the regime's end
and its quote cites the rule, buyers who took the organizer's voucher before the run are not refunded,
and a run stopped after one chunk and run again does the rest and nothing twice. Both databases,
against the acquirer stand-in (the only mock)."""
from __future__ import annotations

from datetime import date, datetime, timedelta
from email import message_from_bytes
from email import policy as email_policy
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy import func, select

from models.claim_store import audit_t, claim_t, event_t, outbox_t, voucher_t
from tasks import mass
from tasks.emails import render_email_bytes
from tasks.regimes import end_regime
from tasks.vouchers import take_voucher
from tests import factories
from tests.payments.conftest import acquirer, ledger_path, standin  # noqa: F401  fixtures

MSK = ZoneInfo("Europe/Moscow")
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=MSK)
REGIME_STARTS, REGIME_ENDS = date(2026, 2, 1), date(2026, 3, 15)
REFUND_DUE = REGIME_ENDS + timedelta(days=180)  # 2026-09-11
POLICY = {"vouchers_offered": True, "voucher_valid_days": 365}


def _seed(engine, standin, *, policy=POLICY, region="77", card=12, cash=3, bso=2):  # noqa: F811
    with engine.begin() as conn:
        regime = factories.regime(conn, region="77", starts_on=REGIME_STARTS, ends_on=REGIME_ENDS)
        org = factories.organizer(conn, email="stadium@example.ru", policy=policy)
        data = factories.mass_event(conn, starts_at=NOW + timedelta(days=20), card=card, cash=cash, bso=bso, organizer_id=org)
        if region != "77":
            venue = conn.execute(select(event_t.c.venue_id).where(event_t.c.id == data["event_id"])).scalar_one()
            from models.claim_store import venue_t

            conn.execute(venue_t.update().where(venue_t.c.id == venue).values(region=region))
    httpx.post(standin.base + "/_standin/payments", timeout=10, json={"payments": [
        {"id": pid, "amount": {"value": f"{k // 100}.{k % 100:02d}", "currency": "RUB"}} for pid, k in data["payments"].items()
    ]}).raise_for_status()
    return regime, data


def _chunks(engine, acquirer, run, *, size=5, only=None):  # noqa: F811
    chunks = mass.plan_chunks(engine, mass_id=run.id, event_id=run.event_id, chunk_size=size)
    return [mass.move_chunk(engine, acquirer, run=run, first_ticket_id=a, last_ticket_id=b, now=NOW, concurrency=4, backoff_base=0.01)
            for a, b in chunks[:only]]


def _counts(engine, event_id):
    with engine.connect() as conn:
        claims = conn.execute(select(func.count()).select_from(claim_t).where(claim_t.c.event_id == event_id)).scalar_one()
        audit = conn.execute(select(func.count()).select_from(audit_t).join(claim_t, claim_t.c.id == audit_t.c.claim_id)
                             .where(claim_t.c.event_id == event_id)).scalar_one()
        mail = conn.execute(select(func.count()).select_from(outbox_t)).scalar_one()
    return claims, audit, mail


def test_a_regime_cancellation_applies_decree_442_to_every_claim_and_resumes_without_doing_anything_twice(engine, standin, acquirer):  # noqa: F811
    regime, data = _seed(engine, standin)
    event_id = data["event_id"]
    run = mass.begin(engine, event_id=event_id, action="cancelled", reason="Режим повышенной готовности", started_by="staff:supervisor:anna", now=NOW)
    with engine.connect() as conn:
        assert conn.execute(select(event_t.c.regime_id).where(event_t.c.id == event_id)).scalar_one() == regime

    # Between the cancellation and the run (scheduled for tonight), two card buyers take the organizer's voucher.
    takers = data["tickets"][:2]
    vouchers = [take_voucher(engine, ticket_id=t, actor="service:site", now=NOW) for t in takers]
    assert all("№ 442" in v.rule and v.value == 350000 for v in vouchers)

    # The run stops after one chunk (a worker died); a second run finds its record and does the rest.
    first = _chunks(engine, acquirer, run, only=1)
    assert [r.skipped for r in first] == [False]
    again = mass.begin(engine, event_id=event_id, action="cancelled", reason="Режим повышенной готовности", started_by="staff:supervisor:anna", now=NOW)
    assert again.id == run.id
    results = _chunks(engine, acquirer, again)
    assert [r.skipped for r in results] == [True, False, False, False]
    summary = mass.finish(engine, run=again, now=NOW)
    after_first = _counts(engine, event_id)
    refunds_first = len(standin.ledger()["refunds"])

    with engine.connect() as conn:
        claims = conn.execute(select(claim_t.c.ticket_id, claim_t.c.state, claim_t.c.regime_refund_due, claim_t.c.payout_due, claim_t.c.quote)
                              .where(claim_t.c.event_id == event_id)).all()
    assert len(claims) == 17 and {c.ticket_id for c in claims} == set(data["tickets"])  # one claim per ticket
    states = {c.ticket_id: c.state for c in claims}
    assert {states[t] for t in takers} == {"voucher_issued"}
    money = [c for c in claims if c.ticket_id not in takers]
    # Decree 442 on every claim paid in money: the deadline is 180 days after the regime's end, the quote cites the rule.
    assert {c.regime_refund_due for c in money} == {REFUND_DUE}
    assert all("Decree 442" in c.quote["rule"] and "№ 442" in c.quote["rule_ru"] for c in claims)
    assert {c.state for c in money} == {"paid", "needs_bank_details"}
    assert {c.payout_due for c in money if c.state == "needs_bank_details"} == {REFUND_DUE}
    assert summary.states == {"paid": 10, "needs_bank_details": 5, "voucher_issued": 2}
    assert refunds_first == 10  # the voucher holders' cards are not refunded

    # A third run, or the regime's end recorded again: nothing filed, moved, written or refunded twice.
    third = mass.begin(engine, event_id=event_id, action="cancelled", reason="Режим повышенной готовности", started_by="staff:supervisor:anna", now=NOW)
    assert all(r.skipped for r in _chunks(engine, acquirer, third))
    end_regime(engine, regime_id=regime, ends_on=REGIME_ENDS, actor="staff:supervisor:anna", now=NOW)
    assert _counts(engine, event_id) == after_first
    assert len(standin.ledger()["refunds"]) == refunds_first
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(voucher_t).where(voucher_t.c.event_id == event_id)).scalar_one() == 2


def test_an_event_in_another_region_is_cancelled_under_the_ordinary_rules(engine, standin, acquirer):  # noqa: F811
    regime, data = _seed(engine, standin, region="66", card=3, cash=0, bso=0)
    run = mass.begin(engine, event_id=data["event_id"], action="cancelled", reason="Артист заболел", started_by="staff:supervisor:anna", now=NOW)
    _chunks(engine, acquirer, run)
    with engine.connect() as conn:
        assert conn.execute(select(event_t.c.regime_id).where(event_t.c.id == data["event_id"])).scalar_one() is None
        claims = conn.execute(select(claim_t.c.regime_refund_due, claim_t.c.quote).where(claim_t.c.event_id == data["event_id"])).all()
    assert len(claims) == 3 and all(c.regime_refund_due is None and "442" not in c.quote["rule"] for c in claims)
    with pytest.raises(Exception) as refused:  # no regime: no voucher
        take_voucher(engine, ticket_id=data["tickets"][0], actor="service:site", now=NOW)
    assert getattr(refused.value, "code", None) in ("VOUCHER_NOT_OFFERED", "TICKET_ALREADY_REFUNDED")


def test_the_buyers_approval_email_cites_decree_442(engine, standin, acquirer):  # noqa: F811
    _, data = _seed(engine, standin, card=2, cash=0, bso=0)
    run = mass.begin(engine, event_id=data["event_id"], action="cancelled", reason="Режим", started_by="staff:supervisor:anna", now=NOW)
    _chunks(engine, acquirer, run)
    with engine.connect() as conn:
        mail = conn.execute(select(outbox_t.c.payload, outbox_t.c.recipient).where(outbox_t.c.template == "decision_approved")).first()
    assert mail is not None
    raw = render_email_bytes("decision_approved", to=mail.recipient, context=mail.payload, mail_from="v@example.ru",
                             message_id_key="t", now=NOW).data
    text = message_from_bytes(raw, policy=email_policy.default).get_body(preferencelist=("plain",)).get_content()
    assert "Возврат одобрен" in text
    assert "№ 442" in text and "180 дней после окончания режима" in text and "10 рабочих дней" not in text
