"""Sign-in codes (tasks/buyer_auth.py): the one-time code never sits in the database in the clear, not
in the outbox row before it is sent nor after; the buyer's email carries it."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from models.tables import Order, OutboxMessage
from tasks.buyer_auth import request_code, verify_code
from tasks.outbox import dispatch_emails
from tasks.smtp import SmtpSettings
from tasks.smtp_sink import start_sink
from tests import factories as f

NOW = datetime(2026, 11, 25, 9, 30, tzinfo=UTC)
outbox_t, order_t = OutboxMessage.__table__, Order.__table__


@pytest.fixture
def sink(tmp_path):
    handle = start_sink("127.0.0.1", 0, tmp_path / "mail")
    yield handle
    handle.stop()


def _dump(engine) -> str:
    """Everything the outbox table holds, as text (what a stolen copy of the database shows)."""
    with engine.connect() as conn:
        return "\n".join(repr(tuple(r)) for r in conn.execute(select(outbox_t)))


def test_the_sign_in_code_is_never_in_the_outbox_in_the_clear(engine, sink):
    import asyncio

    with engine.begin() as conn:
        order_id = f.order(conn, created_at=NOW - timedelta(days=3), buyer_email="anna@example.ru")
        number = conn.execute(select(order_t.c.number).where(order_t.c.id == order_id)).scalar_one()
    key = request_code(engine, order_number=number, email="anna@example.ru", now=NOW)
    assert key is not None
    before = _dump(engine)
    assert "buyer_code" in before and "sealed" in before

    smtp = SmtpSettings(host=sink.host, port=sink.port, timeout=5)
    report = asyncio.run(dispatch_emails(engine=engine, smtp=smtp, now=NOW, mail_from="v@example.ru", dedup_key=key, limit=1))
    assert report.sent == 1
    (mail,) = sink.messages()
    body = mail.get_body(preferencelist=("plain",)).get_content()
    code = next(word for word in body.replace(".", " ").replace(":", " ").split() if word.isdigit() and len(word) == 6)
    assert code not in before and code not in _dump(engine)  # neither before sending nor after
    assert verify_code(engine, order_number=number, code=code, now=NOW + timedelta(minutes=1)) is not None  # and it is the real code


def test_a_page_header_names_the_signed_in_person_not_the_audit_form():
    from tasks.auth import Principal

    assert Principal(kind="organizer", audit="organizer:3:user:ivan@org.ru", organizer_id=3, user_id=7).shown_as == "ivan@org.ru"
    assert Principal(kind="staff", audit="staff:supervisor:anna", role="supervisor", user_id=2).shown_as == "anna (старший смены)"
    assert Principal(kind="organizer", audit="organizer:3", organizer_id=3).shown_as == "организатор (ключ API)"


@pytest.fixture
def per_ip_limit(monkeypatch):
    from models.settings import get_settings

    monkeypatch.setenv("VOZVRAT_BUYER_CODE_REQUESTS_PER_IP", "3")
    get_settings.cache_clear()
    yield 3
    monkeypatch.undo()
    get_settings.cache_clear()


def test_the_per_address_limit_holds_when_requests_arrive_at_once(engine, per_ip_limit):
    """API workers ask at the same moment from one address: no more than the limit pass, on SQLite and
    on PostgreSQL (threads, each with its own connection, released together by a barrier)."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from models.tables import CodeRequest
    from tasks.buyer_auth import TooManyCodeRequests

    with engine.begin() as conn:
        order_id = f.order(conn, created_at=NOW - timedelta(days=3), buyer_email="anna@example.ru")
        number = conn.execute(select(order_t.c.number).where(order_t.c.id == order_id)).scalar_one()
    workers = 12
    for round_ in range(3):  # three windows: each starts empty, each must stop at the limit
        now = NOW + timedelta(hours=2 * round_)
        barrier = threading.Barrier(workers)

        def ask(i: int, now: datetime = now, barrier: threading.Barrier = barrier) -> str:
            barrier.wait(timeout=30)
            try:
                request_code(engine, order_number=number if i % 2 else f"ORD-{i:06d}", email="anna@example.ru", now=now,
                             client="203.0.113.7")
            except TooManyCodeRequests as refused:
                assert refused.retry_after == 3600
                return "refused"
            return "asked"

        with ThreadPoolExecutor(max_workers=workers) as pool:
            answers = list(pool.map(ask, range(workers)))
        assert answers.count("asked") == per_ip_limit, answers
        assert answers.count("refused") == workers - per_ip_limit
        with engine.connect() as conn:
            assert len(conn.execute(select(CodeRequest.__table__.c.id)).all()) == per_ip_limit  # the last window's only
    # another address has its own limit
    request_code(engine, order_number=number, email="anna@example.ru", now=NOW + timedelta(hours=4), client="198.51.100.1")


def test_an_order_is_sent_no_more_codes_than_its_limit_when_requests_arrive_at_once(engine):
    """Several API workers asked for one order's code at the same moment (from different addresses): no
    more than CODE_REQUESTS codes are queued in the window, on SQLite and on PostgreSQL."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    from models.tables import BuyerCode
    from tasks.buyer_auth import CODE_REQUESTS

    with engine.begin() as conn:
        order_id = f.order(conn, created_at=NOW - timedelta(days=3), buyer_email="anna@example.ru")
        number = conn.execute(select(order_t.c.number).where(order_t.c.id == order_id)).scalar_one()
    workers = 3 * CODE_REQUESTS
    barrier = threading.Barrier(workers)

    def ask(i: int) -> str | None:
        barrier.wait(timeout=30)
        return request_code(engine, order_number=number, email="anna@example.ru", now=NOW, client=f"198.51.100.{i + 1}")

    with ThreadPoolExecutor(max_workers=workers) as pool:
        keys = list(pool.map(ask, range(workers)))
    assert sum(k is not None for k in keys) == CODE_REQUESTS
    with engine.connect() as conn:
        assert len(conn.execute(select(BuyerCode.__table__.c.id).where(BuyerCode.__table__.c.order_number == number)).all()) == CODE_REQUESTS
        assert len(conn.execute(select(outbox_t.c.id).where(outbox_t.c.template == "buyer_code")).all()) == CODE_REQUESTS


def _held_code(engine, *, email="anna@example.ru", at=NOW):
    """An order and a code requested for it while the kill switch is on (the dispatcher sends nothing)."""
    import asyncio

    with engine.begin() as conn:
        order_id = f.order(conn, created_at=at - timedelta(days=3), buyer_email=email)
        number = conn.execute(select(order_t.c.number).where(order_t.c.id == order_id)).scalar_one()
    key = request_code(engine, order_number=number, email=email, now=at)
    held = asyncio.run(dispatch_emails(engine=engine, smtp=SmtpSettings(host="127.0.0.1", port=9, timeout=1), now=at,
                                       mail_from="v@example.ru", enabled=False))
    assert held.held_by_kill_switch and held.held >= 1
    return number, key


def _row(engine, key):
    with engine.connect() as conn:
        return conn.execute(select(outbox_t.c.status, outbox_t.c.last_error, outbox_t.c.sent_at).where(outbox_t.c.dedup_key == key)).one()


def test_a_code_held_by_the_kill_switch_past_its_expiry_is_not_sent(engine, sink):
    """The switch is lifted 16 minutes later: the code (valid 15) is marked failed, nothing reaches the buyer."""
    import asyncio

    from tasks.buyer_auth import CODE_TTL

    _, key = _held_code(engine)
    smtp = SmtpSettings(host=sink.host, port=sink.port, timeout=5)
    report = asyncio.run(dispatch_emails(engine=engine, smtp=smtp, now=NOW + CODE_TTL, mail_from="v@example.ru"))
    assert (report.sent, report.failed) == (0, 1)
    assert sink.messages() == []
    status, error, sent_at = _row(engine, key)
    assert status == "failed" and sent_at is None
    assert error.startswith("expired buyer_code: not sent") and "2026-11-25T09:45:00+00:00" in error


def test_a_code_held_less_than_its_validity_is_still_sent(engine, sink):
    import asyncio

    number, key = _held_code(engine)
    smtp = SmtpSettings(host=sink.host, port=sink.port, timeout=5)
    later = NOW + timedelta(minutes=14)
    report = asyncio.run(dispatch_emails(engine=engine, smtp=smtp, now=later, mail_from="v@example.ru"))
    assert report.sent == 1 and len(sink.messages()) == 1
    assert _row(engine, key).status == "sent"


def test_a_held_code_superseded_by_a_newer_one_is_not_sent(engine, sink):
    """Two codes asked while the switch is on: once it is lifted the buyer gets the newer one only, and it works."""
    import asyncio

    number, first = _held_code(engine)
    second = request_code(engine, order_number=number, email="anna@example.ru", now=NOW + timedelta(minutes=2))
    assert second is not None and second != first
    status, error, _ = _row(engine, first)
    assert status == "superseded" and error == f"superseded by a newer sign-in code ({second})"

    smtp = SmtpSettings(host=sink.host, port=sink.port, timeout=5)
    report = asyncio.run(dispatch_emails(engine=engine, smtp=smtp, now=NOW + timedelta(minutes=5), mail_from="v@example.ru"))
    assert (report.sent, report.failed) == (1, 0)
    (mail,) = sink.messages()
    assert _row(engine, second).status == "sent"
    body = mail.get_body(preferencelist=("plain",)).get_content()
    code = next(word for word in body.replace(".", " ").replace(":", " ").split() if word.isdigit() and len(word) == 6)
    assert verify_code(engine, order_number=number, code=code, now=NOW + timedelta(minutes=6)) is not None
