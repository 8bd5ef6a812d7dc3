"""outbox-dispatch is started only when mail was left behind (tasks/sweep_gate.py), on both backends.

Used to go wrong: outbox-dispatch ran every minute whether or not anything waited, 1,440 empty runs a
day in the Prefect UI's runs list and event feed.
"""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import update
from sqlmodel import Session

from tasks.outbox import enqueue_email, outbox_t
from tasks.sweep_gate import LEFT_BEHIND_AFTER, dispatch_slot_key, mail_left_behind

NOW = datetime(2026, 12, 8, 9, 0, tzinfo=UTC)


def _queue(engine, *, at: datetime, key: str = "k1") -> None:
    with Session(engine) as session:
        enqueue_email(session, dedup_key=key, claim_id=None, template="escalation_notice", recipient="supervisor@example.ru",
                      payload={}, now=at)
        session.commit()


def test_nothing_queued_or_just_queued_starts_no_run(engine):
    assert not mail_left_behind(engine, now=NOW)
    _queue(engine, at=NOW)
    assert not mail_left_behind(engine, now=NOW + LEFT_BEHIND_AFTER - timedelta(seconds=1))  # its own sender has it
    assert mail_left_behind(engine, now=NOW + LEFT_BEHIND_AFTER)


def test_mail_held_by_a_sender_sent_or_behind_the_kill_switch_starts_no_run(engine):
    _queue(engine, at=NOW - timedelta(minutes=5))
    assert not mail_left_behind(engine, now=NOW, enabled=False)
    with engine.begin() as conn:
        conn.execute(update(outbox_t).values(lease_owner="host:1:x", leased_until=NOW + timedelta(minutes=4)))
    assert not mail_left_behind(engine, now=NOW)
    assert mail_left_behind(engine, now=NOW + timedelta(minutes=5))  # the lease ran out: the sender died
    with engine.begin() as conn:
        conn.execute(update(outbox_t).values(status="sent", lease_owner=None, leased_until=None))
    assert not mail_left_behind(engine, now=NOW + timedelta(minutes=5))


def test_a_retry_waiting_for_its_backoff_is_not_left_behind_until_it_is_due(engine):
    _queue(engine, at=NOW - timedelta(minutes=5))
    with engine.begin() as conn:
        conn.execute(update(outbox_t).values(attempts=1, next_attempt_at=NOW + timedelta(minutes=2)))
    assert not mail_left_behind(engine, now=NOW)
    assert mail_left_behind(engine, now=NOW + timedelta(minutes=2) + LEFT_BEHIND_AFTER)


def test_one_run_per_interval_whichever_starter_asks():
    minute = timedelta(minutes=1)
    assert dispatch_slot_key(NOW, minute) == dispatch_slot_key(NOW + timedelta(seconds=59), minute)
    assert dispatch_slot_key(NOW, minute) != dispatch_slot_key(NOW + minute, minute)
