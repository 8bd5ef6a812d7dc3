"""Mass mail safety: a send to more than the threshold waits until a DIFFERENT staff supervisor
approves it; it leaves paced, stops at once with the kill switch, and every message is audited."""
from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from models.tables import MailAudit, MassSend, OutboxMessage
from tasks.accounts import create_user
from tasks.auth import Principal
from tasks.emails import UnknownTemplate
from tasks.mass_sends import (
    MassSendRefused,
    approve_mass_send,
    get_mass_send,
    hold_event_mail,
    queue_mass_send,
    reject_mass_send,
    render_sample,
)
from tasks.outbox import Pacer, dispatch_emails
from tasks.smtp import SmtpSettings
from tasks.smtp_sink import start_sink

NOW = datetime(2026, 11, 25, 9, 30, tzinfo=UTC)
MAIL_FROM = "Возврат билетов <vozvrat@example.ru>"
outbox_t, audit_t, mass_t = OutboxMessage.__table__, MailAudit.__table__, MassSend.__table__


@pytest.fixture(autouse=True)
def threshold(monkeypatch):
    from models.settings import get_settings

    monkeypatch.setenv("VOZVRAT_MASS_SEND_THRESHOLD", "5")
    get_settings.cache_clear()
    yield 5
    get_settings.cache_clear()


@pytest.fixture
def sink(tmp_path):
    handle = start_sink("127.0.0.1", 0, tmp_path / "mail")
    yield handle
    handle.stop()


def messages(n: int, prefix: str = "m") -> list:
    payload = {"claim_number": "VZ-0000001-1", "event_title": "Стадионный концерт", "refund_kopecks": 350000,
               "payout_deadline": "2026-12-09", "buyer_name": "Анна", "reason": "cancelled", "channel": "card"}
    return [(None, f"{prefix}{i}@example.ru", payload | {"claim_number": f"VZ-{i:07d}-1"}, f"{prefix}:{i}:decision_approved") for i in range(n)]


def staff(engine, login: str, role: str = "supervisor"):
    return create_user(engine, login=login, password="correct horse battery", kind="staff", role=role, now=NOW).principal


def queue(engine, n: int, started_by: str = "staff:supervisor:anna@example.ru") -> int | None:
    with engine.begin() as conn:
        return queue_mass_send(conn, template="decision_approved", messages=messages(n), started_by=started_by, now=NOW)


def statuses(engine) -> dict[str, int]:
    with engine.connect() as conn:
        return dict(conn.execute(select(outbox_t.c.status, func.count()).group_by(outbox_t.c.status)).all())


def send(engine, sink, **kw):
    smtp = SmtpSettings(host=sink.host, port=sink.port, timeout=5)
    return asyncio.run(dispatch_emails(engine=engine, smtp=smtp, now=NOW, mail_from=MAIL_FROM, limit=1000, **kw))


def test_a_few_recipients_are_no_mass_send(engine):
    assert queue(engine, 5) is None
    assert statuses(engine) == {"pending": 5}


def test_a_mass_send_is_held_until_a_different_supervisor_approves_it(engine, sink):
    anna = staff(engine, "anna@example.ru")
    mass_send_id = queue(engine, 12, started_by=anna.audit)
    assert statuses(engine) == {"held": 12}
    assert send(engine, sink).sent == 0  # nothing held leaves

    with pytest.raises(MassSendRefused) as same:
        approve_mass_send(engine, mass_send_id, principal=anna, now=NOW)
    assert same.value.status == 409 and "другой сотрудник" in same.value.message_ru
    # The same person under another role is the same person.
    anna_support = create_user(engine, login="anna.s@example.ru", password="correct horse battery", kind="staff", role="support", now=NOW)
    with pytest.raises(MassSendRefused) as role:
        approve_mass_send(engine, mass_send_id, principal=anna_support.principal, now=NOW)
    assert role.value.status == 403
    from tasks.auth import Principal

    anna_again = Principal(kind="staff", audit="staff:supervisor:anna@example.ru".replace("supervisor", "accounting"), role="supervisor")
    with pytest.raises(MassSendRefused):
        approve_mass_send(engine, mass_send_id, principal=anna_again, now=NOW)
    assert statuses(engine) == {"held": 12}

    boris = staff(engine, "boris@example.ru")
    view = approve_mass_send(engine, mass_send_id, principal=boris, now=NOW)
    assert (view.status, view.approved_by, view.recipient_count) == ("approved", boris.audit, 12)
    report = send(engine, sink)
    assert report.sent == 12 and len(sink.handler.received) == 12
    assert get_mass_send(engine, mass_send_id).status == "done"
    with engine.connect() as conn:
        audited = conn.execute(select(audit_t.c.outbox_ids, audit_t.c.message_ids).where(audit_t.c.mass_send_id == mass_send_id)).all()
    assert sum(len(r.outbox_ids) for r in audited) == 12
    assert {m for r in audited for m in r.message_ids} == {r.message_id for r in sink.handler.received}
    with pytest.raises(MassSendRefused) as twice:
        approve_mass_send(engine, mass_send_id, principal=boris, now=NOW)
    assert twice.value.status == 409


def test_a_rejected_mass_send_never_leaves(engine, sink):
    mass_send_id = queue(engine, 8)
    view = reject_mass_send(engine, mass_send_id, principal=staff(engine, "boris@example.ru"), now=NOW, note="не наш шаблон")
    assert view.status == "rejected"
    assert send(engine, sink).sent == 0 and statuses(engine) == {"rejected": 8}


def test_only_a_template_is_mass_sent_and_the_sample_is_rendered(engine):
    with engine.begin() as conn, pytest.raises(UnknownTemplate):
        queue_mass_send(conn, template="free_text", messages=messages(10), started_by="staff:supervisor:x@example.ru", now=NOW)
    mass_send_id = queue(engine, 10)
    sample = render_sample(engine, mass_send_id)
    assert sample.recipient == "m0@example.ru" and "VZ-0000000-1" in sample.text
    assert queue(engine, 10) is not None and statuses(engine) == {"held": 10}  # the same keys again: nothing twice


def test_sending_is_paced_at_the_configured_rate(engine, sink):
    with engine.begin() as conn:
        queue_mass_send(conn, template="decision_approved", messages=messages(4), started_by="x", now=NOW)
    clock = [100.0]
    waits: list[float] = []

    async def sleep(seconds: float) -> None:  # the pacer's waits, recorded; the clock moves by them
        waits.append(round(seconds, 6))
        clock[0] += seconds

    report = send(engine, sink, pacer=Pacer(2.0, clock=lambda: clock[0], sleep=sleep))
    assert report.sent == 4
    assert waits == [0.5, 0.5, 0.5]  # 2 per second: the first goes at once, each next one half a second later


def test_the_kill_switch_stops_a_dispatcher_at_once(engine, sink):
    with engine.begin() as conn:
        queue_mass_send(conn, template="decision_approved", messages=messages(5), started_by="x", now=NOW)
    checks = iter([True, True, False])  # thrown while the third message is due
    report = send(engine, sink, still_enabled=lambda: next(checks, False))
    assert report.sent == 2 and report.held_by_kill_switch
    assert len(sink.handler.received) == 2 and statuses(engine) == {"sent": 2, "pending": 3}
    # Nothing is leased away: with the switch back on, the rest leave at once.
    assert send(engine, sink).sent == 3


def test_the_kill_switch_is_read_from_the_environment_before_every_message(engine, sink, monkeypatch):
    with engine.begin() as conn:
        queue_mass_send(conn, template="decision_approved", messages=messages(3), started_by="x", now=NOW)
    monkeypatch.setenv("VOZVRAT_OUTBOUND_EMAIL_ENABLED", "false")
    assert send(engine, sink).sent == 0
    assert sink.handler.received == []


def _bank_claims(engine, n: int) -> tuple[int, list[tuple[int, str]]]:
    """n cash claims waiting for bank details in one event, and their 'give bank details' messages held."""
    from models.tables import Claim
    from tests import factories as f

    claim_t = Claim.__table__
    with engine.begin() as conn:
        event_id = f.event(conn, starts_at=NOW + timedelta(days=30))
        ids = [f.claim_in_payout(conn, payment_method="cash", now=NOW, event_id=event_id) for _ in range(n)]
        claims = [tuple(r) for r in conn.execute(select(claim_t.c.id, claim_t.c.number).where(claim_t.c.id.in_(ids)).order_by(claim_t.c.id))]
        conn.execute(outbox_t.delete().where(outbox_t.c.claim_id.in_(ids), outbox_t.c.template != "bank_details_needed"))
        # What a mass cancellation's batch steps do (apply_batch(hold_notifications=True)): the claims' mail is held ...
        conn.execute(outbox_t.update().where(outbox_t.c.claim_id.in_(ids), outbox_t.c.template == "bank_details_needed").values(status="held"))
        # ... and gathered per template under a mass send record.
        (mass_send_id,) = hold_event_mail(conn, event_id=event_id, started_by="staff:supervisor:anna@example.ru", now=NOW)
    assert mass_send_id is not None
    return mass_send_id, claims


def test_a_rejected_bank_details_send_shows_who_was_not_told_and_is_resent_for_a_second_person(engine, sink):
    from tasks.buyer_claims import claim_status
    from tasks.mass_sends import buyer_not_told, resend_mass_send

    mass_send_id, claims = _bank_claims(engine, 6)
    numbers = tuple(number for _, number in claims)
    boris, sam = staff(engine, "boris@example.ru"), staff(engine, "sam@example.ru", role="support")
    with pytest.raises(MassSendRefused) as held:  # only a rejected send is resent
        resend_mass_send(engine, mass_send_id, principal=sam, now=NOW)
    assert held.value.status == 409

    view = reject_mass_send(engine, mass_send_id, principal=boris, now=NOW, note="в письме не та сумма")
    assert view.note == "в письме не та сумма" and view.rejected_by == boris.audit
    assert view.buyer_not_told == numbers  # ops see who was never asked
    assert [n for _, n, _ in buyer_not_told(engine)] == list(numbers)
    assert {claim_status(engine, n, now=NOW).can_give_bank_details for n in numbers} == {True}  # the buyer's page still asks

    accounting = staff(engine, "acc@example.ru", role="accounting")
    with pytest.raises(MassSendRefused) as forbidden:
        resend_mass_send(engine, mass_send_id, principal=accounting, now=NOW)
    assert forbidden.value.status == 403
    again = resend_mass_send(engine, mass_send_id, principal=sam, now=NOW)
    assert (again.status, again.resend_of, again.recipient_count, again.template) == ("held", mass_send_id, 6, "bank_details_needed")
    assert get_mass_send(engine, mass_send_id).resent_as == (again.id,)
    assert buyer_not_told(engine) == []  # queued again: waiting for approval, no longer forgotten
    with pytest.raises(MassSendRefused) as twice:
        resend_mass_send(engine, mass_send_id, principal=sam, now=NOW)
    assert twice.value.code == "nothing_to_resend"
    assert send(engine, sink).sent == 0  # held again: nothing leaves without a second person
    with pytest.raises(MassSendRefused) as same:  # whoever resent it may not approve it
        approve_mass_send(engine, again.id, principal=Principal(kind="staff", audit="staff:supervisor:sam@example.ru", role="supervisor"),
                          now=NOW)
    assert same.value.code == "same_person"

    approve_mass_send(engine, again.id, principal=boris, now=NOW)
    assert send(engine, sink).sent == 6
    assert get_mass_send(engine, mass_send_id).buyer_not_told == ()

