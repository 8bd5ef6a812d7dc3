"""One dispatcher sending over several SMTP connections at once (``concurrency``): every message
still leaves once, is audited, is paced, and the kill switch and an outage stop it as before."""
from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import create_engine, func, select
from sqlmodel import Session, SQLModel

from models.tables import MailAudit, MailSwitch, MassSend, OutboxMessage
from tasks.emails import message_id_for
from tasks.outbox import Pacer, dispatch_emails, enqueue_email
from tasks.smtp import SmtpSettings
from tasks.smtp_sink import free_port, start_sink
from tests import factories as f

NOW = datetime(2026, 11, 25, 9, 30, tzinfo=UTC)
MAIL_FROM = "Возврат билетов <vozvrat@example.ru>"
outbox_t, audit_t = OutboxMessage.__table__, MailAudit.__table__


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


def enqueue(engine, n: int, *, bad: set[int] = frozenset()) -> list[str]:  # type: ignore[assignment]
    keys = []
    with Session(engine) as session:
        for i in range(n):
            key = f"claim:{i}:decision_approved"
            payload = {"claim_number": f"В-2026-{i:06d}", "event_title": "Пикник", "refund_kopecks": 175000,
                       "payout_deadline": "2026-12-23", "buyer_name": "Анна"}
            if i in bad:
                del payload["refund_kopecks"]  # cannot be rendered: fails alone
            assert enqueue_email(session, dedup_key=key, claim_id=i, template="decision_approved", recipient=f"b{i}@example.org",
                                 payload=payload, now=NOW)
            keys.append(key)
        session.commit()
    return keys


def statuses(engine) -> dict[str, int]:
    with engine.connect() as conn:
        return dict(conn.execute(select(outbox_t.c.status, func.count()).group_by(outbox_t.c.status)).all())


def leased(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(outbox_t).where(outbox_t.c.lease_owner.is_not(None))).scalar_one()


def dispatch(engine, port: int, now: datetime = NOW, **kw):
    return asyncio.run(dispatch_emails(engine=engine, smtp=SmtpSettings(port=port, timeout=5), now=now, mail_from=MAIL_FROM, **kw))


def test_several_connections_send_every_message_once_and_audit_each(engine, sink):
    keys = enqueue(engine, 23, bad={7})
    report = dispatch(engine, sink.port, concurrency=4, batch=10)
    assert (report.sent, report.retried, report.failed) == (22, 0, 1)
    assert statuses(engine) == {"sent": 22, "failed": 1} and leased(engine) == 0
    received = [r.message_id for r in sink.received]
    assert sorted(received) == sorted(message_id_for(k, MAIL_FROM) for i, k in enumerate(keys) if i != 7)
    with engine.connect() as conn:
        audited = [i for row in conn.execute(select(audit_t.c.outbox_ids)) for i in row.outbox_ids]
        sent_ids = list(conn.execute(select(outbox_t.c.id).where(outbox_t.c.status == "sent")).scalars())
    assert sorted(audited) == sorted(sent_ids)  # every message sent is audited, once
    assert dispatch(engine, sink.port, concurrency=4).sent == 0  # sent is final


def test_each_message_keeps_its_headers_and_status_link(engine, sink, monkeypatch):
    from models.settings import get_settings

    monkeypatch.setenv("VOZVRAT_LINK_SECRET", "s" * 40)
    get_settings.cache_clear()
    try:
        enqueue(engine, 6)
        assert dispatch(engine, sink.port, concurrency=3).sent == 6
    finally:
        get_settings.cache_clear()
    for message in sink.messages():
        claim = message["X-Vozvrat-Claim"]
        assert message["X-Vozvrat-Template"] == "decision_approved" and claim.startswith("В-2026-")
        assert message["To"] == f"b{int(claim[-6:])}@example.org"
        assert "/s/" in message.get_body(("plain",)).get_content()  # the «Где мои деньги» link, signed at send time


def test_the_kill_switch_stops_every_connection_and_gives_the_rest_back(engine, sink):
    enqueue(engine, 10)
    checks = iter([True, True, False])  # two sends start, then the switch is thrown
    report = dispatch(engine, sink.port, concurrency=2, still_enabled=lambda: next(checks, False))
    assert report.held_by_kill_switch and report.sent == 2
    assert len(sink.received) == 2 and statuses(engine) == {"sent": 2, "pending": 8}
    assert leased(engine) == 0  # nothing kept leased: with the switch back on, the rest leave at once
    assert dispatch(engine, sink.port, concurrency=2).sent == 8


def test_smtp_down_defers_every_message_with_its_backoff(engine):
    enqueue(engine, 7)
    report = dispatch(engine, free_port(), concurrency=3)
    assert (report.sent, report.retried, report.failed) == (0, 7, 0)
    with engine.connect() as conn:
        rows = conn.execute(select(outbox_t.c.status, outbox_t.c.attempts, outbox_t.c.next_attempt_at, outbox_t.c.last_error,
                                   outbox_t.c.lease_owner)).all()
    assert all(r.status == "pending" and r.attempts == 1 and r.last_error and r.lease_owner is None for r in rows)
    assert {r.next_attempt_at.replace(tzinfo=UTC) for r in rows} == {NOW + timedelta(minutes=1)}


def test_concurrent_senders_take_distinct_pacing_slots():
    clock = [100.0]
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(round(seconds, 6))
        await asyncio.sleep(0)

    pacer = Pacer(4.0, clock=lambda: clock[0], sleep=sleep)

    async def main() -> None:
        await asyncio.gather(*(pacer.wait() for _ in range(4)))

    asyncio.run(main())
    assert sorted(waits) == [0.25, 0.5, 0.75]  # 4 per second, however many senders ask at once


def test_concurrency_must_be_positive(engine, sink):
    with pytest.raises(ValueError, match="concurrency"):
        dispatch(engine, sink.port, concurrency=0)


def test_the_sweep_sends_over_the_configured_connections_and_one_claims_mail_over_one(tmp_path, sink, monkeypatch):
    """VOZVRAT_MAIL_CONNECTIONS reaches the outbox-dispatch sweep (tasks/claims.send_claim_mail without a
    claim); one claim's mail keeps one connection. The real connections are counted as they are made."""
    import tasks.outbox as outbox_module
    from models.db import get_engine
    from models.migrate import upgrade
    from models.settings import get_settings
    from tasks.claims import send_claim_mail

    url = f"sqlite:///{tmp_path / 'vozvrat.db'}"
    upgrade(url)
    for key, value in {"VOZVRAT_DATABASE_URL": url, "VOZVRAT_SMTP_HOST": "127.0.0.1", "VOZVRAT_SMTP_PORT": str(sink.port),
                       "VOZVRAT_MAIL_CONNECTIONS": "3", "VOZVRAT_MAIL_RATE_PER_S": "0"}.items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    get_engine.cache_clear()
    made: list[object] = []

    class Counted(outbox_module.SmtpConnection):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(outbox_module, "SmtpConnection", Counted)
    try:
        engine = get_engine()
        with engine.begin() as conn:
            claim_id = f.claim_in_payout(conn, now=NOW - timedelta(days=1))  # its steps queue its buyer's mail
        with Session(engine) as session:
            for i in range(11):
                assert enqueue_email(session, dedup_key=f"notice:{i}", claim_id=None, template="decision_approved",
                                     recipient=f"n{i}@example.org", payload={"claim_number": f"В-2026-{i:06d}", "event_title": "Пикник",
                                                                               "refund_kopecks": 175000, "payout_deadline": "2026-12-23"}, now=NOW)
            session.commit()
        own = send_claim_mail(claim_id, NOW).sent
        assert own >= 1 and len(made) == 1  # one claim's mail: one connection
        made.clear()
        assert send_claim_mail(None, NOW).sent == 11 and len(made) == 3
        assert statuses(engine) == {"sent": 11 + own}
        monkeypatch.setenv("VOZVRAT_MAIL_CONNECTIONS", "0")
        get_settings.cache_clear()
        with pytest.raises(ValueError):
            get_settings()
    finally:
        get_settings.cache_clear()
        get_engine.cache_clear()


@pytest.mark.parametrize("concurrency", [1, 3])
def test_a_slow_database_never_leaves_more_than_the_bound_sent_and_unrecorded(engine, sink, monkeypatch, concurrency):
    """Outcomes are committed on the dispatcher's database thread while the next messages go out; however
    slow that thread is, the messages sent but not yet recorded (what a kill would resend) stay within
    1 with one connection and 3 x concurrency - 1 with several (tasks/outbox.py)."""
    import threading
    import time

    from tasks import outbox as outbox_module

    enqueue(engine, 40)
    lock = threading.Lock()
    counts = {"delivered": 0, "recorded": 0, "worst": 0}
    real_deliver, real_record_many = outbox_module._deliver, outbox_module._record_many

    async def deliver(email, **kw):
        outcome = await real_deliver(email, **kw)
        with lock:
            counts["delivered"] += 1
            counts["worst"] = max(counts["worst"], counts["delivered"] - counts["recorded"])
        return outcome

    def record_many(engine_, outcomes, **kw):
        time.sleep(0.02)  # a database slower than the SMTP server: the senders must wait for it, not run ahead
        real_record_many(engine_, outcomes, **kw)
        with lock:
            counts["recorded"] += len(outcomes)

    monkeypatch.setattr(outbox_module, "_deliver", deliver)
    monkeypatch.setattr(outbox_module, "_record_many", record_many)
    assert dispatch(engine, sink.port, concurrency=concurrency, batch=20).sent == 40
    assert statuses(engine) == {"sent": 40} and counts["recorded"] == 40
    assert 1 <= counts["worst"] <= (1 if concurrency == 1 else 3 * concurrency - 1)
