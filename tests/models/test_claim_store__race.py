"""Two actors on one claim at the same moment (PostgreSQL, two connections): exactly one step is written."""
from __future__ import annotations

import threading
from collections import Counter
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

import models.claim_store as claim_store
from models.claim_store import ConflictError, apply_batch, apply_trigger, file_claims
from models.db import make_engine
from models.tables import Claim, ClaimTransition
from states.policy import Reason
from tests import factories

MSK = ZoneInfo("Europe/Moscow")
FILED = datetime(2026, 3, 2, 10, tzinfo=MSK)  # decision due 16.03.2026; extended: 31.03.2026
claim_t, audit_t = Claim.__table__, ClaimTransition.__table__
ROUNDS = 20


@pytest.fixture
def pg_engine(pg_url):
    engine = make_engine(pg_url, pool_size=4)
    yield engine
    engine.dispose()


def _awaiting_organizer(engine, count: int) -> list[int]:
    with engine.begin() as conn:
        event_id = factories.event(conn, starts_at=datetime(2026, 6, 1, 19, tzinfo=MSK))
        ids = file_claims(conn, ticket_ids=factories.tickets_bulk(conn, event_id=event_id, count=count), reason=Reason.OTHER, actor="buyer", now=FILED)
    result = apply_batch(engine, claim_ids=ids, trigger="assess", actor="system", now=FILED)
    assert sorted(result.moved["awaiting_organizer"]) == sorted(ids)
    return ids


def _count_steps(engine, claim_id: int, triggers: tuple[str, ...]) -> int:
    with engine.connect() as conn:
        return conn.execute(
            select(func.count()).select_from(audit_t).where(audit_t.c.claim_id == claim_id, audit_t.c.trigger.in_(triggers))
        ).scalar_one()


def test_approve_and_reject_race_exactly_one_wins(pg_engine, monkeypatch):
    ids = _awaiting_organizer(pg_engine, ROUNDS)
    barrier = threading.Barrier(2, timeout=20)
    real_fire = claim_store.fire

    def fire_after_both_have_read(trigger, facts, now):
        # apply_trigger has read the claim (load_facts) and not yet written: hold both actors here.
        barrier.wait()
        return real_fire(trigger, facts, now)

    monkeypatch.setattr(claim_store, "fire", fire_after_both_have_read)
    now = datetime(2026, 3, 5, 12, tzinfo=MSK)
    winners: Counter[str] = Counter()

    for claim_id in ids:
        barrier.reset()
        results: dict[str, object] = {}

        def actor(trigger: str) -> None:
            try:
                with pg_engine.begin() as conn:
                    results[trigger] = apply_trigger(conn, claim_id=claim_id, trigger=trigger, actor=f"organizer:{trigger}", now=now).dest
            except Exception as exc:  # noqa: BLE001 - the assertion below says which
                results[trigger] = exc

        threads = [threading.Thread(target=actor, args=(t,)) for t in ("approve", "reject")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert not any(t.is_alive() for t in threads)

        won = [t for t, r in results.items() if isinstance(r, str)]
        lost = [r for r in results.values() if not isinstance(r, str)]
        assert len(won) == 1, results
        assert len(lost) == 1 and isinstance(lost[0], ConflictError), results
        winners[won[0]] += 1

        with pg_engine.connect() as conn:
            state, version = conn.execute(select(claim_t.c.state, claim_t.c.version).where(claim_t.c.id == claim_id)).one()
        assert state == {"approve": "approved", "reject": "rejected"}[won[0]]
        assert version == 3
        assert _count_steps(pg_engine, claim_id, ("approve", "reject")) == 1
    assert sum(winners.values()) == ROUNDS


def test_batch_escalate_does_not_act_on_an_extension_committed_after_its_read(pg_engine, monkeypatch):
    """Regression: the batch UPDATE was guarded by state only, so an internal step (extend_review) committed
    between the batch's read and its write went unseen and a claim no longer overdue was escalated."""
    (claim_id,) = _awaiting_organizer(pg_engine, 1)
    now = datetime(2026, 3, 18, 10, tzinfo=MSK)  # overdue at 10 working days (16.03), in time at 20 (31.03)
    real_judge = claim_store.Judge
    extension: list[str] = []

    class OrganizerExtendsMeanwhile(real_judge):
        def __call__(self, facts):
            outcome = super().__call__(facts)
            if self.trigger == "escalate":
                # Another connection: the organizer extends the review between the batch's read and its write.
                # NOWAIT: if the batch holds the row lock, the organizer is told at once instead of waiting on us.
                try:
                    with pg_engine.begin() as other:
                        other.execute(select(claim_t.c.id).where(claim_t.c.id == claim_id).with_for_update(nowait=True))
                        apply_trigger(other, claim_id=claim_id, trigger="extend_review", actor="organizer:1", now=self.now)
                    extension.append("committed")
                except OperationalError:
                    extension.append("locked out")
            return outcome

    monkeypatch.setattr(claim_store, "Judge", OrganizerExtendsMeanwhile)
    result = apply_batch(pg_engine, claim_ids=[claim_id], trigger="escalate", actor="sla-watch", now=now)

    with pg_engine.connect() as conn:
        state, extended = conn.execute(select(claim_t.c.state, claim_t.c.extended).where(claim_t.c.id == claim_id)).one()
        trail = conn.execute(select(audit_t.c.from_state, audit_t.c.to_state).where(audit_t.c.claim_id == claim_id).order_by(audit_t.c.id)).all()
    assert len(extension) == 1
    if extension == ["committed"]:
        # The batch must notice the claim changed under it and leave it alone.
        assert (extended, state) == (True, "awaiting_organizer"), (result, trail)
        assert claim_id in result.conflicts
    else:
        # The batch held the row: it decided on current facts and escalated; the extension never happened.
        assert (extended, state) == (False, "escalated")
        assert dict(result.moved) == {"escalated": [claim_id]}
    for previous, following in zip(trail, trail[1:]):
        assert previous.to_state == following.from_state
