"""Several dispatchers on one outbox, on SQLite and PostgreSQL, against the real aiosmtpd sink.

Regression (issue 8, item 4): on SQLite two dispatchers took the same row and a buyer got
«возврат одобрен» three times (55 emails for 48 outbox rows). Now rows are leased before sending.
"""
from __future__ import annotations

import asyncio
import multiprocessing
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, insert, select

from models.db import make_engine
from models.tables import OutboxMessage
from tasks.emails import render_email
from tasks.outbox import LEASE, DispatchReport, dispatch_emails, lease_due_emails
from tasks.smtp import SmtpSettings, send_message
from tasks.smtp_sink import free_port, start_sink

NOW = datetime(2026, 11, 25, 9, 30, tzinfo=UTC)
MAIL_FROM = "Возврат билетов <vozvrat@example.ru>"
MESSAGES = 2000
DISPATCHERS = 4

outbox_t = OutboxMessage.__table__


def approved(n: int) -> dict:
    return {"claim_number": f"VZ-{n:07d}-1", "event_title": "Пикник", "refund_kopecks": 175000,
            "payout_deadline": "2026-12-09", "buyer_name": "Анна"}


def fill_outbox(engine, count: int) -> None:
    """`count` pending approvals, written in one statement like a batch transition writes them."""
    with engine.begin() as conn:
        conn.execute(insert(outbox_t), [
            {"kind": "email", "dedup_key": f"claim:{n}:v2:decision_approved", "claim_id": None, "template": "decision_approved",
             "recipient": f"buyer{n}@example.org", "payload": approved(n), "status": "pending", "attempts": 0,
             "next_attempt_at": NOW, "created_at": NOW}
            for n in range(count)
        ])


def statuses(engine) -> Counter:
    with engine.connect() as conn:
        return Counter(dict(conn.execute(select(outbox_t.c.status, func.count()).group_by(outbox_t.c.status)).all()))


def stored_message_ids(engine) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(select(outbox_t.c.message_id)).scalars())


@pytest.fixture
def sink(tmp_path):
    handle = start_sink("127.0.0.1", 0, tmp_path / "mail")
    yield handle
    handle.stop()


def _dispatcher_process(db_url: str, port: int, number: int, start, results) -> None:
    """One dispatcher in its own process with its own engine, as on separate workers."""
    engine = make_engine(db_url)
    try:
        start.wait(timeout=60)
        report = asyncio.run(dispatch_emails(engine=engine, smtp=SmtpSettings(host="127.0.0.1", port=port, timeout=30), now=NOW,
                                             mail_from=MAIL_FROM, limit=MESSAGES, batch=25, owner=f"dispatcher-{number}"))
        results.put((number, report.sent, report.retried, report.failed, None))
    except BaseException as exc:  # noqa: BLE001 - reported by the test process
        results.put((number, 0, 0, 0, repr(exc)))
    finally:
        engine.dispose()


def test_four_dispatchers_deliver_each_of_2000_messages_exactly_once(db_url, tmp_path):
    setup = make_engine(db_url)
    fill_outbox(setup, MESSAGES)
    setup.dispose()  # no pooled connection crosses the fork
    port = free_port()
    ctx = multiprocessing.get_context("fork")  # no threads run yet in this process: the sink starts after the fork
    start, results = ctx.Barrier(DISPATCHERS + 1), ctx.Queue()
    workers = [ctx.Process(target=_dispatcher_process, args=(db_url, port, n, start, results)) for n in range(DISPATCHERS)]
    for worker in workers:
        worker.start()
    sink = start_sink("127.0.0.1", port, tmp_path / "mail")
    try:
        start.wait(timeout=60)
        reports = [results.get(timeout=240) for _ in workers]
        for worker in workers:
            worker.join(timeout=30)
    finally:
        sink.stop()
        for worker in workers:
            if worker.is_alive():
                worker.kill()

    assert [r[4] for r in reports] == [None] * DISPATCHERS, reports
    delivered = Counter(r.message_id for r in sink.received)
    assert sum(delivered.values()) == MESSAGES
    assert max(delivered.values()) == 1, delivered.most_common(3)
    assert set(delivered) == stored_message_ids(setup)  # every row's own, stable Message-ID arrived
    assert statuses(setup) == Counter({"sent": MESSAGES})
    assert sum(r[1] for r in reports) == MESSAGES and sum(r[2] + r[3] for r in reports) == 0
    assert sum(1 for r in reports if r[1]) >= 2, reports  # they really ran side by side
    with setup.connect() as conn:
        assert conn.execute(select(func.count()).select_from(outbox_t).where(outbox_t.c.lease_owner.is_not(None))).scalar_one() == 0
    setup.dispose()


def test_a_dispatcher_killed_after_the_smtp_answer_causes_one_duplicate_never_more(db_url, sink):
    engine = make_engine(db_url)
    fill_outbox(engine, 3)
    smtp = SmtpSettings(host=sink.host, port=sink.port, timeout=10)

    # The dead dispatcher leased everything, sent the first row, and died before recording it.
    with engine.begin() as conn:
        leased = lease_due_emails(conn, owner="dead", now=NOW, limit=10, mail_from=MAIL_FROM)
    first = leased[0]
    asyncio.run(send_message(render_email(first.template, to=first.recipient, context=first.payload, mail_from=MAIL_FROM,
                                          message_id_key=first.dedup_key, message_id=first.message_id, now=NOW), smtp))

    def run(now: datetime) -> DispatchReport:
        return asyncio.run(dispatch_emails(engine=engine, smtp=smtp, now=now, mail_from=MAIL_FROM))

    assert run(NOW + LEASE - timedelta(seconds=1)).sent == 0  # its lease still holds: nobody else sends
    assert run(NOW + LEASE).sent == 3  # expired: the rows come back, the sent one once more
    assert run(NOW + 2 * LEASE).sent == 0

    delivered = Counter(r.message_id for r in sink.received)
    assert delivered == Counter({first.message_id: 2, leased[1].message_id: 1, leased[2].message_id: 1})
    assert statuses(engine) == Counter({"sent": 3})
    engine.dispose()


def test_a_claim_run_dispatches_only_its_own_claims_mail(db_url, sink):
    """Regression: a claim's run sent everyone's mail (issue 8, item 5)."""
    from models.claim_store import file_claims
    from states.policy import Reason
    from tests import factories as f

    engine = make_engine(db_url)
    with engine.begin() as conn:
        event = f.event(conn, starts_at=NOW + timedelta(days=30))
        claims = []
        for n in range(2):
            order = f.order(conn, created_at=NOW - timedelta(days=3), buyer_email=f"buyer{n}@example.org")
            ticket = f.ticket(conn, event_id=event, order_id=order)
            claims += file_claims(conn, ticket_ids=[ticket], reason=Reason.VOLUNTARY, actor="buyer", now=NOW)
    with engine.begin() as conn:
        conn.execute(insert(outbox_t), [
            {"kind": "email", "dedup_key": f"claim:{c}:v1:decision_approved", "claim_id": c, "template": "decision_approved",
             "recipient": f"buyer{n}@example.org", "payload": approved(c), "status": "pending", "attempts": 0,
             "next_attempt_at": NOW, "created_at": NOW}
            for n, c in enumerate(claims)
        ])
    smtp = SmtpSettings(host=sink.host, port=sink.port, timeout=10)

    report = asyncio.run(dispatch_emails(engine=engine, smtp=smtp, now=NOW, mail_from=MAIL_FROM, claim_id=claims[0]))
    assert report.sent == 1
    assert [r.rcpt_tos for r in sink.received] == [["buyer0@example.org"]]
    assert asyncio.run(dispatch_emails(engine=engine, smtp=smtp, now=NOW, mail_from=MAIL_FROM)).sent == 1  # the sweep
    engine.dispose()
