"""The outbound-mail kill switch in the database (tasks/mail_switch.py): thrown from another connection
while a dispatcher sends, it stops before the next message and gives the rest back; released, the rest go.
Used to go wrong: the switch was the process's environment, so stopping mail needed a restart of every worker."""
from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlmodel import Session

from models.db import make_engine
from models.tables import MailSwitchChange, OutboxMessage
from tasks.accounts import create_user
from tasks.auth import Principal
from tasks.mail_switch import LiveMailSwitch, MailSwitchRefused, mail_switch_state, set_mail_switch
from tasks.outbox import dispatch_emails, enqueue_email
from tasks.smtp import SmtpSettings
from tasks.smtp_sink import start_sink
from tasks.sweep_gate import mail_left_behind

NOW = datetime(2026, 11, 25, 9, 30, tzinfo=UTC)
MAIL_FROM = "Возврат билетов <vozvrat@example.ru>"
PASSWORD = "correct horse battery"
outbox_t, change_t = OutboxMessage.__table__, MailSwitchChange.__table__


@pytest.fixture
def sink(tmp_path):
    handle = start_sink("127.0.0.1", 0, tmp_path / "mail")
    yield handle
    handle.stop()


def people(engine) -> tuple[Principal, Principal]:
    anna = create_user(engine, login="anna@example.ru", password=PASSWORD, kind="staff", role="supervisor", now=NOW).principal
    sam = create_user(engine, login="sam@example.ru", password=PASSWORD, kind="staff", role="support", now=NOW).principal
    return anna, sam


def enqueue(engine, n: int) -> None:
    with Session(engine) as session:
        for i in range(n):
            assert enqueue_email(session, dedup_key=f"switch:{i}", claim_id=None, template="decision_approved", recipient=f"b{i}@example.org",
                                 payload={"claim_number": f"В-2026-{i:06d}", "event_title": "Пикник", "refund_kopecks": 175000,
                                          "payout_deadline": "2026-12-23", "buyer_name": "Анна"}, now=NOW)
        session.commit()


def statuses(engine) -> dict[str, int]:
    with engine.connect() as conn:
        return dict(conn.execute(select(outbox_t.c.status, func.count()).group_by(outbox_t.c.status)).all())


def leased(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(outbox_t).where(outbox_t.c.lease_owner.is_not(None))).scalar_one()


class ScriptedClock:
    """A monotonic clock for the dispatcher's switch cache: ``at[k]`` runs on the k-th reading (1-based),
    before the reading is answered; ``advance`` moves time on. Never sleeps."""

    def __init__(self, at: dict[int, object]):
        self.t, self.calls, self.at = 100.0, 0, at

    def __call__(self) -> float:
        self.calls += 1
        action = self.at.get(self.calls)
        if action is not None:
            action()  # type: ignore[operator]
        return self.t


def test_only_a_supervisor_throws_it_and_every_change_is_audited_with_the_principal(engine):
    anna, sam = people(engine)
    assert mail_switch_state(engine).held is False  # no row: not held
    with pytest.raises(MailSwitchRefused) as refused:
        set_mail_switch(engine, held=True, principal=sam, now=NOW, reason="взлом")
    assert refused.value.forbidden and "supervisor" in refused.value.message_ru
    with pytest.raises(MailSwitchRefused) as refused:
        set_mail_switch(engine, held=True, principal=anna, now=NOW, reason="   ")
    assert refused.value.field == "reason"
    assert set_mail_switch(engine, held=False, principal=anna, now=NOW) == (mail_switch_state(engine), False)  # nothing to release

    state, changed = set_mail_switch(engine, held=True, principal=anna, now=NOW, reason="  рассылка от злоумышленника ")
    assert changed and state.held and state.reason == "рассылка от злоумышленника" and state.changed_by == "staff:supervisor:anna@example.ru"
    assert mail_switch_state(engine) == state and mail_switch_state(engine).changed_at == NOW
    again, changed = set_mail_switch(engine, held=True, principal=anna, now=NOW + timedelta(minutes=1), reason="ещё раз")
    assert not changed and again == state  # the first holder stays on record
    _, changed = set_mail_switch(engine, held=False, principal=anna, now=NOW + timedelta(hours=1))
    assert changed and mail_switch_state(engine).held is False
    with engine.connect() as conn:
        rows = conn.execute(select(change_t.c.principal, change_t.c.held, change_t.c.reason, change_t.c.at).order_by(change_t.c.id)).all()
    assert [tuple(r) for r in rows] == [("staff:supervisor:anna@example.ru", True, "рассылка от злоумышленника", NOW),
                                        ("staff:supervisor:anna@example.ru", False, None, NOW + timedelta(hours=1))]


def test_thrown_from_another_connection_mid_send_it_stops_before_the_next_message_and_release_lets_the_rest_go(engine, db_url, sink):
    anna, _ = people(engine)
    enqueue(engine, 8)
    other = make_engine(db_url)  # ops' connection, not the dispatcher's
    try:
        def throw() -> None:
            set_mail_switch(other, held=True, principal=anna, now=NOW, reason="взлом: письма с приглашениями")

        def tick() -> None:
            clock.t += 1.0

        # Readings: 1 at the entry (reads the row), 2 before message 1 (a new batch: reads again), 3 before
        # message 2, 4 before message 3 (the switch is thrown there, but the row read at 2 is trusted for a
        # second: message 3 still goes), 5 before message 4 (a second has passed: read again, held, stop).
        clock = ScriptedClock({4: throw, 5: tick})
        switch = LiveMailSwitch(engine, clock=clock)
        report = asyncio.run(dispatch_emails(engine=engine, smtp=SmtpSettings(port=sink.port, timeout=5), now=NOW, mail_from=MAIL_FROM,
                                             mail_switch=switch))
        assert report.held_by_kill_switch and report.sent == 3 and len(sink.received) == 3
        assert switch.reads == 3  # the entry, the batch's start, once after the second passed: not one per message
        assert statuses(engine) == {"sent": 3, "pending": 5} and leased(engine) == 0  # the rest given back at once
        assert mail_left_behind(engine, now=NOW + timedelta(hours=1)) is False  # held mail is not "left behind"

        held = asyncio.run(dispatch_emails(engine=engine, smtp=SmtpSettings(port=sink.port, timeout=5), now=NOW, mail_from=MAIL_FROM,
                                           enabled=True))  # a flow passing settings.outbound_email_enabled=True is held all the same
        assert held.held_by_kill_switch and held.held == 5 and held.sent == 0 and leased(engine) == 0

        set_mail_switch(other, held=False, principal=anna, now=NOW + timedelta(minutes=5))
        report = asyncio.run(dispatch_emails(engine=engine, smtp=SmtpSettings(port=sink.port, timeout=5), now=NOW, mail_from=MAIL_FROM))
        assert (report.sent, report.held_by_kill_switch) == (5, False)
        assert statuses(engine) == {"sent": 8} and len(sink.received) == 8
        assert len({m.message_id for m in sink.received}) == 8  # each once
    finally:
        other.dispose()


def test_the_environment_switch_still_holds_beside_the_database_one(engine, sink, monkeypatch):
    enqueue(engine, 2)
    monkeypatch.setenv("VOZVRAT_OUTBOUND_EMAIL_ENABLED", "false")
    report = asyncio.run(dispatch_emails(engine=engine, smtp=SmtpSettings(port=sink.port, timeout=5), now=NOW, mail_from=MAIL_FROM))
    assert report.held_by_kill_switch and report.sent == 0 and sink.received == []
    assert statuses(engine) == {"pending": 2} and leased(engine) == 0
