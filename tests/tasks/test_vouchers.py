"""Vouchers on both databases: issued by the claim's step with its audit row and email, redeemed, expired into the refund, issued en masse."""
from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from freezegun import freeze_time
from sqlalchemy import func, select

from models.claim_store import audit_t, claim_t, outbox_t, voucher_t
from models.tables import RunAction
from tasks.intake import file_buyer_claim
from tasks.regimes import RegimeInputError
from tasks.vouchers import expire_vouchers, issue_event_vouchers, redeem_voucher, take_voucher
from tests import factories as f

MSK = ZoneInfo("Europe/Moscow")
ORIGINAL = datetime(2026, 4, 10, 19, 0, tzinfo=MSK)
NOW = datetime(2026, 5, 5, 12, 0, tzinfo=MSK)
OFFERS = {"vouchers_offered": True, "voucher_valid_days": 90, "regime_postponed_refunds": False}


def _regime_event(engine, *, status="cancelled", policy=OFFERS, tickets=1, organizer_id=None):
    with engine.begin() as conn:
        regime = f.regime(conn, region="77", starts_on=date(2026, 3, 16), ends_on=date(2026, 4, 30))
        org = organizer_id or f.organizer(conn, email="org@example.ru", policy=policy)
        venue = f.venue(conn, region="77")
        event = f.event(conn, starts_at=ORIGINAL, organizer_id=org, venue_id=venue, status=status, regime_id=regime, title="Фестиваль")
        ids = [f.ticket(conn, event_id=event, order_id=f.order(conn, created_at=ORIGINAL - timedelta(days=40), buyer_email=f"b{i}@example.ru"),
                        price_paid=350000 + i) for i in range(tickets)]
        other = f.event(conn, starts_at=ORIGINAL + timedelta(days=90), organizer_id=org, venue_id=venue, title="Осенний концерт")
    return org, event, ids, other


def test_a_voucher_is_issued_by_the_claims_step_with_its_audit_row_and_email(engine):
    _, event, (ticket,), _ = _regime_event(engine)
    voucher = take_voucher(engine, ticket_id=ticket, actor="service:site", now=NOW)
    assert (voucher.value, voucher.issued_on, voucher.valid_until, voucher.status) == (350000, date(2026, 5, 5), date(2026, 8, 3), "issued")
    assert voucher.number.startswith("VCH-") and "№ 442" in voucher.rule
    with engine.connect() as conn:
        claim = conn.execute(select(claim_t).where(claim_t.c.id == voucher.claim_id)).one()
        trail = conn.execute(select(audit_t.c.trigger, audit_t.c.to_state, audit_t.c.actor).where(audit_t.c.claim_id == claim.id).order_by(audit_t.c.id)).all()
        mail = conn.execute(select(outbox_t).where(outbox_t.c.template == "voucher_issued")).mappings().one()
    assert (claim.state, claim.approved_amount, claim.refund_granted) == ("voucher_issued", 350000, True)
    assert [tuple(t) for t in trail] == [("file", "filed", "service:site"), ("issue_voucher", "voucher_issued", "service:site")]
    assert (mail["recipient"], mail["payload"]["voucher_number"], mail["status"]) == ("b0@example.ru", voucher.number, "pending")
    with pytest.raises(RegimeInputError) as again:  # the ticket's one refund is the voucher
        take_voucher(engine, ticket_id=ticket, actor="service:site", now=NOW)
    assert again.value.code == "TICKET_ALREADY_REFUNDED"


@pytest.mark.parametrize(("policy", "status", "code"), [
    ({}, "cancelled", "VOUCHER_NOT_OFFERED"),  # the organizer offers none: nothing is left behind
    (OFFERS, "scheduled", "not_eligible"),
])
def test_no_voucher_when_the_rules_or_the_policy_say_no(engine, policy, status, code):
    _, _, (ticket,), _ = _regime_event(engine, policy=policy, status=status)
    with pytest.raises(RegimeInputError) as refused:
        take_voucher(engine, ticket_id=ticket, actor="service:site", now=NOW)
    assert refused.value.code == code and refused.value.status == 409
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(claim_t)).scalar_one() == 0


def test_a_voucher_redeemed_against_another_event_of_the_same_organizer(engine):
    org, event, (ticket,), other = _regime_event(engine)
    _, _, _, stranger = _regime_event(engine, policy=OFFERS)  # another organizer's event
    voucher = take_voucher(engine, ticket_id=ticket, actor="service:site", now=NOW)
    for target, code in ((stranger, "other_organizer"), (event, "same_event")):
        with pytest.raises(RegimeInputError) as refused:
            redeem_voucher(engine, number=voucher.number, event_id=target, actor="service:sales", now=NOW)
        assert refused.value.code == code
    used = redeem_voucher(engine, number=voucher.number.lower(), event_id=other, actor="service:sales", now=NOW + timedelta(days=3))
    assert (used.status, used.redeemed_event_id) == ("redeemed", other)
    with engine.connect() as conn:
        assert conn.execute(select(claim_t.c.state).where(claim_t.c.id == voucher.claim_id)).scalar_one() == "closed"
        assert conn.execute(select(outbox_t.c.template).where(outbox_t.c.claim_id == voucher.claim_id).order_by(outbox_t.c.id)).scalars().all() == [
            "voucher_issued", "voucher_redeemed"]
    with pytest.raises(RegimeInputError) as twice:
        redeem_voucher(engine, number=voucher.number, event_id=other, actor="service:sales", now=NOW + timedelta(days=4))
    assert twice.value.code == "voucher_redeemed"


def test_a_voucher_expired_unused_becomes_the_refund_under_the_180_day_deadline(engine):
    _, _, (ticket,), other = _regime_event(engine)
    voucher = take_voucher(engine, ticket_id=ticket, actor="service:site", now=NOW)  # valid to 3 August
    with freeze_time("2026-08-03 20:00:00"):  # 23:00 in Moscow on its last day: still valid
        assert expire_vouchers(engine, now=datetime.now(MSK)) == []
    with freeze_time("2026-08-03 21:30:00"):  # 00:30 on 4 August in Moscow
        assert expire_vouchers(engine, now=datetime.now(MSK)) == [voucher.claim_id]
        assert expire_vouchers(engine, now=datetime.now(MSK)) == []  # once
    with engine.connect() as conn:
        claim = conn.execute(select(claim_t).where(claim_t.c.id == voucher.claim_id)).one()
        status = conn.execute(select(voucher_t.c.status).where(voucher_t.c.number == voucher.number)).scalar_one()
        mail = conn.execute(select(outbox_t.c.payload).where(outbox_t.c.template == "voucher_expired")).scalar_one()
        runs = conn.execute(select(RunAction.kind).where(RunAction.claim_id == claim.id)).scalars().all()
    # 180 days after the regime's end (30 April) is 27 October: the same deadline as the refund.
    assert (claim.state, claim.payout_due, claim.regime_refund_due, status) == ("approved", date(2026, 10, 27), date(2026, 10, 27), "expired")
    assert (mail["refund_kopecks"], mail["voucher_number"]) == (350000, voucher.number)
    assert runs == ["create"]  # the claim's run is created again to pay
    with pytest.raises(RegimeInputError) as late:
        redeem_voucher(engine, number=voucher.number, event_id=other, actor="service:sales", now=datetime(2026, 8, 5, tzinfo=MSK))
    assert late.value.code == "voucher_expired"


def test_vouchers_for_a_whole_event_in_chunks_skip_the_refunded_and_issue_nothing_twice(engine):
    _, event, tickets, _ = _regime_event(engine, tickets=25)
    paid = file_buyer_claim(engine, actor="buyer:order:test", ticket_id=tickets[3], reason="cancelled", now=NOW, start_flow=False)  # this one wants money
    summary = issue_event_vouchers(engine, event_id=event, actor="staff:supervisor:s@example.ru", now=NOW, chunk_size=10)
    assert (summary["tickets"], summary["issued"], summary["skipped"], summary["chunks"]) == (25, 24, 1, 3)
    again = issue_event_vouchers(engine, event_id=event, actor="staff:supervisor:s@example.ru", now=NOW, chunk_size=10)
    assert again["issued"] == 0
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(voucher_t)).scalar_one() == 24
        assert conn.execute(select(voucher_t.c.ticket_id).where(voucher_t.c.ticket_id == tickets[3])).all() == []
        assert conn.execute(select(claim_t.c.state).where(claim_t.c.id == paid.id)).scalar_one() == "filed"
        held = conn.execute(select(outbox_t.c.status).where(outbox_t.c.template == "voucher_issued")).scalars().all()
    assert len(held) == 24 and set(held) == {"pending"}  # 25 recipients: under the mass-send threshold
