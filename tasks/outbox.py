"""The email outbox: rows written with the transition that caused them, dispatched here.

Each row is delivered once, however many dispatchers run (every claim's flow run sends its own
claim's mail; the `outbox-dispatch` deployment sweeps the rest). A dispatcher first *leases* a
batch of due rows in one statement, writing its name and an expiry on them (`UPDATE ... RETURNING`;
on PostgreSQL the rows to take are picked with `FOR UPDATE SKIP LOCKED`), commits, and only then
talks to SMTP, outside any database transaction. Rows leased by someone else are not due for
anyone until their lease expires, which is how the rows of a dispatcher that died come back.

Each row's status is committed on its own right after its send, so a dispatcher killed between the
SMTP "250" and that commit causes at most one duplicate, of that one message, sent again after the
lease expires with the same Message-ID (fixed on the row the first time it is leased). A dispatcher
may send over several SMTP connections at once (``concurrency``, for a mass send): its senders share
the leased batch and their outcomes are committed ``concurrency`` at a time, by the dispatcher's
database thread while the next ones are sent (one commit in flight at most), so a kill between the
"250"s and those commits resends at most ``3 * concurrency - 1`` messages (the same Message-IDs). The
database thread also takes the next batch's lease while the current one is sent. While the
SMTP server is down messages stay pending and are retried with exponential backoff: nothing is lost.
The kill switch (``enabled=False``, or the database's switch held: `vozvrat mail hold`,
tasks/mail_switch.py) sends nothing and leases nothing; thrown while a dispatcher sends
(``VOZVRAT_OUTBOUND_EMAIL_ENABLED=false`` read again before every message, or the ``still_enabled``
check given; the database's row read at the start of each leased batch and at most once a second),
it stops before the next message and gives the rest back.

Mass mail (tasks/mass_sends.py): rows `held` under a mass send are not due until a second person
approves it; sending is paced (``rate_per_s``, VOZVRAT_MAIL_RATE_PER_S) and every batch sent leaves a
`mail_audit` row with its outbox ids and Message-IDs (per mass send), which ops can query.
"""
from __future__ import annotations

import asyncio
import json
import os
import socket
import time
import uuid
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from enum import Enum
from functools import partial
from typing import Any

import jinja2
from sqlalchemy import bindparam, func, insert, or_, update
from sqlalchemy.engine import Connection, Engine
from sqlmodel import Session, select

from models.crypto import SecretKeyError, open_sealed
from models.tables import MailAudit, OutboxMessage
from tasks.buyer_links import status_url, status_url_maker
from tasks.emails import BUYER_CLAIM_TEMPLATES, TEMPLATES, MissingContext, UnknownTemplate, message_id_for, render_email_bytes
from tasks.mail_switch import LiveMailSwitch
from tasks.mass_sends import refresh_progress
from tasks.smtp import SmtpConnection, SmtpRejected, SmtpSettings, SmtpUnavailable

BACKOFF_BASE = timedelta(minutes=1)
BACKOFF_CAP = timedelta(hours=1)
#: How long a leased row belongs to its dispatcher. A dispatcher stops sending (and gives back the
#: rest of its batch) well before its lease ends, so a live dispatcher never loses a row it sends.
LEASE = timedelta(minutes=5)
LEASE_BATCH = 50
#: The payload key of a message worthless from a given moment (``enqueue_email(send_before=...)``, e.g. a
#: sign-in code's expiry): held past it (the kill switch, an SMTP outage) it is marked `failed`, not sent.
SEND_BEFORE = "send_before"

outbox_t = OutboxMessage.__table__
mail_audit_t = MailAudit.__table__
_FALSE = frozenset({"0", "false", "no", "off", "f", "n"})


def email_enabled_now() -> bool:
    """The kill switch as the environment says it at this moment (not the cached settings), so a
    switch thrown for a running dispatcher stops it before its next message."""
    return os.environ.get("VOZVRAT_OUTBOUND_EMAIL_ENABLED", "true").strip().lower() not in _FALSE


class Pacer:
    """At most `rate_per_s` sends per second (0 or None: no limit): each send waits for its slot.
    The clock and the sleep are injected, so a test checks the pacing without waiting."""

    def __init__(self, rate_per_s: float | None, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep):
        self.interval = 1.0 / rate_per_s if rate_per_s else 0.0
        self.clock, self.sleep = clock, sleep
        self.next_at: float | None = None

    async def wait(self) -> None:
        if not self.interval:
            return
        now = self.clock()
        # The slot is taken before sleeping, so concurrent senders of one dispatcher get distinct slots.
        slot = now if self.next_at is None or self.next_at <= now else self.next_at
        self.next_at = slot + self.interval
        if slot > now:
            await self.sleep(slot - now)


@dataclass
class DispatchReport:
    sent: int = 0
    retried: int = 0
    failed: int = 0
    held: int = 0  # due messages left waiting because the kill switch is off
    held_by_kill_switch: bool = False

    def __str__(self) -> str:
        if self.held_by_kill_switch:
            return f"kill switch on: nothing sent, {self.held} message(s) held"
        return f"sent {self.sent}, retried later {self.retried}, failed {self.failed}"


def backoff(attempts_before: int) -> timedelta:
    """1 min * 2**attempts, capped at 1 h: 1, 2, 4, ... 32, 60, 60 minutes."""
    if attempts_before >= 6:
        return BACKOFF_CAP
    return min(BACKOFF_BASE * 2**attempts_before, BACKOFF_CAP)


def _utc(now: datetime) -> datetime:
    if now.tzinfo is None:
        raise ValueError(f"naive datetime {now!r}: time must be tz-aware")
    return now.astimezone(UTC)


def _due(now: datetime, claim_id: int | None = None, dedup_key: str | None = None):
    """Pending emails whose time has come and that nobody holds (or whose holder's lease ran out)."""
    cond = (
        (outbox_t.c.kind == "email")
        & (outbox_t.c.status == "pending")
        & (outbox_t.c.next_attempt_at <= now)
        & or_(outbox_t.c.leased_until.is_(None), outbox_t.c.leased_until <= now)
    )
    if claim_id is not None:
        cond = cond & (outbox_t.c.claim_id == claim_id)
    if dedup_key is not None:  # one message, sent now (a buyer's sign-in code must not wait behind a backlog)
        cond = cond & (outbox_t.c.dedup_key == dedup_key)
    return cond


def dispatcher_name() -> str:
    """host:pid:random, so the rows of one dispatcher are told from another's in the table."""
    return f"{socket.gethostname()[:30]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable in an outbox payload")


def enqueue_email(
    session: Session,
    *,
    dedup_key: str,
    claim_id: int | None,
    template: str,
    recipient: str,
    payload: Mapping[str, Any],
    now: datetime,
    send_before: datetime | None = None,
) -> bool:
    """Insert one pending email in the caller's transaction (no commit). A repeated dedup_key is
    ignored. Returns True when a row was inserted. ``send_before``: the moment the message becomes
    worthless (kept in the payload as SEND_BEFORE); a dispatcher reaching it later marks it `failed`."""
    if template not in TEMPLATES:
        raise UnknownTemplate(f"no email template {template!r}")
    if not recipient:
        raise ValueError("an email needs a recipient")
    now = _utc(now)
    if send_before is not None:
        payload = {**payload, SEND_BEFORE: _utc(send_before)}
    values = dict(
        kind="email", dedup_key=dedup_key, claim_id=claim_id, template=template, recipient=recipient,
        payload=json.loads(json.dumps(dict(payload), default=_json_default, ensure_ascii=False)),
        status="pending", attempts=0, next_attempt_at=now, created_at=now,
    )
    table = OutboxMessage.__table__
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:  # pragma: no cover - only the two supported databases use ON CONFLICT
        exists = session.exec(select(OutboxMessage.id).where(OutboxMessage.dedup_key == dedup_key)).first()
        if exists is not None:
            return False
        session.execute(table.insert().values(**values))
        return True
    # RETURNING, not rowcount: psycopg reports -1 for an INSERT ... ON CONFLICT through SQLAlchemy.
    statement = insert(table).values(**values).on_conflict_do_nothing(index_elements=["dedup_key"]).returning(table.c.id)
    return session.execute(statement).first() is not None


@dataclass(frozen=True)
class LeasedEmail:
    id: int
    dedup_key: str
    template: str | None
    recipient: str | None
    payload: dict
    attempts: int
    message_id: str
    mass_send_id: int | None = None


def lease_due_emails(
    conn: Connection,
    *,
    owner: str,
    now: datetime,
    limit: int,
    mail_from: str,
    lease: timedelta = LEASE,
    claim_id: int | None = None,
    dedup_key: str | None = None,
) -> list[LeasedEmail]:
    """Take up to ``limit`` due rows for ``owner`` until ``now + lease``, in the caller's transaction.

    One UPDATE picks and marks the rows, so two dispatchers can never take the same row: SQLite
    runs one writing statement at a time, and on PostgreSQL the picking subquery skips rows another
    dispatcher is taking at this moment (``FOR UPDATE SKIP LOCKED``) while the outer WHERE re-checks
    the lease on the row's newest version. A row's Message-ID is fixed here the first time.
    """
    now = _utc(now)
    # Oldest due first, in the order of ix_outbox_due (status, kind, next_attempt_at, then the rowid):
    # the pick walks the index and stops at ``limit`` instead of sorting every due row (a mass send has
    # tens of thousands).
    pick = select(outbox_t.c.id).where(_due(now, claim_id, dedup_key)).order_by(outbox_t.c.next_attempt_at, outbox_t.c.id).limit(limit)
    chosen = outbox_t.c.id.in_(pick.scalar_subquery())
    if conn.dialect.name == "postgresql":
        pick = pick.with_for_update(skip_locked=True)
        chosen = outbox_t.c.id.in_(pick.scalar_subquery()) & _due(now, claim_id, dedup_key)
    # (SQLite runs the one statement alone, so the pick is still due when the rows are marked; re-checking
    # there would make its planner walk every due row through the due index instead of the picked ids.)
    statement = (
        update(outbox_t)
        .where(chosen)
        .values(lease_owner=owner, leased_until=now + lease)
        .returning(outbox_t.c.id, outbox_t.c.dedup_key, outbox_t.c.template, outbox_t.c.recipient, outbox_t.c.payload,
                   outbox_t.c.attempts, outbox_t.c.message_id, outbox_t.c.mass_send_id)
    )
    rows = sorted(conn.execute(statement).all(), key=lambda r: r.id)
    fresh = [{"row_id": r.id, "mid": message_id_for(r.dedup_key, mail_from)} for r in rows if r.message_id is None]
    if fresh:
        conn.execute(
            update(outbox_t).where(outbox_t.c.id == bindparam("row_id"), outbox_t.c.message_id.is_(None))
            .values(message_id=bindparam("mid")),
            fresh,
        )
    ids = {f["row_id"]: f["mid"] for f in fresh}
    return [
        LeasedEmail(r.id, r.dedup_key, r.template, r.recipient, r.payload or {}, r.attempts, r.message_id or ids[r.id], r.mass_send_id)
        for r in rows
    ]


def _record(engine: Engine, email: LeasedEmail, *, owner: str, outcome: str, error: str | None, now: datetime,
            autocommit: Connection | None = None) -> None:
    """Commit one row's outcome on its own (a crash after this loses nothing and repeats nothing)."""
    released = dict(lease_owner=None, leased_until=None)
    mine = (outbox_t.c.id == email.id) & (outbox_t.c.lease_owner == owner)
    if outcome == "sent":
        # Delivered is true whoever holds the row now: mark it even if our lease was lost.
        statement = (update(outbox_t).where(outbox_t.c.id == email.id, outbox_t.c.status == "pending")
                     .values(status="sent", sent_at=now, last_error=None, **released))
    elif outcome == "retry":
        statement = update(outbox_t).where(mine).values(
            next_attempt_at=now + backoff(email.attempts), attempts=outbox_t.c.attempts + 1, last_error=error, **released)
    else:
        statement = update(outbox_t).where(mine).values(
            status="failed", attempts=outbox_t.c.attempts + 1, last_error=error, **released)
    if autocommit is not None:
        autocommit.execute(statement)  # one statement, its own transaction: one round trip
        return
    with engine.begin() as conn:
        conn.execute(statement)


def _record_many(engine: Engine, outcomes: Sequence[tuple[LeasedEmail, str, str | None]], *, owner: str, now: datetime,
                 autocommit: Connection | None = None) -> None:
    """Commit the outcomes of several sends at once (one transaction, one statement per kind of outcome):
    the same updates as ``_record``'s, for a dispatcher sending over several connections."""
    if len(outcomes) == 1:
        email, outcome, error = outcomes[0]
        _record(engine, email, owner=owner, outcome=outcome, error=error, now=now, autocommit=autocommit)
        return
    released = dict(lease_owner=None, leased_until=None)
    row = outbox_t.c.id == bindparam("row_id")
    mine = row & (outbox_t.c.lease_owner == owner)
    sent = [{"row_id": e.id} for e, outcome, _ in outcomes if outcome == "sent"]
    retry = [{"row_id": e.id, "next_at": now + backoff(e.attempts), "error": err} for e, outcome, err in outcomes if outcome == "retry"]
    failed = [{"row_id": e.id, "error": err} for e, outcome, err in outcomes if outcome not in ("sent", "retry")]
    with ExitStack() as stack:
        conn = autocommit if autocommit is not None else stack.enter_context(engine.begin())
        if sent:
            conn.execute(update(outbox_t).where(row, outbox_t.c.status == "pending")
                         .values(status="sent", sent_at=now, last_error=None, **released), sent)
        if retry:
            conn.execute(update(outbox_t).where(mine).values(next_attempt_at=bindparam("next_at"), attempts=outbox_t.c.attempts + 1,
                                                             last_error=bindparam("error"), **released), retry)
        if failed:
            conn.execute(update(outbox_t).where(mine).values(status="failed", attempts=outbox_t.c.attempts + 1,
                                                             last_error=bindparam("error"), **released), failed)


def _release(engine: Engine, emails: Sequence[LeasedEmail], *, owner: str) -> None:
    if not emails:
        return
    with engine.begin() as conn:
        conn.execute(
            update(outbox_t)
            .where(outbox_t.c.id.in_([e.id for e in emails]), outbox_t.c.lease_owner == owner)
            .values(lease_owner=None, leased_until=None)
        )


async def dispatch_emails(
    *,
    engine: Engine,
    smtp: SmtpSettings,
    now: datetime,
    limit: int = 200,
    mail_from: str,
    enabled: bool = True,
    claim_id: int | None = None,
    dedup_key: str | None = None,
    owner: str | None = None,
    batch: int = LEASE_BATCH,
    lease: timedelta = LEASE,
    rate_per_s: float | None = None,
    still_enabled: Callable[[], bool] | None = email_enabled_now,
    pacer: Pacer | None = None,
    concurrency: int = 1,
    mail_switch: LiveMailSwitch | None = None,
) -> DispatchReport:
    """Send due pending emails (oldest first, at most ``limit``; only ``claim_id``'s, or the one
    message ``dedup_key``, when given).

    Rows are leased ``batch`` at a time and sent over ``concurrency`` SMTP sessions at once (one by
    default). With one session each outcome is committed on its own; with several, the outcomes
    are committed ``concurrency`` at a time. Safe to run in any number of processes at once.

    The database's kill switch (``mail_switch``; by default this engine's, on the monotonic clock) holds
    the mail whatever ``enabled`` and ``still_enabled`` say: no caller can pass it by.
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, got {concurrency}")
    now = _utc(now)
    report = DispatchReport()
    switch = mail_switch or LiveMailSwitch(engine)
    if not enabled or switch.held():
        with Session(engine) as session:
            report.held = session.exec(select(func.count()).select_from(outbox_t).where(_due(now, claim_id, dedup_key))).one()
        report.held_by_kill_switch = True
        return report

    owner = owner or dispatcher_name()
    # PostgreSQL: outcomes go through one autocommit connection (one round trip each, not three).
    # SQLite keeps a BEGIN IMMEDIATE transaction per outcome (models.db).
    with ExitStack() as resources:
        autocommit = None
        if engine.dialect.name == "postgresql":
            autocommit = resources.enter_context(engine.connect().execution_options(isolation_level="AUTOCOMMIT"))
        return await _dispatch(engine, smtp=smtp, now=now, limit=limit, mail_from=mail_from, claim_id=claim_id, dedup_key=dedup_key,
                               owner=owner, batch=batch, lease=lease, autocommit=autocommit, report=report,
                               pacer=pacer or Pacer(rate_per_s), still_enabled=_also_unless_held(still_enabled, switch),
                               concurrency=concurrency, on_batch=switch.expire)


def _also_unless_held(still_enabled: Callable[[], bool] | None, switch: LiveMailSwitch) -> Callable[[], bool]:
    """The caller's check (the environment's switch by default), then the database's (cached)."""
    def check() -> bool:
        return (still_enabled is None or still_enabled()) and not switch.held()
    return check


async def _dispatch(engine: Engine, *, smtp: SmtpSettings, now: datetime, limit: int, mail_from: str, claim_id: int | None,
                    dedup_key: str | None, owner: str, batch: int, lease: timedelta, autocommit: Connection | None,
                    report: DispatchReport, pacer: Pacer, still_enabled: Callable[[], bool], concurrency: int = 1,
                    on_batch: Callable[[], None] = lambda: None) -> DispatchReport:
    # Stop taking new sends while a slow SMTP conversation could still outlive the lease.
    budget = lease.total_seconds() - min(max(60.0, 6 * smtp.timeout), lease.total_seconds() / 2)
    started = time.monotonic()
    run = _Run(link=_status_links(now))
    remaining = limit
    connections = [SmtpConnection(smtp) for _ in range(concurrency)]
    # The database work (leases, outcomes, audit, releases) runs in order on one thread of its own, so
    # the SMTP conversations go on while a commit or the next lease waits for the database; the
    # autocommit connection (PostgreSQL) is only ever used from that thread.
    db = _DbThread()

    def lease_next(count: int) -> asyncio.Future[list[LeasedEmail]]:
        def take() -> list[LeasedEmail]:
            with engine.begin() as conn:
                return lease_due_emails(conn, owner=owner, now=now, limit=count, mail_from=mail_from,
                                        lease=lease, claim_id=claim_id, dedup_key=dedup_key)
        return db.submit(take)

    upcoming: asyncio.Future[list[LeasedEmail]] | None = lease_next(min(batch, remaining))
    try:
        while upcoming is not None:
            leased = await upcoming
            upcoming = None
            if not leased:
                break
            remaining -= len(leased)
            if remaining > 0 and not run.stopped:
                upcoming = lease_next(min(batch, remaining))  # the next batch is taken while this one is sent
            sending = _Batch(leased, db)
            on_batch()  # the database's kill switch is read again before this batch's first message
            try:
                await _all_or_none([sending.sender(c, engine=engine, now=now, mail_from=mail_from, owner=owner, started=started, budget=budget,
                                                   autocommit=autocommit, report=report, pacer=pacer, still_enabled=still_enabled,
                                                   run=run, group=concurrency)
                                    for c in connections[: len(leased)]])
            finally:
                sending.commit_outcomes(engine, owner=owner, now=now, autocommit=autocommit)
                db.submit(partial(_audit_sent, engine, list(sending.sent), owner=owner, now=now))
                # Rows not tried (the lease running out, the kill switch, or an error) are due again at once, not when
                # the lease expires; a row in flight when an error struck stays leased, as it may have been sent.
                db.submit(partial(_release, engine, [e for e in leased if e.id not in sending.begun], owner=owner))
                await db.drain()
            if run.stopped:
                break
    finally:
        try:
            if upcoming is not None:  # taken ahead and not sent: due again at once
                taken = await upcoming
                db.submit(partial(_release, engine, taken, owner=owner))
            await db.drain()
        finally:
            db.close()
            for connection in connections:
                await connection.close()
    return report


class _DbThread:
    """One dispatcher's database work, in submission order, on a thread of its own; ``drain`` waits for
    all of it and raises the first error."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="outbox-db")
        self._pending: list[asyncio.Future[Any]] = []

    def submit(self, work: Callable[[], Any]) -> asyncio.Future[Any]:
        future = asyncio.get_running_loop().run_in_executor(self._pool, work)
        self._pending.append(future)
        return future

    async def drain(self) -> None:
        pending, self._pending = self._pending, []
        results = await asyncio.gather(*pending, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result

    def close(self) -> None:
        self._pool.shutdown(wait=True)


class _Batch:
    """One leased batch, sent by the dispatcher's senders together (one per SMTP connection)."""

    def __init__(self, leased: Sequence[LeasedEmail], db: _DbThread):
        self.todo = deque(leased)
        self.db = db
        self.begun: set[int] = set()  # taken by a sender: tried, or in flight (may have left)
        self.done: list[tuple[LeasedEmail, str, str | None]] = []  # outcomes not yet handed to the database thread
        self.sent: list[LeasedEmail] = []
        self.commits: deque[asyncio.Future[Any]] = deque()

    def commit_outcomes(self, engine: Engine, *, owner: str, now: datetime, autocommit: Connection | None) -> None:
        """Hand the outcomes so far to the database thread (committed in order, before the batch's release)."""
        if self.done:
            outcomes, self.done = self.done, []
            self.commits.append(self.db.submit(lambda: _record_many(engine, outcomes, owner=owner, now=now, autocommit=autocommit)))

    async def keep_up(self, in_flight: int) -> None:
        """Wait until at most ``in_flight`` outcome commits are unfinished: what a kill could resend stays bounded."""
        while self.commits and (self.commits[0].done() or len(self.commits) > in_flight):
            head = self.commits[0]
            await asyncio.wait([head])  # every sender waits on the same commit; it leaves the queue only once done
            if self.commits and self.commits[0] is head:
                self.commits.popleft()
                head.result()  # the commit's error, if it failed

    async def sender(self, connection: SmtpConnection, *, engine: Engine, now: datetime, mail_from: str, owner: str, started: float,
                     budget: float, autocommit: Connection | None, report: DispatchReport, pacer: Pacer,
                     still_enabled: Callable[[], bool], run: _Run, group: int) -> None:
        """Send from the batch until it is empty or the run stops; commit outcomes ``group`` at a time."""
        while self.todo and not run.stopped:
            # No send starts while the database lags: with one connection, not before the last outcome is committed
            # (a kill resends at most that one message); with several, while at most one group's commit is running
            # (then at most 3 * group - 1 messages are sent and not yet recorded).
            await self.keep_up(0 if group == 1 else 1)
            if time.monotonic() - started > budget:
                run.stopped = True
                return
            if not still_enabled():  # the kill switch, thrown while we send: stop now
                report.held_by_kill_switch = run.stopped = True
                return
            await pacer.wait()
            if run.stopped or not self.todo:
                return
            email = self.todo.popleft()
            self.begun.add(email.id)
            outcome, error = await _deliver(email, connection=connection, now=now, mail_from=mail_from, smtp_down=run.smtp_down,
                                            link=run.link)
            self.done.append((email, outcome, error))
            if outcome == "sent":
                report.sent += 1
                self.sent.append(email)
            elif outcome == "retry":
                report.retried += 1
                run.smtp_down = run.smtp_down or error
            else:
                report.failed += 1
            if len(self.done) >= group:
                self.commit_outcomes(engine, owner=owner, now=now, autocommit=autocommit)


@dataclass
class _Run:
    stopped: bool = False  # the kill switch or the lease budget: no new sends in this run
    smtp_down: str | None = None  # once the server is down, the rest of this run is deferred untried
    link: Callable[[str], str] | None = None  # the status links' signer, made once per run


async def _all_or_none(coroutines: list[Awaitable[None]]) -> None:
    """Run the senders together; the first error cancels the others (their messages in flight stay
    leased) and is raised as it is."""
    tasks = [asyncio.ensure_future(c) for c in coroutines]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]


def _audit_sent(engine: Engine, sent: Sequence[LeasedEmail], *, owner: str, now: datetime) -> None:
    """One mail_audit row per mass send (or per plain batch) with the outbox ids and Message-IDs that
    left; a mass send's status follows (sending, done)."""
    if not sent:
        return
    groups: dict[int | None, list[LeasedEmail]] = defaultdict(list)
    for email in sent:
        groups[email.mass_send_id].append(email)
    with engine.begin() as conn:
        conn.execute(insert(mail_audit_t), [
            dict(at=now, actor=owner, mass_send_id=key, count=len(group), outbox_ids=[e.id for e in group],
                 message_ids=[e.message_id for e in group])
            for key, group in groups.items()
        ])
        refresh_progress(conn, [k for k in groups if k is not None], now=now)


def with_status_link(template: str | None, payload: Mapping[str, Any], now: datetime,
                     link: Callable[[str], str] | None = None) -> Mapping[str, Any]:
    """A buyer's claim email gets a fresh signed link to the claim's «Где мои деньги» page when it is
    sent (a message held by the kill switch for days still carries a live link). No link secret: the
    email goes without the link rather than not at all. ``link``: a dispatcher's ``status_url_maker(now)``."""
    if template not in BUYER_CLAIM_TEMPLATES or payload.get("status_url") or not payload.get("claim_number"):
        return payload
    try:
        url = link(str(payload["claim_number"])) if link is not None else status_url(str(payload["claim_number"]), now=now)
    except SecretKeyError:
        return payload
    return {**payload, "status_url": url}


def _status_links(now: datetime) -> Callable[[str], str] | None:
    """One signer for a whole dispatch run (None without a link secret: each message then goes without)."""
    try:
        return status_url_maker(now)
    except SecretKeyError:
        return None


def _stale(email: LeasedEmail, now: datetime) -> str | None:
    """Why the message must not leave any more (its SEND_BEFORE has passed), or None."""
    value = email.payload.get(SEND_BEFORE)
    if value is None:
        return None
    try:
        deadline = datetime.fromisoformat(str(value))
    except ValueError:
        return f"bad {SEND_BEFORE} {value!r}: not sent"
    if deadline.tzinfo is None:
        deadline = deadline.replace(tzinfo=UTC)
    if now >= deadline:
        return f"expired {email.template}: not sent (valid until {deadline.astimezone(UTC).isoformat()})"
    return None


def withdraw_pending(conn: Connection, dedup_keys: Sequence[str], *, now: datetime, reason: str) -> list[str]:
    """Mark the pending messages ``dedup_keys`` `superseded` (``reason`` as last_error), in the caller's
    transaction, unless a dispatcher holds them (a row being sent may already be on the wire).
    Returns the keys withdrawn."""
    if not dedup_keys:
        return []
    now = _utc(now)
    return list(conn.execute(
        update(outbox_t)
        .where(outbox_t.c.dedup_key.in_(list(dedup_keys)), outbox_t.c.status == "pending",
               or_(outbox_t.c.leased_until.is_(None), outbox_t.c.leased_until <= now))
        .values(status="superseded", last_error=reason, lease_owner=None, leased_until=None)
        .returning(outbox_t.c.dedup_key)
    ).scalars())


async def _deliver(
    email: LeasedEmail, *, connection: SmtpConnection, now: datetime, mail_from: str, smtp_down: str | None,
    link: Callable[[str], str] | None = None,
) -> tuple[str, str | None]:
    """("sent" | "retry" | "failed", error)."""
    stale = _stale(email, now)
    if stale is not None:
        return "failed", stale
    try:
        if not email.recipient:
            raise ValueError("no recipient")
        message = render_email_bytes(
            email.template or "", to=email.recipient, mail_from=mail_from,
            context=with_status_link(email.template, open_sealed(email.payload), now, link),  # a sealed sign-in code opens only here
            message_id_key=email.dedup_key, message_id=email.message_id, now=now,
        )
    except (UnknownTemplate, MissingContext, jinja2.TemplateError, ValueError, TypeError, KeyError) as exc:
        return "failed", f"render: {type(exc).__name__}: {exc}"
    if smtp_down is not None:
        return "retry", f"not attempted, SMTP unavailable earlier in this run: {smtp_down}"
    try:
        await connection.send_raw(sender=message.mail_from, recipients=[message.to], data=message.data)
    except SmtpUnavailable as exc:
        return "retry", str(exc)
    except SmtpRejected as exc:
        return "failed", f"rejected: {exc}"
    return "sent", None
