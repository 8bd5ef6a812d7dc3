"""Paying refunds (DESIGN "Payment channels"): card refunds through the acquirer, bank transfers through
a 1C file, and the bank statement that closes them. Plain functions taking the engine, the acquirer
and `now`; `flows/payouts.py` wraps them in Prefect tasks.

Exactly once, for card refunds: a payout row keeps one idempotency key for its life. Its status is
committed as `submitted` BEFORE the acquirer is called, and the answer is recorded in a second
transaction together with the claim's transition. A crash in between leaves a `submitted` row without
an acquirer refund id; the next run asks again with the SAME key and the acquirer replays its first
answer instead of refunding twice (tests/payments/test_crash_exactly_once.py kills a worker with
SIGKILL at each of these points).

One payout's failure is that payout's alone: whatever one refund raises is recorded on its row and
its claim, and the batch goes on. No answer (5xx, 429, network) leaves the outcome unknown, so the
row keeps its key and the claim goes to payout_failed until the payout-run sweep's `retry_payout`
(backoff, bounded) or a person's (`vozvrat payouts retry`) asks again with that key. A card that
refuses for good (refund canceled, payment unknown, nothing left to refund) asks the buyer for bank
details (payout_failed -> needs_bank_details) and the claim is then paid by bank transfer. A claim's
own run opens and sends its own payout only (`claim_ids`); the scheduled runs sweep the rest.

Exactly once, for bank transfers: export marks the payouts `exported` with a batch id and commits
FIRST, then writes the file from the batch (atomically: temp file, fsync, rename). A crash after the
commit leaves a batch without a file, never a file whose payouts could be exported again; the file of
a batch can be rewritten byte for byte at any time (`write_export_file`, `vozvrat payouts export-1c
--batch ID --out FILE`). The opposite order (file first) could hand accounting a file for payouts that
stay `pending` and are exported, and paid, a second time.
"""
from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import String, and_, bindparam, case, cast, exists, func, literal, or_, select, true, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import aliased

from models.claim_store import ConflictError, TransitionRefused, apply_batch_in, apply_trigger, id_in
from models.crypto import DecryptionError, decrypt_text, encrypt_text
from models.db import UtcDateTime
from models.payouts import (
    BANK_TRANSFER,
    CANCELED,
    CARD,
    EXPORTED,
    LIVE_STATUSES,
    PAID,
    PENDING,
    RETRY_LATER,
    SUBMITTED,
    SUCCEEDED,
    Payout,
)
from models.tables import Claim, ClaimTransition, Order, Ticket
from states.bank import FieldError, mask_account, validate_bank_details
from states.lifecycle import ClaimState, InvalidTrigger
from tasks.acquirer import AcquirerError, AcquirerPort, RefundRequest, RefundResult, refund_receipt
from tasks.export_1c import Payer, PaymentOrder, payment_purpose, read_bank_statement, render_payment_orders
from tasks.files import write_atomically

__all__ = [
    "BankDetailsNotExpected",
    "ExportBatch",
    "OpsRetry",
    "RefundReport",
    "RetryRefused",
    "StatementReport",
    "export_bank_transfers",
    "mark_export_batch",
    "mark_paid_from_statement",
    "open_payouts",
    "payout_key",
    "reconcile_pending",
    "retry_due_payouts",
    "retry_later_delay",
    "retry_payout_by_ops",
    "submit_bank_details",
    "submit_card_refunds",
    "submit_card_refunds_concurrently",
    "transient_retry_delay",
    "write_export_file",
]

payout_t = Payout.__table__
claim_t = Claim.__table__
ticket_t = Ticket.__table__
order_t = Order.__table__
audit_t = ClaimTransition.__table__

# The 1C file's dates are the operator's (Moscow) dates.
OPERATOR_TZ = ZoneInfo("Europe/Moscow")
# A `submitted` row without an answer is asked again only after this long: another worker may be
# talking to the acquirer about it right now (asking twice would still be safe, same key).
STALE_SUBMITTED = timedelta(minutes=2)
RETRY_LATER_BASE = timedelta(hours=1)
RETRY_LATER_CAP = timedelta(hours=12)
# No answer about a refund (5xx, 429, network): the claim goes to payout_failed and the payout-run
# sweep retries it (retry_payout) with the same key, after 5, 10, 20 ... min, at most this many
# times (about 9 h in all); then it waits for `vozvrat payouts retry`.
TRANSIENT_RETRY_BASE = timedelta(minutes=5)
TRANSIENT_RETRY_CAP = timedelta(hours=4)
MAX_AUTOMATIC_RETRIES = 7
RETRY_ACTOR = "payout-retry"  # the sweep, in the audit trail; a person is ops:<login>


def payout_key(claim_id: int, attempt: int) -> str:
    """The Idempotence-Key of a claim's payout attempt (the same text `open_payouts` builds in SQL)."""
    return f"vozvrat-refund-{claim_id}-{attempt}"


def _payout_key_sql(claim_id_col, attempt_expr):
    return literal("vozvrat-refund-", String) + cast(claim_id_col, String) + literal("-", String) + cast(attempt_expr, String)


def retry_later_delay(attempt: int) -> timedelta:
    """insufficient_funds: the day's incoming payments did not cover the refunds; 1, 2, 4 ... 12 h."""
    return min(RETRY_LATER_BASE * 2 ** max(attempt - 1, 0), RETRY_LATER_CAP)


def transient_retry_delay(retry: int) -> timedelta:
    """The wait before automatic retry number `retry` (1-based) of a payout that got no answer."""
    return min(TRANSIENT_RETRY_BASE * 2 ** max(retry - 1, 0), TRANSIENT_RETRY_CAP)


def _utc(now: datetime) -> datetime:
    if now.tzinfo is None:
        raise ValueError(f"naive datetime {now!r}: time must be tz-aware")
    return now.astimezone(UTC)


def _insert(conn: Connection):
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(payout_t)


# --- opening payouts ------------------------------------------------------------------------------

def _only_claims(column, claim_ids: Iterable[int] | None, conn: Connection | None = None):
    """No filter (the scheduled sweep), or only these claims (a claim's own run, an ops retry)."""
    if claim_ids is None:
        return true()
    ids = list(claim_ids)
    return id_in(conn, column, ids) if conn is not None else column.in_(ids)


def open_payouts(engine: Engine, *, now: datetime, claim_ids: Iterable[int] | None = None) -> int:
    """Open a payout for every claim in payout_pending that has none live (one INSERT ... SELECT);
    with `claim_ids`, for those claims only (a claim's run opens its own payout, nobody else's).

    Channel from the order (card -> card refund; cash, BSO -> bank transfer), amount the approved one
    or the quoted one. A card claim whose card refused the refund for good and whose buyer then gave
    bank details is paid by bank transfer. A claim whose last attempt was canceled with
    `insufficient_funds` gets its next attempt (a new key) only once that attempt's `next_attempt_at`
    has come.
    """
    now = _utc(now)
    claim_ids = None if claim_ids is None else list(claim_ids)
    if claim_ids == []:
        return 0
    earlier = aliased(payout_t)
    attempt = (
        select(func.coalesce(func.max(earlier.c.attempt), 0) + 1)
        .where(earlier.c.claim_id == claim_t.c.id)
        .scalar_subquery()
    )
    busy = exists().where(
        payout_t.c.claim_id == claim_t.c.id,
        or_(
            payout_t.c.status.in_(LIVE_STATUSES),
            and_(payout_t.c.status == RETRY_LATER, payout_t.c.next_attempt_at > literal(now, UtcDateTime)),
        ),
    )
    refused = aliased(payout_t)
    card_refused = exists().where(refused.c.claim_id == claim_t.c.id, refused.c.channel == CARD, refused.c.status == CANCELED)
    to_card = and_(order_t.c.payment_method == "card", ~and_(claim_t.c.bank_details.is_not(None), card_refused))
    amount = func.coalesce(claim_t.c.approved_amount, claim_t.c.amount)
    channel = case((to_card, literal(CARD, String)), else_=literal(BANK_TRANSFER, String))
    with engine.begin() as conn:
        source = (
            select(
                claim_t.c.id, channel, amount, attempt, _payout_key_sql(claim_t.c.id, attempt),
                literal(PENDING, String), literal(now, UtcDateTime), literal(now, UtcDateTime),
            )
            .select_from(claim_t)
            .join(ticket_t, ticket_t.c.id == claim_t.c.ticket_id)
            .join(order_t, order_t.c.id == ticket_t.c.order_id)
            .where(claim_t.c.state == ClaimState.PAYOUT_PENDING.value, amount > 0, ~busy,
                   _only_claims(claim_t.c.id, claim_ids))
        )
        stmt = _insert(conn).from_select(
            ["claim_id", "channel", "amount", "attempt", "idempotency_key", "status", "created_at", "updated_at"], source
        ).on_conflict_do_nothing()  # a concurrent run opened it first (uq_payout_live_claim)
        # RETURNING, not rowcount: psycopg reports 0 for INSERT ... SELECT ... ON CONFLICT.
        return len(conn.execute(stmt.returning(payout_t.c.id)).all())


# --- card refunds ---------------------------------------------------------------------------------

@dataclass
class RefundReport:
    asked: int = 0
    succeeded: int = 0
    failed: int = 0  # claim -> payout_failed (each also counted below, or left for ops)
    will_retry: int = 0  # of failed: no answer (5xx, 429, network); the sweep retries it, same key
    bank_details: int = 0  # of failed: the card refused for good; the buyer is asked for bank details
    errors: int = 0  # of failed: an unexpected error; waits for `vozvrat payouts retry`
    retry_later: int = 0  # insufficient_funds: a new attempt later, the claim stays payout_pending
    pending: int = 0  # the acquirer holds the refund as pending: reconcile polls it
    deferred: int = 0  # not recorded now (a concurrent step, a poll without answer): asked again, same key
    failures: list[str] = field(default_factory=list)  # one line per failed payout: claim, reason, what next
    anomalies: list[str] = field(default_factory=list)

    _COUNTS = ("asked", "succeeded", "failed", "will_retry", "bank_details", "errors", "retry_later", "pending", "deferred")

    def merge(self, other: RefundReport) -> None:
        for name in self._COUNTS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.failures.extend(other.failures)
        self.anomalies.extend(other.anomalies)

    def __str__(self) -> str:
        return (
            f"asked {self.asked}: succeeded {self.succeeded}, failed {self.failed} (will retry {self.will_retry}, "
            f"bank details asked {self.bank_details}, errors {self.errors}), retry later {self.retry_later}, "
            f"pending {self.pending}, deferred {self.deferred}"
        )


@dataclass(frozen=True)
class _CardPayout:
    id: int
    claim_id: int
    claim_number: str
    attempt: int
    amount: int
    key: str
    payment_id: str
    price_paid: int
    buyer_email: str
    refund_id: str | None = None


def _card_payouts(conn: Connection, ids: list[int]) -> list[_CardPayout]:
    if not ids:
        return []
    rows = conn.execute(
        select(
            payout_t.c.id, payout_t.c.claim_id, claim_t.c.number, payout_t.c.attempt, payout_t.c.amount,
            payout_t.c.idempotency_key, order_t.c.acquirer_payment_id, ticket_t.c.price_paid, order_t.c.buyer_email,
            payout_t.c.acquirer_refund_id,
        )
        .select_from(payout_t)
        .join(claim_t, claim_t.c.id == payout_t.c.claim_id)
        .join(ticket_t, ticket_t.c.id == claim_t.c.ticket_id)
        .join(order_t, order_t.c.id == ticket_t.c.order_id)
        .where(id_in(conn, payout_t.c.id, ids))
        .order_by(payout_t.c.id)
    ).all()
    return [_CardPayout(*r) for r in rows]


def refund_request(p: _CardPayout) -> RefundRequest:
    """The request for a payout: built from stored data only, so a repeat sends the identical body
    (the acquirer refuses a known key with another body). 54-FZ: a partial refund carries a receipt."""
    description = f"Возврат по заявке № {p.claim_number}"
    receipt = refund_receipt(p.buyer_email, p.amount, description) if p.amount < p.price_paid else None
    return RefundRequest(
        payment_id=p.payment_id, amount_kopecks=p.amount, idempotency_key=p.key, description=description, receipt=receipt
    )


def _take_due_card_payouts(
    engine: Engine, *, now: datetime, limit: int, stale_before: datetime, claim_ids: list[int] | None = None
) -> list[_CardPayout]:
    """Mark due card payouts `submitted` and COMMIT before any of them is sent.

    Due: opened and never sent; or sent without a recorded answer, either because a failure was
    recorded and its retry time has come (`next_attempt_at`), or because a worker died mid-call (stale).
    Only a claim in payout_pending is paid: a failed one waits for `retry_payout` (sweep or ops).
    """
    with engine.begin() as conn:
        unanswered = and_(payout_t.c.status == SUBMITTED, payout_t.c.acquirer_refund_id.is_(None))
        query = (
            select(payout_t.c.id)
            .join(claim_t, claim_t.c.id == payout_t.c.claim_id)
            .where(
                payout_t.c.channel == CARD,
                claim_t.c.state == ClaimState.PAYOUT_PENDING.value,
                _only_claims(payout_t.c.claim_id, claim_ids, conn),
                or_(
                    payout_t.c.status == PENDING,
                    # a recorded failure whose retry has come: ask again, same key
                    and_(unanswered, payout_t.c.next_attempt_at <= literal(now, UtcDateTime)),
                    # asked before, answer never recorded (crash, lost answer): ask again, same key
                    and_(unanswered, payout_t.c.next_attempt_at.is_(None),
                         payout_t.c.updated_at <= literal(stale_before, UtcDateTime)),
                ),
            )
            .order_by(payout_t.c.id)
            .limit(limit)
        )
        if conn.dialect.name == "postgresql":
            query = query.with_for_update(of=payout_t, skip_locked=True)  # several workers share the queue
        ids = list(conn.execute(query).scalars())
        if ids:
            conn.execute(
                update(payout_t).where(id_in(conn, payout_t.c.id, ids)).values(status=SUBMITTED, next_attempt_at=None, updated_at=now)
            )
        return _card_payouts(conn, ids)


def _move_claim(conn: Connection, p: _CardPayout, trigger: str, *, actor: str, now: datetime, note: str, report: RefundReport) -> bool:
    try:
        apply_trigger(conn, claim_id=p.claim_id, trigger=trigger, actor=actor, now=now, note=note)
        return True
    except (InvalidTrigger, TransitionRefused) as exc:
        # The money moved (or definitely did not); the payout's record must stay. Ops see the claim.
        report.anomalies.append(f"claim {p.claim_number}: {trigger} not applied ({exc})")
        return False


def _card_refused(conn: Connection, p: _CardPayout, reason: str, *, now: datetime, report: RefundReport) -> None:
    """A permanent failure: the claim's payout failed, and it starts again as a bank transfer
    (payout_failed -> needs_bank_details, the buyer gets «нужны реквизиты»)."""
    report.failed += 1
    if _move_claim(conn, p, "payout_failed", actor="acquirer", now=now, note=f"card refund refused: {reason}", report=report) and \
            _move_claim(conn, p, "start_payout", actor="system", now=now, note="the card refused the refund: bank transfer", report=report):
        report.bank_details += 1
        report.failures.append(f"claim {p.claim_number}: card refund refused ({reason}); buyer asked for bank details")
    else:
        report.failures.append(f"claim {p.claim_number}: card refund refused ({reason})")


def _record(engine: Engine, p: _CardPayout, result: RefundResult, *, now: datetime, report: RefundReport) -> None:
    """Write the acquirer's answer for a submitted payout and the claim's step, in one transaction."""
    submitted = (payout_t.c.id == p.id) & (payout_t.c.status == SUBMITTED)
    with engine.begin() as conn:
        if result.status == "succeeded":
            done = conn.execute(
                update(payout_t).where(submitted).values(
                    status=SUCCEEDED, acquirer_refund_id=result.refund_id, updated_at=now, last_error=None
                )
            ).rowcount
            if done:
                _move_claim(conn, p, "payout_succeeded", actor="acquirer", now=now, note=f"refund {result.refund_id}", report=report)
                report.succeeded += 1
        elif result.retry_later:
            conn.execute(
                update(payout_t).where(submitted).values(
                    status=RETRY_LATER, acquirer_refund_id=result.refund_id, cancellation_reason=result.cancellation_reason,
                    next_attempt_at=now + retry_later_delay(p.attempt), updated_at=now,
                )
            )
            report.retry_later += 1
        elif result.failed:
            done = conn.execute(
                update(payout_t).where(submitted).values(
                    status=CANCELED, acquirer_refund_id=result.refund_id, cancellation_reason=result.cancellation_reason,
                    updated_at=now,
                )
            ).rowcount
            if done:
                _card_refused(conn, p, f"refund canceled: {result.cancellation_reason}", now=now, report=report)
        else:  # pending: the acquirer will settle it; reconcile_pending polls
            conn.execute(update(payout_t).where(submitted).values(acquirer_refund_id=result.refund_id, updated_at=now))
            report.pending += 1


def _note_error(engine: Engine, p: _CardPayout, error: str, *, now: datetime) -> None:
    with engine.begin() as conn:
        conn.execute(update(payout_t).where(payout_t.c.id == p.id, payout_t.c.status == SUBMITTED).values(last_error=error[:500], updated_at=now))


def _fail_request(engine: Engine, p: _CardPayout, exc: AcquirerError, *, now: datetime, report: RefundReport) -> None:
    """The acquirer refused the request itself for this payment (400/404: payment unknown or malformed,
    more than is left of the payment): nothing was refunded, the card will never take it."""
    reason = f"acquirer_error:{exc.code or exc.http_status}"
    with engine.begin() as conn:
        done = conn.execute(
            update(payout_t).where(payout_t.c.id == p.id, payout_t.c.status == SUBMITTED).values(
                status=CANCELED, cancellation_reason=reason, last_error=str(exc)[:500], updated_at=now
            )
        ).rowcount
        if done:
            _card_refused(conn, p, str(exc), now=now, report=report)


def _automatic_retries(conn: Connection, claim_id: int) -> int:
    """How many automatic retries the claim's current payout has had: the sweep's `retry_payout` rows
    in the audit trail since the payout last started by other means (opened, or retried by ops).
    The audit trail is the count: no second counter to drift from it."""
    rows = conn.execute(
        select(audit_t.c.trigger, audit_t.c.actor, audit_t.c.from_state, audit_t.c.to_state)
        .where(audit_t.c.claim_id == claim_id)
        .order_by(audit_t.c.id.desc())
        .limit(4 * MAX_AUTOMATIC_RETRIES + 20)
    ).all()
    retries = 0
    for r in rows:
        if r.from_state == r.to_state or r.trigger == "payout_failed":
            continue  # internal steps (flag_payout_overdue) and the failures themselves
        if r.trigger == "retry_payout" and r.actor == RETRY_ACTOR:
            retries += 1
            continue
        break
    return retries


def _fail_for_now(engine: Engine, p: _CardPayout, error: str, *, now: datetime, report: RefundReport, transient: bool) -> None:
    """No answer about the refund (5xx, 429, network) or an unexpected error: the outcome is unknown,
    so the payout keeps its row and key (a retry can never pay twice) and the claim goes to
    payout_failed. A transient failure gets an automatic retry at `next_attempt_at` (backoff,
    MAX_AUTOMATIC_RETRIES); an unexpected error, or the last transient one, waits for ops."""
    error = error[:500]
    with engine.begin() as conn:
        retries = _automatic_retries(conn, p.claim_id) if transient else MAX_AUTOMATIC_RETRIES
        if retries < MAX_AUTOMATIC_RETRIES:
            next_at = now + transient_retry_delay(retries + 1)
            then = f"automatic retry {retries + 1} of {MAX_AUTOMATIC_RETRIES} at {next_at:%Y-%m-%d %H:%M} UTC"
        else:
            next_at = None
            then = f"waits for ops: vozvrat payouts retry {p.claim_number}"
        done = conn.execute(
            update(payout_t)
            .where(payout_t.c.id == p.id, payout_t.c.status == SUBMITTED, payout_t.c.acquirer_refund_id.is_(None))
            .values(last_error=error, next_attempt_at=next_at, updated_at=now)
        ).rowcount
        if not done:
            return
        _move_claim(conn, p, "payout_failed", actor="acquirer", now=now, note=f"{error}; {then}", report=report)
    report.failed += 1
    if next_at is not None:
        report.will_retry += 1
    if not transient:
        report.errors += 1
        report.anomalies.append(f"claim {p.claim_number}: {error}")
    report.failures.append(f"claim {p.claim_number}: {error}; {then}")


def _error_text(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _send(engine: Engine, p: _CardPayout, acquirer: AcquirerPort, *, now: datetime, report: RefundReport) -> None:
    """Send one payout and record what came of it; whatever goes wrong is this payout's alone."""
    report.asked += 1
    try:
        result = acquirer.create_refund(refund_request(p))
    except Exception as exc:  # noqa: BLE001 - one payout's surprise must not strand the batch
        _record_error(engine, p, exc, now=now, report=report)
        return
    _settle(engine, p, result, now=now, report=report)


def _record_error(engine: Engine, p: _CardPayout, exc: BaseException, *, now: datetime, report: RefundReport) -> None:
    if isinstance(exc, AcquirerError):
        if exc.http_status in (401, 403):
            raise exc  # our credentials: every payout would fail the same way; stop the run, keep the rows
        if exc.retryable:
            _fail_for_now(engine, p, str(exc), now=now, report=report, transient=True)
        elif exc.card_refused:
            _fail_request(engine, p, exc, now=now, report=report)
        else:  # e.g. our key reused with another body: a person must look
            _fail_for_now(engine, p, str(exc), now=now, report=report, transient=False)
        return
    _fail_for_now(engine, p, _error_text(exc), now=now, report=report, transient=False)


# --- card refunds at scale (a mass cancellation) --------------------------------------------------

#: A rate-limited (429) or failing (5xx, network) refund is asked again at once with the SAME key
#: after 0.5, 1, 2, 4 s before the payout is left to the sweep (payout_failed, retried later).
CALL_ATTEMPTS = 5
CALL_BACKOFF_BASE_S = 0.5
CALL_BACKOFF_CAP_S = 8.0


def call_backoff(attempt: int, base: float = CALL_BACKOFF_BASE_S) -> float:
    """Seconds to wait before call attempt `attempt + 1` (attempt counts from 1)."""
    return min(base * 2 ** (attempt - 1), CALL_BACKOFF_CAP_S)


def create_refund_with_retries(acquirer: AcquirerPort, req: RefundRequest, *, attempts: int = CALL_ATTEMPTS,
                               backoff_base: float = CALL_BACKOFF_BASE_S, sleep=time.sleep) -> RefundResult:
    """One refund, asked again with the same idempotency key while the acquirer answers 429, 5xx or
    nothing (the acquirer replays a refund it made, so asking again never pays twice)."""
    for attempt in range(1, attempts + 1):
        try:
            return acquirer.create_refund(req)
        except AcquirerError as exc:
            if not exc.retryable or attempt == attempts:
                raise
            sleep(call_backoff(attempt, backoff_base))
    raise AssertionError("unreachable")  # pragma: no cover


def submit_card_refunds_concurrently(
    engine: Engine, acquirer: AcquirerPort, *, now: datetime, claim_ids: Iterable[int], concurrency: int = 16,
    actor: str = "acquirer", hold_notifications: bool = False, attempts: int = CALL_ATTEMPTS,
    backoff_base: float = CALL_BACKOFF_BASE_S, sleep=time.sleep, stale_after: timedelta = STALE_SUBMITTED,
) -> RefundReport:
    """The due card payouts of `claim_ids`, sent `concurrency` at a time, each with its own key and
    retried with backoff on 429/5xx; the successes are recorded together (payout rows, then ONE batch
    `payout_succeeded` through the machine, its «Деньги отправлены» emails held with the mass send
    when `hold_notifications`), every other answer one by one as `submit_card_refunds` does."""
    now = _utc(now)
    ids = list(claim_ids)
    report = RefundReport()
    if not ids:
        return report
    payouts = _take_due_card_payouts(engine, now=now, limit=len(ids) + 1, stale_before=now - stale_after, claim_ids=ids)
    if not payouts:
        return report

    def call(p: _CardPayout) -> RefundResult | BaseException:
        try:
            return create_refund_with_retries(acquirer, refund_request(p), attempts=attempts, backoff_base=backoff_base, sleep=sleep)
        except Exception as exc:  # noqa: BLE001 - recorded on the payout below
            return exc

    with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="refund") as pool:
        answers = list(pool.map(call, payouts))
    report.asked += len(payouts)
    succeeded = [(p, a) for p, a in zip(payouts, answers, strict=True) if isinstance(a, RefundResult) and a.status == "succeeded"]
    if succeeded:
        _record_successes(engine, succeeded, now=now, actor=actor, hold=hold_notifications, report=report)
    for p, answer in zip(payouts, answers, strict=True):
        if isinstance(answer, RefundResult):
            if answer.status != "succeeded":
                _settle(engine, p, answer, now=now, report=report)
            continue
        try:
            _record_error(engine, p, answer, now=now, report=report)
        except ConflictError as exc:
            report.deferred += 1
            report.anomalies.append(f"claim {p.claim_number}: {exc}")
    return report


def _record_successes(engine: Engine, done: list[tuple[_CardPayout, RefundResult]], *, now: datetime, actor: str, hold: bool,
                      report: RefundReport) -> None:
    with engine.begin() as conn:
        conn.execute(
            update(payout_t).where(payout_t.c.id == bindparam("pid"), payout_t.c.status == SUBMITTED)
            .values(status=SUCCEEDED, acquirer_refund_id=bindparam("rid"), updated_at=now, last_error=None),
            [{"pid": p.id, "rid": r.refund_id} for p, r in done],
        )
        result = apply_batch_in(conn, claim_ids=[p.claim_id for p, _ in done], trigger="payout_succeeded", actor=actor, now=now,
                             note="card refund made by the acquirer", hold_notifications=hold)
    report.succeeded += len(done)
    for claim_id, why in list(result.refused.items()) + [(c, "conflict") for c in result.conflicts] + list(result.invalid.items()):
        report.anomalies.append(f"claim {claim_id}: payout_succeeded not applied ({why})")


def _settle(engine: Engine, p: _CardPayout, result: RefundResult, *, now: datetime, report: RefundReport) -> None:
    try:
        _record(engine, p, result, now=now, report=report)
    except ConflictError as exc:
        # The claim moved under us; the row stays submitted and the next run replays the answer.
        report.deferred += 1
        report.anomalies.append(f"claim {p.claim_number}: {exc}")


def submit_card_refunds(
    engine: Engine, acquirer: AcquirerPort, *, now: datetime, limit: int = 500, stale_after: timedelta = STALE_SUBMITTED,
    claim_ids: Iterable[int] | None = None,
) -> RefundReport:
    """Send due card payouts to the acquirer (each with its own key) and record each answer; with
    `claim_ids`, only those claims' payouts (a claim's run sends its own, nobody else's).

    succeeded -> payout succeeded, claim paid; canceled for a passing reason -> retry_later (a new
    attempt opens later); canceled for good or refused (payment unknown, nothing left) -> claim
    payout_failed -> needs_bank_details; no answer (5xx, 429, network) -> claim payout_failed, the
    sweep retries with the same key; pending -> left for reconcile. Each payout's failure, even an
    unexpected exception, is recorded on that payout and the batch goes on.
    """
    now = _utc(now)
    claim_ids = None if claim_ids is None else list(claim_ids)
    report = RefundReport()
    if claim_ids == []:
        return report
    for p in _take_due_card_payouts(engine, now=now, limit=limit, stale_before=now - stale_after, claim_ids=claim_ids):
        try:
            _send(engine, p, acquirer, now=now, report=report)
        except ConflictError as exc:  # the claim moved while its failure was recorded: next run
            report.deferred += 1
            report.anomalies.append(f"claim {p.claim_number}: {exc}")
    return report


def reconcile_pending(engine: Engine, acquirer: AcquirerPort, *, now: datetime, limit: int = 500) -> RefundReport:
    """Poll refunds the acquirer holds as pending (YooKassa's webhook announces only success).

    A poll that gets no answer, or an error, changes nothing but the payout's `last_error`: the refund
    exists at the acquirer, so it is not a failed payout; the next poll asks again.
    """
    now = _utc(now)
    report = RefundReport()
    with engine.connect() as conn:
        ids = list(conn.execute(
            select(payout_t.c.id)
            .where(payout_t.c.channel == CARD, payout_t.c.status == SUBMITTED, payout_t.c.acquirer_refund_id.is_not(None))
            .order_by(payout_t.c.id)
            .limit(limit)
        ).scalars())
        payouts = _card_payouts(conn, ids)
    for p in payouts:
        report.asked += 1
        try:
            result = acquirer.get_refund(p.refund_id)
        except AcquirerError as exc:
            if exc.http_status in (401, 403):
                raise
            _note_error(engine, p, str(exc), now=now)
            report.deferred += 1
            if not exc.retryable:
                report.anomalies.append(f"claim {p.claim_number}: polling refund {p.refund_id}: {exc}")
            continue
        except Exception as exc:  # noqa: BLE001
            _note_error(engine, p, _error_text(exc), now=now)
            report.deferred += 1
            report.anomalies.append(f"claim {p.claim_number}: polling refund {p.refund_id}: {_error_text(exc)}")
            continue
        _settle(engine, p, result, now=now, report=report)
    return report


# --- retrying failed payouts (retry_payout) --------------------------------------------------------

def retry_due_payouts(engine: Engine, *, now: datetime, claim_ids: Iterable[int] | None = None, limit: int = 500) -> list[str]:
    """The sweep: a claim in payout_failed whose payout failed for want of an answer gets
    `retry_payout` (-> payout_pending) once its `next_attempt_at` has come; `submit_card_refunds`
    then asks again with the same key. Returns the claim numbers retried."""
    now = _utc(now)
    with engine.connect() as conn:
        rows = conn.execute(
            select(claim_t.c.id, claim_t.c.number, payout_t.c.last_error)
            .select_from(payout_t)
            .join(claim_t, claim_t.c.id == payout_t.c.claim_id)
            .where(
                claim_t.c.state == ClaimState.PAYOUT_FAILED.value,
                payout_t.c.channel == CARD,
                payout_t.c.status == SUBMITTED,
                payout_t.c.acquirer_refund_id.is_(None),
                payout_t.c.next_attempt_at <= literal(now, UtcDateTime),
                _only_claims(claim_t.c.id, None if claim_ids is None else list(claim_ids)),
            )
            .order_by(payout_t.c.next_attempt_at, payout_t.c.id)
            .limit(limit)
        ).all()
    retried = []
    for row in rows:
        try:
            with engine.begin() as conn:
                n = _automatic_retries(conn, row.id) + 1
                apply_trigger(conn, claim_id=row.id, trigger="retry_payout", actor=RETRY_ACTOR, now=now,
                              note=f"automatic retry {n} of {MAX_AUTOMATIC_RETRIES} after: {row.last_error or 'no answer'}")
        except (ConflictError, InvalidTrigger, TransitionRefused):
            continue  # another sweep or a person moved it first
        retried.append(row.number)
    return retried


@dataclass(frozen=True)
class OpsRetry:
    claim_id: int
    number: str
    state: str  # the claim's state after the retry


class RetryRefused(ValueError):
    """An ops retry that cannot be applied; the message is one line for the CLI."""


def retry_payout_by_ops(engine: Engine, *, claim_number: str, reason: str, actor: str, now: datetime) -> OpsRetry:
    """`retry_payout` by a person: the claim (payout_failed) goes back to payout_pending with an audit
    row naming the person and the reason. A payout whose outcome is unknown is asked again at once
    with its SAME key (the acquirer replays a refund it made); a refused one gets a new attempt."""
    now = _utc(now)
    reason = " ".join((reason or "").split())
    if not reason:
        raise RetryRefused("a retry needs a reason (--reason)")
    if not actor.startswith("ops:") or len(actor) <= 4:
        raise RetryRefused(f"an ops retry names its person as ops:<user>, not {actor!r}")
    with engine.begin() as conn:
        row = conn.execute(select(claim_t.c.id, claim_t.c.state).where(claim_t.c.number == claim_number)).first()
        if row is None:
            raise RetryRefused(f"no claim {claim_number}")
        if row.state != ClaimState.PAYOUT_FAILED.value:
            raise RetryRefused(f"claim {claim_number} is {row.state}: only a claim in payout_failed is retried")
        try:
            outcome = apply_trigger(conn, claim_id=row.id, trigger="retry_payout", actor=actor, now=now, note=f"ops retry: {reason}")
        except (InvalidTrigger, TransitionRefused, ConflictError) as exc:
            raise RetryRefused(f"claim {claim_number}: retry_payout not applied ({exc})") from None
        conn.execute(
            update(payout_t)
            .where(payout_t.c.claim_id == row.id, payout_t.c.channel == CARD, payout_t.c.status == SUBMITTED,
                   payout_t.c.acquirer_refund_id.is_(None))
            .values(next_attempt_at=now, updated_at=now)
        )
    return OpsRetry(row.id, claim_number, outcome.dest)


# --- bank details ---------------------------------------------------------------------------------

class BankDetailsNotExpected(ValueError):
    """Bank details were offered to a claim that does not wait for them (and no forced correction)."""

    def __init__(self, message_ru: str):
        super().__init__(message_ru)
        self.message_ru = message_ru


# An ops correction (--force) may replace the details while money is owed and nothing left yet.
CORRECTABLE_STATES = frozenset({ClaimState.APPROVED, ClaimState.PAYOUT_PENDING, ClaimState.PAYOUT_FAILED, ClaimState.NEEDS_BANK_DETAILS})


def submit_bank_details(
    engine: Engine, *, claim_id: int, bik: str, account: str, name: str, inn: str | None = None, now: datetime,
    actor: str, force: bool = False, reason: str | None = None,
) -> list[FieldError]:
    """Store the buyer's bank details encrypted, with an audit row naming `actor`; a claim waiting for
    them moves on (bank_details_received).

    Only a claim in needs_bank_details takes details. `force` (with a `reason`) is an ops correction:
    it replaces the details of a claim that still owes money, as long as no transfer holding the old
    ones has been exported to the bank. Invalid details: the Russian per-field errors, nothing
    written. Raises ClaimNotFound, BankDetailsNotExpected.
    """
    now = _utc(now)
    if force and not (reason or "").strip():
        raise BankDetailsNotExpected("Исправление реквизитов (--force) требует причины (--reason).")
    errors = validate_bank_details(bik=bik, account=account, name=name, inn=inn)
    if errors:
        return errors
    details = {"bik": bik.strip(), "account": account.strip(), "name": " ".join(name.split()), "inn": (inn or "").strip() or None}
    token = encrypt_text(json.dumps(details, ensure_ascii=False))
    from models.claim_store import ClaimNotFound, insert_audit

    with engine.begin() as conn:
        row = conn.execute(select(claim_t.c.state, claim_t.c.version).where(claim_t.c.id == claim_id)).one_or_none()
        if row is None:
            raise ClaimNotFound(f"claim {claim_id} not found")
        waiting = row.state == ClaimState.NEEDS_BANK_DETAILS.value
        if not waiting and not force:
            raise BankDetailsNotExpected(f"Заявка не ждёт банковских реквизитов (состояние «{row.state}»).")
        if not waiting:
            if row.state not in CORRECTABLE_STATES:
                raise BankDetailsNotExpected(f"Реквизиты заявки в состоянии «{row.state}» исправить нельзя: деньги уже не ждут выплаты.")
            exported = conn.execute(
                select(payout_t.c.id).where(payout_t.c.claim_id == claim_id, payout_t.c.channel == BANK_TRANSFER, payout_t.c.status == EXPORTED)
            ).first()
            if exported:
                raise BankDetailsNotExpected("Платёжное поручение с прежними реквизитами уже выгружено в банк: сначала отзовите его в банке.")
        moved = conn.execute(
            update(claim_t).where(claim_t.c.id == claim_id, claim_t.c.version == row.version).values(
                bank_details=token, version=claim_t.c.version + 1, updated_at=now
            )
        ).rowcount
        if moved != 1:
            raise ConflictError(f"claim {claim_id} changed while its bank details were being saved")
        note = f"реквизиты: БИК {details['bik']}, счёт {mask_account(details['account'])}"
        if force:
            note += f"; исправление: {reason.strip()}"
        insert_audit(conn, [claim_id], trigger="bank_details_set", source=row.state, dest=row.state, actor=actor, now=now, note=note)
        if waiting:
            apply_trigger(conn, claim_id=claim_id, trigger="bank_details_received", actor=actor, now=now)
    return []


def read_bank_details(token: str) -> dict[str, Any]:
    """The decrypted details {bik, account, name, inn}; DecryptionError on a wrong key."""
    return json.loads(decrypt_text(token))


# --- 1C export ------------------------------------------------------------------------------------

@dataclass
class ExportBatch:
    batch: str | None
    count: int
    skipped: list[str] = field(default_factory=list)  # claim numbers left pending, with why


def _new_batch_id(now: datetime) -> str:
    return f"1C-{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


def mark_export_batch(engine: Engine, *, now: datetime, limit: int = 10_000, event_id: int | None = None) -> ExportBatch:
    """Mark pending bank transfers `exported` under a new batch id and commit (step 1 of the export);
    with `event_id`, only that event's (a mass cancellation exports its own)."""
    now = _utc(now)
    with engine.begin() as conn:
        query = (
            select(payout_t.c.id, claim_t.c.number, claim_t.c.bank_details)
            .select_from(payout_t)
            .join(claim_t, claim_t.c.id == payout_t.c.claim_id)
            .where(payout_t.c.channel == BANK_TRANSFER, payout_t.c.status == PENDING,
                   true() if event_id is None else claim_t.c.event_id == event_id)
            .order_by(payout_t.c.id)
            .limit(limit)
        )
        if conn.dialect.name == "postgresql":
            query = query.with_for_update(of=payout_t, skip_locked=True)
        ready: list[int] = []
        skipped: list[str] = []
        for row in conn.execute(query):
            problem = _details_problem(row.bank_details)
            if problem:
                skipped.append(f"{row.number}: {problem}")
            else:
                ready.append(row.id)
        if not ready:
            return ExportBatch(None, 0, skipped)
        batch = _new_batch_id(now)
        conn.execute(
            update(payout_t).where(id_in(conn, payout_t.c.id, ready), payout_t.c.status == PENDING).values(
                status=EXPORTED, export_batch=batch, exported_at=now, updated_at=now
            )
        )
        return ExportBatch(batch, len(ready), skipped)


def _details_problem(token: str | None) -> str | None:
    if not token:
        return "нет банковских реквизитов"
    try:
        d = read_bank_details(token)
    except (DecryptionError, ValueError):
        return "реквизиты не расшифровываются (другой VOZVRAT_SECRET_KEY?)"
    errors = validate_bank_details(bik=d.get("bik", ""), account=d.get("account", ""), name=d.get("name", ""), inn=d.get("inn"))
    return "; ".join(e.message_ru for e in errors) or None


def batch_orders(engine: Engine, *, batch: str) -> tuple[list[PaymentOrder], datetime | None]:
    """The payment orders of an export batch, in payout order, and the batch's creation time."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(payout_t.c.id, payout_t.c.amount, payout_t.c.exported_at, claim_t.c.number, claim_t.c.bank_details)
            .select_from(payout_t)
            .join(claim_t, claim_t.c.id == payout_t.c.claim_id)
            .where(payout_t.c.export_batch == batch)
            .order_by(payout_t.c.id)
        ).all()
    orders = []
    for r in rows:
        d = read_bank_details(r.bank_details)
        orders.append(
            PaymentOrder(
                number=r.id,
                date=r.exported_at.astimezone(OPERATOR_TZ).date(),
                amount_kopecks=r.amount,
                recipient_name=d["name"],
                recipient_inn=d.get("inn"),
                recipient_account=d["account"],
                recipient_bik=d["bik"],
                purpose=payment_purpose(r.number),
                claim_number=r.number,
            )
        )
    return orders, (rows[0].exported_at if rows else None)


def write_export_file(engine: Engine, *, batch: str, out: Path, payer: Payer | None = None) -> int:
    """Write (or rewrite, byte for byte) the 1C file of an export batch; returns the number of orders."""
    orders, created = batch_orders(engine, batch=batch)
    if not orders:
        raise LookupError(f"no payouts in export batch {batch}")
    created_local = created.astimezone(OPERATOR_TZ)
    data = render_payment_orders(
        orders, payer=payer or Payer.from_settings(), created_at=created_local,
        date_from=created_local.date(), date_to=created_local.date(),
    )
    write_atomically(Path(out), data)
    return len(orders)


def export_bank_transfers(engine: Engine, *, out: Path, now: datetime, payer: Payer | None = None, event_id: int | None = None) -> int:
    """Pending bank transfers -> one 1C file at `out`; 0 and no file when there is nothing to export.

    Marks (and commits) first, writes second: see the module docstring.
    """
    marked = mark_export_batch(engine, now=now, event_id=event_id)
    if not marked.batch:
        return 0
    return write_export_file(engine, batch=marked.batch, out=out, payer=payer)


# --- bank statement -------------------------------------------------------------------------------

@dataclass
class StatementReport:
    paid: list[str] = field(default_factory=list)  # claim numbers closed now
    already_paid: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)  # a claim number with no exported transfer
    mismatched: list[str] = field(default_factory=list)  # amount differs from the payout: left for a person
    without_claim: int = 0  # documents whose purpose names no claim

    def __str__(self) -> str:
        return (
            f"paid {len(self.paid)}, already paid {len(self.already_paid)}, unknown {len(self.unknown)}, "
            f"amount mismatch {len(self.mismatched)}, not ours {self.without_claim}"
        )


def _statement_mismatch(entry, row) -> str | None:
    """Why a debited document is not the payment order we exported for this payout, or None."""
    problems = []
    if entry.number != str(row.id):
        problems.append(f"Номер {entry.number} != {row.id}")
    exported_on = row.exported_at.astimezone(OPERATOR_TZ).date()
    if entry.date != exported_on:
        problems.append(f"Дата {entry.date} != {exported_on}")
    if entry.amount_kopecks != row.amount:
        problems.append(f"Сумма {entry.amount_kopecks} != {row.amount}")
    try:
        account = read_bank_details(row.bank_details)["account"] if row.bank_details else None
    except (DecryptionError, ValueError, KeyError):
        account = None
    if account is None:
        problems.append("реквизиты получателя не расшифровываются")
    elif entry.recipient_account != account:
        problems.append(f"ПолучательСчет {mask_account(entry.recipient_account)} != {mask_account(account)}")
    return "; ".join(problems) or None


def mark_paid_from_statement(engine: Engine, data: bytes, *, now: datetime, payer: Payer | None = None) -> StatementReport:
    """Close exported transfers a bank statement shows debited: payout paid, claim payout_succeeded.

    Only a bank's statement of our account closes anything (`read_bank_statement`: account section,
    debit dates); each debited document must be the payment order we exported, matched by number,
    date, amount and recipient account, or it is left for a person. Raises StatementError (a
    ValueError) before anything is written when the file is not such a statement.
    """
    now = _utc(now)
    payer = payer or Payer.from_settings()
    statement = read_bank_statement(data, account=payer.account)
    report = StatementReport(without_claim=statement.other_documents)
    with engine.begin() as conn:
        for entry in statement.debits:
            if not entry.claim_number:
                report.without_claim += 1
                continue
            number = entry.claim_number
            row = conn.execute(
                select(payout_t.c.id, payout_t.c.status, payout_t.c.amount, payout_t.c.exported_at, claim_t.c.bank_details,
                       claim_t.c.id.label("claim_id"))
                .select_from(payout_t)
                .join(claim_t, claim_t.c.id == payout_t.c.claim_id)
                .where(claim_t.c.number == number, payout_t.c.channel == BANK_TRANSFER, payout_t.c.status.in_((EXPORTED, PAID)))
                .order_by(payout_t.c.status)  # "exported" before "paid"
                .limit(1)
            ).first()
            if row is None:
                report.unknown.append(number)
                continue
            if row.status == PAID:
                report.already_paid.append(number)
                continue
            problem = _statement_mismatch(entry, row)
            if problem:
                report.mismatched.append(f"{number}: {problem}")
                continue
            done = conn.execute(
                update(payout_t).where(payout_t.c.id == row.id, payout_t.c.status == EXPORTED).values(status=PAID, updated_at=now)
            ).rowcount
            if not done:
                report.already_paid.append(number)
                continue
            try:
                apply_trigger(conn, claim_id=row.claim_id, trigger="payout_succeeded", actor="bank", now=now,
                              note=f"bank statement: payment order №{entry.number} of {entry.date:%d.%m.%Y}, debited {entry.debit_date:%d.%m.%Y}")
            except (InvalidTrigger, TransitionRefused):
                pass  # the payout is paid whatever state the claim is in; the audit shows the rest
            report.paid.append(number)
    return report
