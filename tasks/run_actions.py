"""The run starter: every recorded step reaches its claim's flow run, at the pace Prefect bears.

The API never calls Prefect. A filing writes a `create` action and a decision (or documents, or
bank details) writes a `resume` action into `run_action`, in the same transaction as the step
(`queue_create`, `queue_resume`). The starter (`flows/run_starter.py`, a long-running process of the
stack) takes due actions under a lease (`take_due`), creates or resumes the run (`process`), and
retries with backoff when Prefect is down or busy; nothing is lost while the row is there.

Whether a run needs anything is judged by one pure function, `verdict`, from the claim's state and
the run's state: a suspended run names the claim state it waits in (its pause key, see
`pause_key`), so a run suspended in `awaiting_organizer` while the claim is `approved` is behind and
is resumed; a run that ended (completed, failed, crashed, deleted) while the claim still needs one
gets a new run, the next generation (idempotency key `refund-claim:<claim>:<generation>`).
`sweep` applies the same judgement to every claim now and then, so a step whose action never got
written (a killed API process, a claim filed before this table) is caught up as well.
"""
from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol
from uuid import UUID

from sqlalchemy import and_, case, exists, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from models.claim_store import claim_t, id_in
from models.claim_views import read_claim
from models.tables import RunAction
from states.lifecycle import ClaimState

run_action_t = RunAction.__table__

REFUND_CLAIM_DEPLOYMENT = "refund-claim/refund-claim"
CREATE, RESUME = "create", "resume"
PENDING, DONE = "pending", "done"

S = ClaimState
# States in which the claim's run still has work: it assesses, waits for a person, or pays.
RUN_DRIVEN_STATES = frozenset({S.FILED, S.AWAITING_DOCUMENTS, S.AWAITING_ORGANIZER, S.ESCALATED, S.APPROVED, S.NEEDS_BANK_DETAILS})
# States in which the run stays suspended until a person (organizer, buyer) acts.
RUN_WAIT_STATES = frozenset({S.AWAITING_DOCUMENTS, S.AWAITING_ORGANIZER, S.ESCALATED, S.NEEDS_BANK_DETAILS})
# A run that ended while its claim still needs one gets at most this many successors; past it the
# sweep reports the claim as stuck (a bug to look at, not a loop to spin).
MAX_GENERATIONS = 5

LEASE = timedelta(seconds=60)
BACKOFF_BASE = timedelta(milliseconds=500)
BACKOFF_CAP = timedelta(seconds=60)


# --- the pause key: what a suspended run waits for ------------------------------------------------

_PAUSE_KEY = re.compile(r"^claim-(?P<claim>\d+)-(?P<state>[a-z]+(?:-[a-z]+)*)-v(?P<version>\d+)(?:-(?P<repeat>\d+))?$")


def pause_key(claim_id: int, state: str, version: int, repeat: int = 1) -> str:
    """`claim-42-needs-bank-details-v7`: the claim, the state it waits in, the claim version it read.

    Shown in the Prefect UI on the suspended run. `repeat` tells apart a second wait at the same
    version (a decision from the UI form that the guards refused). Dashes, not underscores: Prefect
    names the run's input records after the key and takes only letters, digits and dashes there.
    """
    return f"claim-{claim_id}-{state.replace('_', '-')}-v{version}" + (f"-{repeat}" if repeat > 1 else "")


def paused_in(key: str | None) -> str | None:
    """The claim state a suspended run waits in, from its pause key; None for a key of another shape."""
    match = _PAUSE_KEY.match(key or "")
    return match["state"].replace("-", "_") if match else None


def idempotency_key(claim_id: int, generation: int) -> str:
    # Generation 1 keeps the key runs had before generations existed.
    return f"refund-claim:{claim_id}" if generation == 1 else f"refund-claim:{claim_id}:{generation}"


# --- judging a claim against its run --------------------------------------------------------------

@dataclass(frozen=True)
class RunView:
    """What the starter needs of a Prefect flow run."""

    id: str
    state_type: str  # SCHEDULED | PENDING | RUNNING | PAUSED | COMPLETED | FAILED | CRASHED | CANCELLING | CANCELLED
    state_since: datetime
    pause_key: str | None = None
    claim_id: int | None = None


class Verdict(StrEnum):
    UP_TO_DATE = "up to date"
    RESUME = "resume"  # suspended in another state than the claim's
    RECREATE = "recreate"  # gone or ended while the claim still needs a run
    LOST = "lost"  # running far longer than any step takes: its process died with the worker
    WAIT = "wait"  # scheduled or running: it will read the claim itself; look again later
    LEFT_TO_OPS = "left to ops"  # cancelled by a person


def verdict(claim_state: str, run: RunView | None, *, now: datetime, stale_running: timedelta,
            crashed_grace: timedelta = timedelta(0)) -> Verdict:
    """What the claim's run needs, given the claim's recorded state (the truth) and the run's state.

    A run crashed less than `crashed_grace` ago is waited for: the re-run automation
    (tasks/automations.py) schedules that same run again within seconds; a new generation beside it
    would only run the claim twice (harmless, never useful). One that stays crashed gets a new run."""
    if run is None:
        return Verdict.RECREATE if claim_state in RUN_DRIVEN_STATES else Verdict.UP_TO_DATE
    kind = run.state_type
    if kind == "PAUSED":
        return Verdict.UP_TO_DATE if paused_in(run.pause_key) == claim_state else Verdict.RESUME
    if kind in ("SCHEDULED", "PENDING"):
        return Verdict.WAIT
    if kind == "RUNNING":
        return Verdict.LOST if now - run.state_since > stale_running else Verdict.WAIT
    if kind in ("CANCELLING", "CANCELLED"):
        return Verdict.LEFT_TO_OPS
    if kind == "CRASHED" and now - run.state_since < crashed_grace and claim_state in RUN_DRIVEN_STATES:
        return Verdict.WAIT
    return Verdict.RECREATE if claim_state in RUN_DRIVEN_STATES else Verdict.UP_TO_DATE


# --- queueing, inside the step's transaction ------------------------------------------------------

def _insert(conn: Connection):
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(run_action_t)


def _utc(now: datetime) -> datetime:
    if now.tzinfo is None:
        raise ValueError(f"naive datetime {now!r}: time must be tz-aware")
    return now.astimezone(UTC)


def queue_create(conn: Connection, *, claim_id: int, now: datetime, generation: int = 1) -> bool:
    """Ask for the claim's flow run (generation n); a repeated ask for the same generation is ignored."""
    now = _utc(now)
    stmt = _insert(conn).values(
        claim_id=claim_id, kind=CREATE, dedup_key=f"create:{claim_id}:{generation}", payload={"generation": generation},
        status=PENDING, attempts=0, next_attempt_at=now, created_at=now,
    ).on_conflict_do_nothing(index_elements=["dedup_key"])
    return conn.execute(stmt.returning(run_action_t.c.id)).first() is not None


def queue_resume(conn: Connection, *, claim_ids: Sequence[int], step: dict[str, Any], now: datetime) -> None:
    """Ask for each claim's run to be brought up to date after `step` (a ClaimInput as JSON)."""
    if not claim_ids:
        return
    now = _utc(now)
    conn.execute(insert(run_action_t), [
        {"claim_id": i, "kind": RESUME, "dedup_key": None, "payload": step, "status": PENDING, "attempts": 0,
         "next_attempt_at": now, "created_at": now} for i in claim_ids
    ])


def next_generation(conn: Connection, claim_id: int) -> int:
    made = conn.execute(select(func.count()).select_from(run_action_t).where(
        run_action_t.c.claim_id == claim_id, run_action_t.c.kind == CREATE)).scalar_one()
    return made + 1


# --- taking and finishing -------------------------------------------------------------------------

@dataclass(frozen=True)
class Action:
    id: int
    claim_id: int
    kind: str
    payload: dict[str, Any]
    attempts: int


def _due(now: datetime):
    return and_(run_action_t.c.status == PENDING, run_action_t.c.next_attempt_at <= now,
                or_(run_action_t.c.lease_until.is_(None), run_action_t.c.lease_until < now))


def take_due(engine: Engine, *, now: datetime, limit: int, lease: timedelta = LEASE) -> list[Action]:
    """Lease up to `limit` due actions, resumes first, then oldest first; another starter skips them
    until the lease ends."""
    now = _utc(now)
    with engine.begin() as conn:
        query = (select(run_action_t.c.id, run_action_t.c.claim_id, run_action_t.c.kind, run_action_t.c.payload, run_action_t.c.attempts)
                 # A decision's resume goes before a burst of new claims' runs: a person is waiting on it.
                 .where(_due(now)).order_by(case((run_action_t.c.kind == RESUME, 0), else_=1), run_action_t.c.next_attempt_at,
                                            run_action_t.c.id).limit(limit))
        if conn.dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        rows = conn.execute(query).all()
        if rows:
            conn.execute(update(run_action_t).where(id_in(conn, run_action_t.c.id, [r.id for r in rows]))
                         .values(lease_until=now + lease))
    return [Action(r.id, r.claim_id, r.kind, r.payload, r.attempts) for r in rows]


def backoff(attempts_before: int) -> timedelta:
    """0.5 s * 2**attempts, capped at a minute: Prefect busy or down is retried, never dropped."""
    return min(BACKOFF_BASE * 2 ** min(attempts_before, 10), BACKOFF_CAP)


def _finish(conn: Connection, action: Action, *, now: datetime, outcome: str) -> None:
    conn.execute(update(run_action_t).where(run_action_t.c.id == action.id).values(
        status=DONE, done_at=now, lease_until=None, outcome=outcome[:500], attempts=action.attempts + 1))


def _later(engine: Engine, action: Action, *, now: datetime, error: str) -> None:
    with engine.begin() as conn:
        conn.execute(update(run_action_t).where(run_action_t.c.id == action.id).values(
            attempts=action.attempts + 1, next_attempt_at=now + backoff(action.attempts), lease_until=None, last_error=error[:500]))


# --- Prefect, behind a port -----------------------------------------------------------------------

class NotPaused(RuntimeError):
    """The run left its suspended state before it could be resumed."""


class RunsPort(Protocol):
    def create(self, *, claim_id: int, name: str, tags: list[str], idempotency_key: str) -> str: ...
    def read(self, flow_run_ids: Sequence[str]) -> dict[str, RunView]: ...
    def resume(self, flow_run_id: str, run_input: dict[str, Any]) -> None: ...
    def mark_crashed(self, flow_run_id: str, message: str) -> None: ...
    def paused(self) -> Iterable[RunView]: ...


class PrefectRuns:
    """The refund-claim deployment's runs on a Prefect server: one sync client per starter thread."""

    def __init__(self, deployment: str = REFUND_CLAIM_DEPLOYMENT, page: int = 200):
        self.deployment = deployment
        self.page = page
        self._local = threading.local()
        self._deployment_id: UUID | None = None

    def _client(self):
        client = getattr(self._local, "client", None)
        if client is None:
            from prefect.client.orchestration import get_client

            client = get_client(sync_client=True)
            client.__enter__()
            self._local.client = client
        return client

    def deployment_id(self) -> UUID:
        if self._deployment_id is None:
            self._deployment_id = self._client().read_deployment_by_name(self.deployment).id
        return self._deployment_id

    @staticmethod
    def _view(run) -> RunView:
        state = run.state
        claim_id = run.parameters.get("claim_id") if run.parameters else None
        return RunView(id=str(run.id), state_type=state.type.value if state else "PENDING",
                       state_since=(state.timestamp if state else run.created).astimezone(UTC),
                       pause_key=state.state_details.pause_key if state else None,
                       claim_id=int(claim_id) if claim_id is not None else None)

    def create(self, *, claim_id: int, name: str, tags: list[str], idempotency_key: str) -> str:
        run = self._client().create_flow_run_from_deployment(
            self.deployment_id(), parameters={"claim_id": claim_id}, name=name, tags=tags, idempotency_key=idempotency_key)
        return str(run.id)

    def read(self, flow_run_ids: Sequence[str]) -> dict[str, RunView]:
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

        out: dict[str, RunView] = {}
        ids = list(flow_run_ids)
        for start in range(0, len(ids), self.page):
            chunk = [UUID(i) for i in ids[start:start + self.page]]
            for run in self._client().read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=chunk)), limit=len(chunk)):
                out[str(run.id)] = self._view(run)
        return out

    def resume(self, flow_run_id: str, run_input: dict[str, Any]) -> None:
        from prefect.client.schemas.objects import StateType
        from prefect.client.schemas.responses import SetStateStatus

        result = self._client().resume_flow_run(UUID(flow_run_id), run_input=run_input)
        if result.status == SetStateStatus.REJECT or result.status == SetStateStatus.ABORT:
            if result.state is not None and result.state.type != StateType.PAUSED:
                raise NotPaused(f"run {flow_run_id} is {result.state.type.value}")
            raise RuntimeError(f"cannot resume run {flow_run_id}: {getattr(result.details, 'reason', result.details)}")

    def mark_crashed(self, flow_run_id: str, message: str) -> None:
        from prefect.states import Crashed

        self._client().set_flow_run_state(UUID(flow_run_id), Crashed(message=message), force=True)

    def paused(self) -> Iterable[RunView]:
        from prefect.client.schemas.filters import (
            DeploymentFilter,
            DeploymentFilterId,
            FlowRunFilter,
            FlowRunFilterState,
            FlowRunFilterStateType,
        )
        from prefect.client.schemas.objects import StateType

        offset = 0
        while True:
            runs = self._client().read_flow_runs(
                flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))),
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[self.deployment_id()])),
                limit=self.page, offset=offset)
            yield from (self._view(r) for r in runs)
            if len(runs) < self.page:
                return
            offset += self.page


# --- processing one action ------------------------------------------------------------------------

@dataclass
class DrainReport:
    taken: int = 0
    created: int = 0
    resumed: int = 0
    up_to_date: int = 0
    requeued: int = 0  # a new generation asked for
    retried: int = 0  # Prefect down or busy, or the run not at its wait yet: tried again later
    errors: list[str] = field(default_factory=list)

    def add(self, outcome: str) -> None:
        if outcome.startswith("created"):
            self.created += 1
        elif outcome.startswith("resumed"):
            self.resumed += 1
        elif outcome.startswith("new run"):
            self.requeued += 1
        elif outcome.startswith("retry"):
            self.retried += 1
        else:
            self.up_to_date += 1

    def __str__(self) -> str:
        return (f"{self.taken} taken: {self.created} created, {self.resumed} resumed, {self.requeued} new generations, "
                f"{self.up_to_date} already up to date, {self.retried} to retry")


def _claim(conn: Connection, claim_id: int):
    return conn.execute(select(claim_t.c.id, claim_t.c.number, claim_t.c.state, claim_t.c.flow_run_id)
                        .where(claim_t.c.id == claim_id)).one_or_none()


def _create(engine: Engine, runs: RunsPort, action: Action, *, now: datetime) -> str:
    claim = read_claim(action.claim_id, engine=engine)
    generation = int(action.payload.get("generation", 1))
    name = claim.number if generation == 1 else f"{claim.number} #{generation}"
    run_id = runs.create(claim_id=action.claim_id, name=name, tags=claim.tags(), idempotency_key=idempotency_key(action.claim_id, generation))
    with engine.begin() as conn:
        conn.execute(update(claim_t).where(claim_t.c.id == action.claim_id).values(flow_run_id=run_id))
        _finish(conn, action, now=now, outcome=f"created {run_id}")
    return f"created {run_id}"


def _recreate(conn: Connection, claim_id: int, *, now: datetime, why: str) -> str:
    generation = next_generation(conn, claim_id)
    if generation > MAX_GENERATIONS:
        return f"stuck: {why}; {MAX_GENERATIONS} runs already, left to ops"
    queue_create(conn, claim_id=claim_id, now=now, generation=generation)
    return f"new run (generation {generation}): {why}"


def _bring_up_to_date(engine: Engine, runs: RunsPort, action: Action, *, now: datetime, stale_running: timedelta,
                      crashed_grace: timedelta = timedelta(0)) -> str:
    with engine.connect() as conn:
        claim = _claim(conn, action.claim_id)
        creating = conn.execute(select(exists().where(
            run_action_t.c.claim_id == action.claim_id, run_action_t.c.kind == CREATE, run_action_t.c.status == PENDING))).scalar()
    if claim is None:
        with engine.begin() as conn:
            _finish(conn, action, now=now, outcome="claim gone")
        return "claim gone"
    if creating:
        # The run about to be created reads the claim as it is then: nothing to resume.
        with engine.begin() as conn:
            _finish(conn, action, now=now, outcome="superseded: its run is still to be created")
        return "superseded"
    run = runs.read([claim.flow_run_id]).get(claim.flow_run_id) if claim.flow_run_id else None
    judged = verdict(claim.state, run, now=now, stale_running=stale_running, crashed_grace=crashed_grace)
    if judged == Verdict.WAIT:
        return "retry: the run has not reached its wait yet"
    if judged == Verdict.RESUME:
        try:
            runs.resume(run.id, action.payload)
        except NotPaused as exc:
            return f"retry: {exc}"
        outcome = f"resumed {run.id} ({paused_in(run.pause_key)} -> {claim.state})"
    elif judged in (Verdict.RECREATE, Verdict.LOST):
        if judged == Verdict.LOST:
            runs.mark_crashed(run.id, "vozvrat starter: running far longer than any step takes; its worker is gone")
        why = "no run" if run is None else f"run {run.id} is {run.state_type.lower()}"
        with engine.begin() as conn:
            outcome = _recreate(conn, action.claim_id, now=now, why=why)
            _finish(conn, action, now=now, outcome=outcome)
        return outcome
    else:
        outcome = str(judged)
    with engine.begin() as conn:
        _finish(conn, action, now=now, outcome=outcome)
    return outcome


def process(engine: Engine, runs: RunsPort, action: Action, *, now: datetime, stale_running: timedelta = timedelta(minutes=10),
            crashed_grace: timedelta = timedelta(0)) -> str:
    """Carry out one action; a failure (Prefect down, 503, the run not at its wait yet) retries it later."""
    try:
        if action.kind == CREATE:
            return _create(engine, runs, action, now=now)
        outcome = _bring_up_to_date(engine, runs, action, now=now, stale_running=stale_running, crashed_grace=crashed_grace)
    except Exception as exc:  # noqa: BLE001 - whatever Prefect answers, the action stays and is retried
        outcome = f"retry: {exc.__class__.__name__}: {str(exc)[:200]}"
    if outcome.startswith("retry"):
        _later(engine, action, now=now, error=outcome)
    return outcome


def drain_once(engine: Engine, runs: RunsPort, *, now: datetime, limit: int = 20, concurrency: int = 2,
               stale_running: timedelta = timedelta(minutes=10), pool: ThreadPoolExecutor | None = None,
               crashed_grace: timedelta = timedelta(0)) -> DrainReport:
    """Take up to `limit` due actions and carry them out, `concurrency` at a time (Prefect on SQLite
    answers 503 from about 8 concurrent run creations and creates about 4 runs a second). A long-lived
    `pool` keeps each thread's Prefect client (and its connections) across passes."""
    report = DrainReport()
    actions = take_due(engine, now=now, limit=limit)
    report.taken = len(actions)
    if not actions:
        return report

    def one(action: Action) -> str:
        try:
            return process(engine, runs, action, now=now, stale_running=stale_running, crashed_grace=crashed_grace)
        except Exception as exc:  # noqa: BLE001 - the database hiccuped: the lease expires, it is taken again
            return f"retry: {exc.__class__.__name__}"

    own_pool = pool is None
    pool = pool or ThreadPoolExecutor(max_workers=max(1, concurrency))
    try:
        for outcome in pool.map(one, actions):
            report.add(outcome)
            if outcome.startswith("retry:") and "reached its wait" not in outcome and "NotPaused" not in outcome:
                report.errors.append(outcome)
    finally:
        if own_pool:
            pool.shutdown()
    return report


# --- the sweep ------------------------------------------------------------------------------------

@dataclass
class SweepReport:
    checked: int = 0
    queued: dict[str, int] = field(default_factory=dict)  # verdict -> claims queued for it

    def __str__(self) -> str:
        found = ", ".join(f"{n} {k}" for k, n in sorted(self.queued.items())) or "nothing behind"
        return f"{self.checked} claims checked: {found}"


RECHECK = {"decision": "recheck", "decided_by": "sweep"}


def sweep(engine: Engine, runs: RunsPort, *, now: datetime, grace: timedelta = timedelta(seconds=60),
          stale_running: timedelta = timedelta(minutes=10), crashed_grace: timedelta = timedelta(0)) -> SweepReport:
    """Find every claim whose run is missing, gone, lost or behind its recorded state, and queue the
    action that puts it right (the starter then judges the run afresh and acts).

    1. Claims in a state their run drives (filed, waiting, approved) that have or had a run, quiet for
       `grace`, with no action pending: their runs are read from Prefect in pages and judged.
    2. Suspended runs of the deployment whose claim has moved on to a state no run drives (a refusal
       recorded while the resume failed): resumed, so they finish.
    """
    now = _utc(now)
    report = SweepReport()
    pending = exists().where(run_action_t.c.claim_id == claim_t.c.id, run_action_t.c.status == PENDING)
    had_run = or_(claim_t.c.flow_run_id.is_not(None), exists().where(run_action_t.c.claim_id == claim_t.c.id))
    with engine.connect() as conn:
        claims = conn.execute(select(claim_t.c.id, claim_t.c.state, claim_t.c.flow_run_id).where(
            claim_t.c.state.in_([s.value for s in RUN_DRIVEN_STATES]), claim_t.c.updated_at < now - grace, ~pending, had_run)
        ).all()
    report.checked = len(claims)
    seen = runs.read([c.flow_run_id for c in claims if c.flow_run_id])
    behind: dict[int, Verdict] = {}
    for c in claims:
        judged = verdict(c.state, seen.get(c.flow_run_id) if c.flow_run_id else None, now=now, stale_running=stale_running,
                         crashed_grace=crashed_grace)
        if judged in (Verdict.RESUME, Verdict.RECREATE, Verdict.LOST):
            behind[c.id] = judged

    driven = {c.id for c in claims}
    paused = [r for r in runs.paused() if r.claim_id is not None and r.claim_id not in driven]
    if paused:
        with engine.connect() as conn:
            moved_on = {r.id: r for r in conn.execute(select(claim_t.c.id, claim_t.c.state, claim_t.c.flow_run_id).where(
                id_in(conn, claim_t.c.id, [r.claim_id for r in paused]), claim_t.c.updated_at < now - grace, ~pending))}
        for run in paused:
            claim = moved_on.get(run.claim_id)
            if claim and claim.flow_run_id == run.id and verdict(claim.state, run, now=now, stale_running=stale_running) == Verdict.RESUME:
                behind[claim.id] = Verdict.RESUME
                report.checked += 1

    with engine.begin() as conn:
        queue_resume(conn, claim_ids=list(behind), step=RECHECK, now=now)
    for judged in behind.values():
        report.queued[str(judged)] = report.queued.get(str(judged), 0) + 1
    return report


# --- what ops see ---------------------------------------------------------------------------------

def backlog(engine: Engine, *, now: datetime) -> dict[str, Any]:
    """Pending actions by kind, and how old the oldest is (seconds)."""
    now = _utc(now)
    with engine.connect() as conn:
        rows = conn.execute(select(run_action_t.c.kind, func.count(), func.min(run_action_t.c.created_at))
                            .where(run_action_t.c.status == PENDING).group_by(run_action_t.c.kind)).all()
    out: dict[str, Any] = {"pending": {k: n for k, n, _ in rows}}
    oldest = [t for _, _, t in rows if t is not None]
    out["oldest_s"] = round((now - min(oldest)).total_seconds(), 1) if oldest else 0
    return out
