"""The run starter against the database, with Prefect behind an in-memory port (the flow tests use a real server)."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid4

import httpx
import pytest
from sqlalchemy import select

from models.claim_store import apply_trigger, claim_t
from models.tables import RunAction
from tasks.intake import ClaimInput, decide, decide_many, file_buyer_claim
from tasks.run_actions import (
    MAX_GENERATIONS,
    NotPaused,
    RunView,
    Verdict,
    drain_once,
    pause_key,
    paused_in,
    sweep,
    take_due,
    verdict,
)
from tests import factories as f

NOW = datetime(2026, 12, 8, 9, 0, tzinfo=UTC)
STALE = timedelta(minutes=10)
run_action_t = RunAction.__table__


class FakeRuns:
    """Prefect's runs of the refund-claim deployment, in memory; `down` makes every call fail like a refused connection."""

    def __init__(self):
        self.runs: dict[str, RunView] = {}
        self.by_key: dict[str, str] = {}
        self.inputs: list[tuple[str, dict]] = []
        self.down = False

    def _check(self):
        if self.down:
            raise httpx.ConnectError("[Errno 111] Connection refused")

    def create(self, *, claim_id, name, tags, idempotency_key):
        self._check()
        if idempotency_key not in self.by_key:
            run_id = str(uuid4())
            self.by_key[idempotency_key] = run_id
            self.runs[run_id] = RunView(run_id, "SCHEDULED", NOW, None, claim_id)
        return self.by_key[idempotency_key]

    def read(self, ids):
        self._check()
        return {i: self.runs[i] for i in ids if i in self.runs}

    def resume(self, run_id, run_input):
        self._check()
        if self.runs[run_id].state_type != "PAUSED":
            raise NotPaused(run_id)
        self.inputs.append((run_id, run_input))
        self.set(run_id, "RUNNING")

    def mark_crashed(self, run_id, message):
        self.set(run_id, "CRASHED")

    def paused(self):
        self._check()
        return [r for r in self.runs.values() if r.state_type == "PAUSED"]

    def set(self, run_id, state_type, *, key=None, since=NOW):
        old = self.runs[run_id]
        self.runs[run_id] = RunView(run_id, state_type, since, key, old.claim_id)

    def suspend(self, run_id, claim_id, engine):
        """The run read the claim and suspended, as flows/refund_claim.py does."""
        with engine.connect() as conn:
            row = conn.execute(select(claim_t.c.state, claim_t.c.version).where(claim_t.c.id == claim_id)).one()
        self.set(run_id, "PAUSED", key=pause_key(claim_id, row.state, row.version))


@pytest.fixture
def world(engine):
    with engine.begin() as conn:
        org = f.organizer(conn, email="org@example.ru")
        event = f.event(conn, starts_at=NOW + timedelta(days=20), organizer_id=org)
        tickets = [f.ticket(conn, event_id=event, order_id=f.order(conn, created_at=NOW - timedelta(days=30))) for _ in range(3)]
    return {"org": org, "tickets": tickets}


def _awaiting_organizer(engine, ticket: int) -> int:
    claim = file_buyer_claim(engine, ticket_id=ticket, reason="other", actor="service:test", now=NOW, description="командировка")
    with engine.begin() as conn:
        apply_trigger(conn, claim_id=claim.id, trigger="assess", actor="system", now=NOW)
    return claim.id


def _actions(engine, claim_id: int):
    with engine.connect() as conn:
        return conn.execute(select(run_action_t).where(run_action_t.c.claim_id == claim_id).order_by(run_action_t.c.id)).all()


def _flow_run_id(engine, claim_id: int) -> str | None:
    with engine.connect() as conn:
        return conn.execute(select(claim_t.c.flow_run_id).where(claim_t.c.id == claim_id)).scalar_one()


def test_a_filing_while_prefect_is_down_is_answered_and_its_run_created_when_prefect_is_back(engine, world):
    """Regression: a filing called Prefect in the request and answered 500 when it was down."""
    runs = FakeRuns()
    runs.down = True
    claim = file_buyer_claim(engine, ticket_id=world["tickets"][0], reason="voluntary", actor="service:test", now=NOW)
    assert claim.state == "filed" and claim.flow_run_id is None

    report = drain_once(engine, runs, now=NOW)
    assert report.taken == 1 and report.retried == 1 and "ConnectError" in report.errors[0]
    (action,) = _actions(engine, claim.id)
    assert (action.status, action.attempts, action.next_attempt_at) == ("pending", 1, NOW + timedelta(milliseconds=500))
    assert drain_once(engine, runs, now=NOW).taken == 0  # not due before its backoff

    runs.down = False
    later = NOW + timedelta(seconds=1)
    assert drain_once(engine, runs, now=later).created == 1
    (action,) = _actions(engine, claim.id)
    assert action.status == "done" and action.done_at == later
    assert _flow_run_id(engine, claim.id) == runs.by_key[f"refund-claim:{claim.id}"]


def test_a_leased_action_is_not_taken_twice(engine, world):
    file_buyer_claim(engine, ticket_id=world["tickets"][0], reason="voluntary", actor="service:test", now=NOW)
    assert len(take_due(engine, now=NOW, limit=10)) == 1
    assert take_due(engine, now=NOW + timedelta(seconds=5), limit=10) == []
    # A starter that died holding the lease: the action comes back when the lease ends.
    assert len(take_due(engine, now=NOW + timedelta(minutes=2), limit=10)) == 1


def test_resumes_are_taken_before_a_backlog_of_new_runs(engine, world):
    for t in world["tickets"][:2]:
        file_buyer_claim(engine, ticket_id=t, reason="voluntary", actor="service:test", now=NOW)
    claim_id = _awaiting_organizer(engine, world["tickets"][2])
    decide(engine, claim_id=claim_id, decision=ClaimInput(decision="approve"), now=NOW + timedelta(seconds=1), organizer_id=world["org"])
    taken = take_due(engine, now=NOW + timedelta(seconds=2), limit=2)
    assert [(a.kind, a.claim_id) for a in taken][0] == ("resume", claim_id)


def test_a_decision_queues_the_resume_with_the_step_and_the_starter_resumes_the_waiting_run(engine, world):
    runs = FakeRuns()
    claim_id = _awaiting_organizer(engine, world["tickets"][0])
    drain_once(engine, runs, now=NOW)
    run_id = _flow_run_id(engine, claim_id)
    runs.suspend(run_id, claim_id, engine)

    result = decide(engine, claim_id=claim_id, decision=ClaimInput(decision="approve", decided_by="org:test"), now=NOW, organizer_id=world["org"])
    assert result.state == "approved" and result.resumed is True
    resume = _actions(engine, claim_id)[-1]
    assert (resume.kind, resume.status, resume.payload["decision"]) == ("resume", "pending", "approve")

    assert drain_once(engine, runs, now=NOW).resumed == 1
    assert runs.inputs == [(run_id, resume.payload)]
    assert _actions(engine, claim_id)[-1].outcome.startswith(f"resumed {run_id} (awaiting_organizer -> approved)")


def test_a_resume_before_the_run_reaches_its_wait_is_retried_until_it_does(engine, world):
    """The run read the claim, the decision landed, then the run suspended: it must still be resumed."""
    runs = FakeRuns()
    claim_id = _awaiting_organizer(engine, world["tickets"][0])
    drain_once(engine, runs, now=NOW)
    run_id = _flow_run_id(engine, claim_id)
    runs.suspend(run_id, claim_id, engine)
    runs.set(run_id, "RUNNING")  # resumed by something else, not suspended yet
    decide(engine, claim_id=claim_id, decision=ClaimInput(decision="reject", note="Нет оснований"), now=NOW, organizer_id=world["org"])

    assert drain_once(engine, runs, now=NOW).retried == 1
    runs.set(run_id, "PAUSED", key=pause_key(claim_id, "awaiting_organizer", 2))
    assert drain_once(engine, runs, now=NOW + timedelta(seconds=1)).resumed == 1
    assert runs.inputs[0][1]["decision"] == "reject"


def test_a_bulk_decision_queues_every_resume_in_the_chunk_transaction(engine, world):
    claims = [_awaiting_organizer(engine, t) for t in world["tickets"]]
    result = decide_many(engine, claim_ids=claims, decision=ClaimInput(decision="approve", decided_by="org:bulk"), now=NOW, organizer_id=world["org"])
    assert sorted(result["decided"]) == sorted(claims) and result["resumed"] == 3
    for claim_id in claims:
        assert [(a.kind, a.payload.get("decision")) for a in _actions(engine, claim_id)] == [("create", None), ("resume", "approve")]


def test_the_sweep_resumes_runs_whose_claim_was_decided_while_no_resume_was_recorded(engine, world):
    """Regression: an API killed mid-bulk left approved claims with runs suspended forever."""
    runs = FakeRuns()
    approved, refused, waiting = (_awaiting_organizer(engine, t) for t in world["tickets"])
    drain_once(engine, runs, now=NOW)
    for claim_id in (approved, refused, waiting):
        runs.suspend(_flow_run_id(engine, claim_id), claim_id, engine)
    # Decided without their run actions (as by a process killed between the two, before this table).
    with engine.begin() as conn:
        apply_trigger(conn, claim_id=approved, trigger="approve", actor="org", now=NOW)
        apply_trigger(conn, claim_id=refused, trigger="reject", actor="org", now=NOW, data={"refusal_code": "ORGANIZER_REFUSED"})

    assert sweep(engine, runs, now=NOW + timedelta(seconds=30)).queued == {}  # within the grace: the step's own action may be on its way
    report = sweep(engine, runs, now=NOW + timedelta(minutes=2))
    assert report.queued == {"resume": 2}
    drain_once(engine, runs, now=NOW + timedelta(minutes=2))
    assert sorted(run for run, _ in runs.inputs) == sorted(_flow_run_id(engine, c) for c in (approved, refused))
    assert {i["decision"] for _, i in runs.inputs} == {"recheck"}
    assert runs.runs[_flow_run_id(engine, waiting)].state_type == "PAUSED"


def test_a_run_lost_with_its_worker_gets_a_new_generation(engine, world):
    runs = FakeRuns()
    claim = file_buyer_claim(engine, ticket_id=world["tickets"][0], reason="voluntary", actor="service:test", now=NOW)
    drain_once(engine, runs, now=NOW)
    first = _flow_run_id(engine, claim.id)
    runs.set(first, "RUNNING", since=NOW)

    assert sweep(engine, runs, now=NOW + timedelta(minutes=5)).queued == {}
    assert sweep(engine, runs, now=NOW + timedelta(minutes=11)).queued == {"lost": 1}
    drain_once(engine, runs, now=NOW + timedelta(minutes=11))
    assert runs.runs[first].state_type == "CRASHED"
    drain_once(engine, runs, now=NOW + timedelta(minutes=11))
    second = _flow_run_id(engine, claim.id)
    assert second != first and runs.by_key[f"refund-claim:{claim.id}:2"] == second


def test_new_generations_stop_at_the_cap_and_say_so(engine, world):
    runs = FakeRuns()
    claim = file_buyer_claim(engine, ticket_id=world["tickets"][0], reason="voluntary", actor="service:test", now=NOW)
    at = NOW
    for _ in range(MAX_GENERATIONS + 1):
        drain_once(engine, runs, now=at)
        runs.set(_flow_run_id(engine, claim.id), "COMPLETED")  # a buggy run that ends with the claim still filed
        at += timedelta(minutes=2)
        sweep(engine, runs, now=at)
        drain_once(engine, runs, now=at)
    outcomes = [a.outcome for a in _actions(engine, claim.id) if a.kind == "resume"]
    assert len([a for a in _actions(engine, claim.id) if a.kind == "create"]) == MAX_GENERATIONS
    assert outcomes[-1].startswith("stuck: run") and "left to ops" in outcomes[-1]


@pytest.mark.parametrize(("claim_state", "run", "expected"), [
    ("awaiting_organizer", RunView("r", "PAUSED", NOW, pause_key(1, "awaiting_organizer", 3)), Verdict.UP_TO_DATE),
    ("approved", RunView("r", "PAUSED", NOW, pause_key(1, "awaiting_organizer", 3)), Verdict.RESUME),
    ("rejected", RunView("r", "PAUSED", NOW, pause_key(1, "awaiting_documents", 3)), Verdict.RESUME),
    ("needs_bank_details", RunView("r", "PAUSED", NOW, pause_key(1, "needs_bank_details", 9, 2)), Verdict.UP_TO_DATE),
    ("payout_pending", RunView("r", "PAUSED", NOW, pause_key(1, "needs_bank_details", 9)), Verdict.RESUME),
    ("awaiting_organizer", RunView("r", "PAUSED", NOW, "claim-1-wait-1"), Verdict.RESUME),  # a run from before the keys named states
    ("approved", RunView("r", "COMPLETED", NOW), Verdict.RECREATE),
    ("needs_bank_details", RunView("r", "COMPLETED", NOW), Verdict.RECREATE),  # ended instead of waiting for the details
    ("paid", RunView("r", "COMPLETED", NOW), Verdict.UP_TO_DATE),
    ("awaiting_organizer", RunView("r", "CRASHED", NOW), Verdict.RECREATE),
    ("filed", None, Verdict.RECREATE),
    ("filed", RunView("r", "SCHEDULED", NOW - timedelta(hours=1)), Verdict.WAIT),  # late, not lost: the worker is busy
    ("approved", RunView("r", "RUNNING", NOW - timedelta(minutes=11)), Verdict.LOST),
    ("approved", RunView("r", "CANCELLED", NOW), Verdict.LEFT_TO_OPS),
])
def test_verdict(claim_state, run, expected):
    assert verdict(claim_state, run, now=NOW, stale_running=STALE) == expected


def test_pause_keys_name_the_state_waited_in():
    assert pause_key(42, "needs_bank_details", 7) == "claim-42-needs-bank-details-v7"
    assert paused_in(pause_key(42, "needs_bank_details", 7)) == "needs_bank_details"
    assert paused_in(pause_key(42, "awaiting_organizer", 7, 3)) == "awaiting_organizer"
    assert paused_in("claim-42-wait-1") is None and paused_in(None) is None


def test_a_crashed_run_is_left_to_the_rerun_automation_for_a_grace_then_replaced():
    """The re-run automation schedules the same run again within seconds; a new generation beside it would run the claim twice."""
    crashed = RunView("r", "CRASHED", NOW - timedelta(seconds=30))
    grace = timedelta(minutes=2)
    assert verdict("approved", crashed, now=NOW, stale_running=STALE, crashed_grace=grace) == Verdict.WAIT
    assert verdict("approved", crashed, now=NOW + timedelta(minutes=2), stale_running=STALE, crashed_grace=grace) == Verdict.RECREATE
    assert verdict("paid", crashed, now=NOW, stale_running=STALE, crashed_grace=grace) == Verdict.UP_TO_DATE
