"""What the buyer and the organizer are told, from the stored claim, on SQLite and PostgreSQL:
the acknowledgement, a bulk refusal's fallback offer, the escalation notice."""
from __future__ import annotations

import json
from datetime import date, datetime, timedelta

import pytest
from sqlalchemy import select

from models.claim_store import apply_trigger, file_claims, outbox_t
from models.tables import OutboxMessage
from states.policy import Reason
from tasks.emails import render_email
from tasks.intake import ClaimInput, acknowledgement_payload, decide, decide_many
from tasks.sla import overdue_working_days
from tests import factories as f
from tests.factories import MSK

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=MSK)  # a Wednesday
MAIL_FROM = "Возврат билетов <vozvrat@example.ru>"


def new_claim(engine, *, reason: Reason, event_in: timedelta = timedelta(days=20), price: int = 420000, organizer: int | None = None,
              email: str = "buyer@example.ru") -> int:
    with engine.begin() as conn:
        event = f.event(conn, starts_at=NOW + event_in, organizer_id=organizer, title="Концерт в Крокусе")
        order = f.order(conn, created_at=NOW - timedelta(days=30), buyer_email=email)
        ticket = f.ticket(conn, event_id=event, order_id=order, price_paid=price, nominal=price)
        (claim_id,) = file_claims(conn, ticket_ids=[ticket], reason=reason, actor="buyer", now=NOW)
    return claim_id


def acknowledgement_text(engine, claim_id: int) -> str:
    with engine.connect() as conn:
        payload = acknowledgement_payload(conn, claim_id, NOW)
    payload = json.loads(json.dumps(payload, default=str))  # as it comes back from the outbox row
    message = render_email("claim_received", to="buyer@example.ru", context=payload, mail_from=MAIL_FROM, message_id_key="k", now=NOW)
    return message.get_body(("plain",)).get_content()


def rejections(engine, claim_ids: list[int]) -> dict[int, dict]:
    with engine.connect() as conn:
        rows = conn.execute(select(outbox_t.c.claim_id, outbox_t.c.payload)
                            .where(outbox_t.c.claim_id.in_(claim_ids), outbox_t.c.template == "decision_rejected")).all()
    return {r.claim_id: r.payload for r in rows}


@pytest.mark.parametrize("reason", [Reason.ILLNESS, Reason.DEATH, Reason.OTHER])
def test_acknowledgement_of_an_organizer_decision_promises_no_money_and_gives_the_next_step(engine, reason):
    """Regression: «К возврату: 100 % стоимости билетов — 4 200,00 ₽» and «Деньги вернутся в течение 10 рабочих
    дней» were promised to an illness claim before the organizer had looked at it."""
    text = acknowledgement_text(engine, new_claim(engine, reason=reason))
    assert "4 200,00" not in text and "Деньги вернутся" not in text and "К возврату" not in text
    assert "Решение о возврате принимает организатор" in text and "10 рабочих дней" in text
    if reason is Reason.OTHER:
        # Decree 1491 timing: 10 working days from 25 November 2026 is 9 December 2026.
        assert "до 9 декабря 2026 г. включительно" in text
    else:
        # documents within 14 days of the event (15 December, Moscow): by 29 December inclusive
        assert "до 29 декабря 2026 г. включительно" in text and "после того, как получит документы" in text
    assert "Art." not in text and "->" not in text and "Decree" not in text


def test_acknowledgement_of_a_voluntary_claim_gives_the_amount_and_the_rule_in_russian(engine):
    """Regression: «Основание: Art. 52.1: d >= 10 -> 100 % (d = 19)» reached the buyer."""
    text = acknowledgement_text(engine, new_claim(engine, reason=Reason.VOLUNTARY))
    assert "К возврату: 100 % стоимости билетов — 4 200,00 ₽" in text
    assert "Основание: ст. 52.1 Основ законодательства РФ о культуре: при обращении не позднее чем за 10 дней — 100 %" in text
    assert "Art." not in text and ">=" not in text


def test_a_bulk_refusal_offers_each_buyer_the_voluntary_fallback_as_a_single_refusal_does(engine):
    """Regression: decide_many wrote the refusal without the «По собственной инициативе» offer that decide gives."""
    with engine.begin() as conn:
        organizer = f.organizer(conn)
    single = new_claim(engine, reason=Reason.OTHER, price=300000, organizer=organizer)
    bulk = [new_claim(engine, reason=Reason.OTHER, price=price, organizer=organizer) for price in (300000, 500000)]
    # 7 days before the event: 50 % back on the buyer's initiative
    late = new_claim(engine, reason=Reason.OTHER, event_in=timedelta(days=8), price=300000, organizer=organizer)
    far_too_late = new_claim(engine, reason=Reason.OTHER, event_in=timedelta(days=2), price=300000, organizer=organizer)
    everyone = [single, *bulk, late, far_too_late]
    with engine.begin() as conn:
        for claim_id in everyone:
            apply_trigger(conn, claim_id=claim_id, trigger="assess", actor="system", now=NOW)
    no = ClaimInput(decision="reject", note="Причина не подтверждена", decided_by="org:test")

    decide(engine, claim_id=single, decision=no, now=NOW, resume=False)
    result = decide_many(engine, claim_ids=[*bulk, late, far_too_late], decision=no, now=NOW, organizer_id=organizer)
    assert sorted(result["decided"]) == sorted([*bulk, late, far_too_late])

    sent = rejections(engine, everyone)
    offer = {k: sent[single][k] for k in ("fallback_percent", "fallback_kopecks")}
    assert offer == {"fallback_percent": 100, "fallback_kopecks": 300000}
    assert {k: sent[bulk[0]][k] for k in offer} == offer  # the same claim, the same offer, whichever way it was refused
    assert (sent[bulk[1]]["fallback_percent"], sent[bulk[1]]["fallback_kopecks"]) == (100, 500000)
    assert (sent[late]["fallback_percent"], sent[late]["fallback_kopecks"]) == (50, 150000)
    assert (sent[far_too_late]["fallback_percent"], sent[far_too_late]["fallback_kopecks"]) == (None, None)
    text = render_email("decision_rejected", to="b@example.ru", context=sent[late], mail_from=MAIL_FROM, message_id_key="k",
                        now=NOW).get_body(("plain",)).get_content()
    assert "50 % стоимости билетов — 1 500,00 ₽" in text and "«По собственной инициативе»" in text


@pytest.mark.parametrize(("due", "today", "days"), [
    (date(2026, 12, 9), date(2026, 12, 9), 0),    # the due day itself is in time
    (date(2026, 12, 9), date(2026, 12, 10), 1),
    (date(2026, 12, 11), date(2026, 12, 13), 0),  # due Friday, the weekend after it
    (date(2026, 12, 11), date(2026, 12, 14), 1),  # Monday: one working day late
    (date(2026, 12, 30), date(2027, 1, 12), 2),   # the New Year holidays (31 Dec and 1-8 Jan 2027 off) do not count
])
def test_overdue_is_counted_in_working_days_after_the_due_day(due, today, days):
    """Regression: the escalation said «Просрочено с 9 декабря» on 9 December, the due day itself."""
    assert overdue_working_days(due, today) == days


def test_escalation_notice_tells_the_organizer_how_late_in_working_days(engine, db_url, monkeypatch):
    from models.db import get_engine
    from models.settings import get_settings
    from tasks.sla import Breach, SlaReport, notify_escalations

    claim_id = new_claim(engine, reason=Reason.OTHER)
    monkeypatch.setenv("VOZVRAT_DATABASE_URL", db_url)
    get_settings.cache_clear()
    get_engine.cache_clear()
    try:
        report = SlaReport(escalated=[Breach(claim_id, "VZ-1", "decision", "2026-12-09", None, "org@example.ru", "Концерт", "other")])
        # 23:30 in Moscow on Monday 14 December is 20:30 UTC: the venue's day counts
        assert notify_escalations.fn(report, datetime(2026, 12, 14, 23, 30, tzinfo=MSK)) == 2
    finally:
        get_settings.cache_clear()
        get_engine.cache_clear()
    with engine.connect() as conn:
        payloads = conn.execute(select(OutboxMessage.__table__.c.payload).where(outbox_t.c.template == "escalation_notice")).scalars().all()
    assert [p["overdue_working_days"] for p in payloads] == [3, 3]  # 10, 11 and 14 December
    message = render_email("escalation_notice", to="org@example.ru", context=payloads[0], mail_from=MAIL_FROM, message_id_key="k",
                           now=NOW)
    assert message["Subject"] == "Просрочено решение по заявке № VZ-1: 3 рабочих дня"
    assert "просрочено на 3 рабочих дня" in message.get_body(("plain",)).get_content()


def test_filing_queues_the_acknowledgement_with_the_claim_and_it_goes_out_for_that_claim_alone(engine, db_url, monkeypatch, tmp_path):
    """Regression: the acknowledgement waited for the claim's flow run to start (9-15 s on a busy machine), and
    that run then sent everybody's mail."""
    from models.db import get_engine
    from models.settings import get_settings
    from tasks.claims import send_claim_mail
    from tasks.intake import file_buyer_claim
    from tasks.smtp_sink import start_sink

    with engine.begin() as conn:
        event = f.event(conn, starts_at=NOW + timedelta(days=20))
        mine, other = (f.ticket(conn, event_id=event, order_id=f.order(conn, created_at=NOW - timedelta(days=3), buyer_email=address))
                       for address in ("mine@example.ru", "other@example.ru"))
    sink = start_sink("127.0.0.1", 0, tmp_path / "mail")
    monkeypatch.setenv("VOZVRAT_DATABASE_URL", db_url)
    monkeypatch.setenv("VOZVRAT_SMTP_PORT", str(sink.port))
    get_settings.cache_clear()
    get_engine.cache_clear()
    try:
        filed = [file_buyer_claim(engine, ticket_id=t, reason="voluntary", actor="service:test", now=NOW, start_flow=False) for t in (mine, other)]
        with engine.connect() as conn:
            queued = conn.execute(select(outbox_t.c.claim_id).where(outbox_t.c.template == "claim_received")).scalars().all()
        assert sorted(queued) == sorted(c.id for c in filed)  # written in the filing's own transaction

        report = send_claim_mail(filed[0].id, NOW)
        assert report.sent == 1
        [received] = sink.messages()
        assert (received["To"], received["X-Vozvrat-Claim"]) == ("mine@example.ru", filed[0].number)
        assert send_claim_mail(filed[0].id, NOW).sent == 0  # once
    finally:
        sink.stop()
        get_settings.cache_clear()
        get_engine.cache_clear()


def test_an_illness_claim_for_an_event_at_the_calendars_edge_is_still_acknowledged(engine):
    """The documents deadline of an event on 25 December 9999 overflows: the acknowledgement leaves the date out."""
    with engine.begin() as conn:
        event = f.event(conn, starts_at=datetime(9999, 12, 25, 19, 0, tzinfo=MSK))
        ticket = f.ticket(conn, event_id=event, order_id=f.order(conn, created_at=NOW - timedelta(days=3)))
        (claim_id,) = file_claims(conn, ticket_ids=[ticket], reason=Reason.ILLNESS, actor="buyer", now=NOW)
    text = acknowledgement_text(engine, claim_id)
    assert "в течение 14 дней после мероприятия" in text and "4 200,00" not in text
