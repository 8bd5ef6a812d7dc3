"""The email outbox on a real SQLite file: SMTP down, SMTP back, exactly once, kill switch."""
from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import create_engine
from sqlmodel import Session, SQLModel, select

from models.tables import MailAudit, MailSwitch, MassSend, OutboxMessage
from tasks.emails import message_id_for
from tasks.outbox import backoff, dispatch_emails, enqueue_email
from tasks.smtp import SmtpSettings
from tasks.smtp_sink import free_port, start_sink

NOW = datetime(2026, 11, 25, 9, 30, tzinfo=UTC)
MAIL_FROM = "Возврат билетов <vozvrat@example.ru>"


@pytest.fixture
def engine(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'outbox.db'}")
    SQLModel.metadata.create_all(engine, tables=[MassSend.__table__, OutboxMessage.__table__, MailAudit.__table__, MailSwitch.__table__])
    yield engine
    engine.dispose()


@pytest.fixture
def sink(tmp_path):
    handle = start_sink("127.0.0.1", 0, tmp_path / "mail")
    yield handle
    handle.stop()


def approved(claim_id: int) -> dict:
    return {"claim_number": f"В-2026-{claim_id:06d}", "event_title": "Пикник", "refund_kopecks": 175000,
            "payout_deadline": datetime(2026, 12, 23, tzinfo=UTC), "buyer_name": "Анна"}


def enqueue_three(engine) -> list[str]:
    keys = []
    with Session(engine) as session:
        for claim_id in (1, 2, 3):
            key = f"claim:{claim_id}:decision_approved"
            assert enqueue_email(session, dedup_key=key, claim_id=claim_id, template="decision_approved",
                                 recipient=f"buyer{claim_id}@example.org", payload=approved(claim_id), now=NOW)
            keys.append(key)
        # the same step again (a retried transition) adds nothing
        assert not enqueue_email(session, dedup_key=keys[0], claim_id=1, template="decision_approved",
                                 recipient="buyer1@example.org", payload=approved(1), now=NOW)
        session.commit()
    return keys


def rows(engine) -> list[OutboxMessage]:
    with Session(engine) as session:
        return list(session.exec(select(OutboxMessage).order_by(OutboxMessage.id)))


def dispatch(engine, port: int, now: datetime, **kwargs):
    return asyncio.run(dispatch_emails(engine=engine, smtp=SmtpSettings(port=port, timeout=2), now=now,
                                       mail_from=MAIL_FROM, **kwargs))


def test_smtp_down_keeps_messages_then_sends_each_exactly_once_when_it_is_back(engine, tmp_path):
    keys = enqueue_three(engine)
    dead_port = free_port()

    report = dispatch(engine, dead_port, NOW)
    assert (report.sent, report.retried, report.failed) == (0, 3, 0)
    for row in rows(engine):
        assert row.status == "pending" and row.attempts == 1
        assert row.next_attempt_at == NOW + timedelta(minutes=1)
        assert row.last_error
    assert dispatch(engine, dead_port, NOW).retried == 0  # not due again before the backoff

    sink = start_sink("127.0.0.1", 0, tmp_path / "mail")
    try:
        later = NOW + timedelta(minutes=2)
        report = dispatch(engine, sink.port, later)
        assert (report.sent, report.retried, report.failed) == (3, 0, 0)
        assert dispatch(engine, sink.port, later + timedelta(hours=1)).sent == 0  # sent is final

        delivered = sink.messages()
        assert sorted(m["Message-ID"] for m in delivered) == sorted(message_id_for(k, MAIL_FROM) for k in keys)
        assert sorted(m["To"] for m in delivered) == ["buyer1@example.org", "buyer2@example.org", "buyer3@example.org"]
        assert all(r.status == "sent" and r.sent_at == later and r.last_error is None for r in rows(engine))
    finally:
        sink.stop()


def test_kill_switch_holds_everything(engine, sink):
    enqueue_three(engine)
    report = dispatch(engine, sink.port, NOW, enabled=False)
    assert report.held_by_kill_switch and report.held == 3 and report.sent == 0
    assert "kill switch" in str(report)
    assert sink.messages() == []
    assert all(r.status == "pending" and r.attempts == 0 for r in rows(engine))
    assert dispatch(engine, sink.port, NOW).sent == 3  # switched back on: nothing was lost


def test_a_row_without_a_known_template_fails_and_does_not_block_the_rest(engine, sink):
    enqueue_three(engine)
    with Session(engine) as session:
        session.add(OutboxMessage(kind="email", dedup_key="forged", template="concert_invitation",
                                  recipient="everyone@example.org", payload={"claim_number": "1"},
                                  next_attempt_at=NOW, created_at=NOW))
        session.commit()
    report = dispatch(engine, sink.port, NOW)
    assert (report.sent, report.failed) == (3, 1)
    forged = rows(engine)[-1]
    assert forged.status == "failed" and "UnknownTemplate" in forged.last_error
    assert len(sink.messages()) == 3


def test_limit_caps_one_run(engine, sink):
    enqueue_three(engine)
    assert dispatch(engine, sink.port, NOW, limit=2).sent == 2
    assert dispatch(engine, sink.port, NOW, limit=2).sent == 1


def test_backoff_doubles_from_one_minute_up_to_an_hour():
    assert [backoff(n) for n in (0, 1, 2, 5, 6, 30)] == [
        timedelta(minutes=m) for m in (1, 2, 4, 32, 60, 60)
    ]


def test_a_dispatcher_out_of_lease_time_gives_its_untried_rows_back_at_once(engine, sink):
    enqueue_three(engine)
    report = dispatch(engine, sink.port, NOW, lease=timedelta(0))  # no time to send anything under this lease
    assert (report.sent, report.retried, report.failed) == (0, 0, 0)
    assert all(r.status == "pending" and r.lease_owner is None and r.attempts == 0 for r in rows(engine))
    assert dispatch(engine, sink.port, NOW).sent == 3  # due again at once, not when the lease would have expired


def test_a_claim_dispatch_sends_only_that_claims_mail_and_the_kill_switch_counts_it_alone(engine, sink):
    enqueue_three(engine)
    held = dispatch(engine, sink.port, NOW, enabled=False, claim_id=2)
    assert held.held == 1
    assert dispatch(engine, sink.port, NOW, claim_id=2).sent == 1
    assert [m["To"] for m in sink.messages()] == ["buyer2@example.org"]
    assert [r.status for r in rows(engine)] == ["pending", "sent", "pending"]


def test_a_message_past_its_send_before_is_failed_not_sent_nor_retried(engine, sink):
    """An enqueuer's send_before (a sign-in code's expiry): reached while the message waited, it is failed
    with the reason; one still in time is sent; an SMTP outage does not keep the expired one for retries."""
    with Session(engine) as session:
        for claim_id, minutes in ((1, 10), (2, 60)):
            enqueue_email(session, dedup_key=f"k{claim_id}", claim_id=claim_id, template="decision_approved",
                          recipient=f"buyer{claim_id}@example.org", payload=approved(claim_id), now=NOW,
                          send_before=NOW + timedelta(minutes=minutes))
        session.commit()
    down = SmtpSettings(host="127.0.0.1", port=free_port(), timeout=1)
    report = asyncio.run(dispatch_emails(engine=engine, smtp=down, now=NOW + timedelta(minutes=10), mail_from=MAIL_FROM))
    assert (report.sent, report.retried, report.failed) == (0, 1, 1)
    first, second = rows(engine)
    assert first.status == "failed" and first.last_error == "expired decision_approved: not sent (valid until 2026-11-25T09:40:00+00:00)"
    assert second.status == "pending"

    up = SmtpSettings(host=sink.host, port=sink.port, timeout=5)
    report = asyncio.run(dispatch_emails(engine=engine, smtp=up, now=NOW + timedelta(minutes=30), mail_from=MAIL_FROM))
    assert (report.sent, report.failed) == (1, 0)
    assert [m["To"] for m in sink.messages()] == ["buyer2@example.org"]
    assert [r.status for r in rows(engine)] == ["failed", "sent"]
