"""Side effects of one claim's flow: read it, acknowledge it, move it, send its mail.

Each function is a Prefect task with a cache key derived from the claim and the step, so a flow run
that replays after a suspend/resume gets the earlier results back instead of acting twice. The
steps are idempotent on their own as well (outbox dedup keys, state checks), so a cache miss is
harmless too.
"""
from __future__ import annotations

import asyncio
from contextlib import suppress
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Literal

from prefect import get_run_logger, task
from prefect.cache_policies import INPUTS, RUN_ID, TASK_SOURCE
from prefect.runtime import flow_run
from pydantic import Field
from prefect.input import RunInput
from sqlmodel import Session
from sqlalchemy import select, update

from models.claim_store import ConflictError, InvalidTrigger, TransitionRefused, apply_trigger, claim_t, event_t, load_facts, order_t, ticket_t
from models.db import get_engine
from models.settings import get_settings
from states.calendar import DECISION_WORKING_DAYS
from states.lifecycle import ClaimState, Trigger, effects, has_step
from states.money import parse_rub
from states.policy import DOCUMENTED_REASONS, ORGANIZER_DECIDES, documents_last_day
from tasks.emails import basis_ru
from tasks.outbox import DispatchReport, dispatch_emails, enqueue_email
from tasks.smtp import SmtpSettings

# Replays of one flow run reuse a step's result; another claim or another run does not.
STEP_CACHE = INPUTS + TASK_SOURCE + RUN_ID

WAITING_STATES = frozenset({ClaimState.AWAITING_DOCUMENTS.value, ClaimState.AWAITING_ORGANIZER.value, ClaimState.ESCALATED.value})


class ClaimInput(RunInput):
    """What resumes a waiting claim: the organizer's decision, an extension, or documents received.

    The decision endpoint records the step in the database first and passes the same facts here; a
    run resumed from the Prefect UI form applies the step itself.
    """

    # withdraw / expire_documents / documents / bank_details: the step is already recorded (buyer, sla-watch, ops);
    # the run re-reads the claim and goes on. recheck: the claim moved on, read it again.
    decision: Literal["approve", "reject", "extend", "documents", "withdraw", "expire_documents", "bank_details", "recheck"] = Field(
        description="approve, reject, extend (10 -> 20 working days); documents, bank_details, withdraw, expire_documents "
                    "(already recorded); recheck (the claim moved on: read it again)")
    amount_kopecks: int | None = Field(default=None, ge=0, description="For an 'other' claim: the amount the organizer agrees to refund")
    note: str = Field(default="", description="Reason for a refusal or an extension, shown to the buyer")
    decided_by: str = Field(default="organizer", description="Who decided")
    at: datetime | None = Field(default=None, description="When the decision was made (defaults to the resume time)")


@dataclass(frozen=True)
class ClaimView:
    id: int
    number: str
    state: str
    reason: str
    event_id: int
    organizer_id: int
    buyer_email: str
    version: int

    def tags(self) -> list[str]:
        return [f"event:{self.event_id}", f"organizer:{self.organizer_id}", f"reason:{self.reason}"]


def _claim_with_order_and_event(claim_id: int, *columns):
    return (
        select(*columns)
        .join(ticket_t, ticket_t.c.id == claim_t.c.ticket_id)
        .join(order_t, order_t.c.id == ticket_t.c.order_id)
        .join(event_t, event_t.c.id == claim_t.c.event_id)
        .where(claim_t.c.id == claim_id)
    )


def read_claim(claim_id: int, *, engine=None) -> ClaimView:
    """The claim as stored now: the machine's state is the truth the flow follows."""
    with (engine or get_engine()).connect() as conn:
        row = conn.execute(_claim_with_order_and_event(
            claim_id, claim_t.c.id, claim_t.c.number, claim_t.c.state, claim_t.c.reason, claim_t.c.event_id, event_t.c.organizer_id,
            order_t.c.buyer_email, claim_t.c.version,
        )).one_or_none()
    if row is None:
        raise LookupError(f"claim {claim_id} not found")
    return ClaimView(**row._mapping)


@task(name="check-claim", retries=3, retry_delay_seconds=2, cache_policy=STEP_CACHE)
def check_claim(claim_id: int) -> dict[str, Any]:
    """Read the claim and link this flow run to it (ops find the run from the claim and back)."""
    claim = read_claim(claim_id)
    run_id = flow_run.get_id()
    if run_id:
        with get_engine().begin() as conn:
            conn.execute(update(claim_t).where(claim_t.c.id == claim_id, claim_t.c.flow_run_id.is_(None)).values(flow_run_id=str(run_id)))
    return asdict(claim)


def acknowledgement_payload(conn, claim_id: int, now: datetime) -> dict[str, Any]:
    """What «Заявка принята» says. A claim the organizer decides (illness, death, «Прочее") gets what
    happens next and by when; the decision deadline is the one `assess` would set (states decide),
    shown only once it can be known (documents in). Any other claim gets its quote and the rule,
    in Russian prose."""
    row = conn.execute(_claim_with_order_and_event(
        claim_id, claim_t.c.number, claim_t.c.quote, claim_t.c.reason, order_t.c.buyer_name, event_t.c.title,
    )).one()
    _, facts = load_facts(conn, [claim_id], now)[claim_id]
    quote = row.quote or {}
    payload: dict[str, Any] = {
        "claim_number": row.number,
        "buyer_name": row.buyer_name,
        "event_title": row.title,
        "event_date": facts.event_start.date(),
        "reason": row.reason,
        "basis": basis_ru(quote | {"reason": row.reason}),
    }
    if row.reason in {r.value for r in ORGANIZER_DECIDES}:
        documented = row.reason in {r.value for r in DOCUMENTED_REASONS}
        payload["decision_working_days"] = DECISION_WORKING_DAYS
        # A date past the calendar's edge (an event in year 9999) leaves the date out, never the filing.
        if documented:
            payload["documents_received"] = bool(facts.documents)
            with suppress(OverflowError, ValueError):
                payload["documents_deadline"] = documents_last_day(facts.event_start)
        if not documented or facts.documents:
            with suppress(OverflowError, ValueError):
                due = effects(Trigger.ASSESS.value, ClaimState.AWAITING_ORGANIZER.value, facts, now).get("decision_due")
                if due is not None:
                    payload["decision_deadline"] = due
    else:
        payload |= {
            "refund_percent": quote.get("percent", 0),
            "refund_kopecks": parse_rub(quote.get("amount", "0.00")),
            "days_before": quote.get("days_before"),
        }
    return payload


def queue_acknowledgement(conn, claim_id: int, now: datetime) -> bool:
    """Queue «Заявка принята» in the caller's transaction: the filing writes it together with the
    claim, the claim's run again (the dedup key keeps it once per claim)."""
    recipient = conn.execute(_claim_with_order_and_event(claim_id, order_t.c.buyer_email)).scalar_one()
    payload = acknowledgement_payload(conn, claim_id, now)
    with Session(bind=conn) as session:
        queued = enqueue_email(session, dedup_key=f"claim:{claim_id}:claim_received", claim_id=claim_id, template="claim_received",
                               recipient=recipient, payload=payload, now=now)
        session.flush()
    return queued


@task(name="acknowledge-claim", retries=3, retry_delay_seconds=2, cache_policy=STEP_CACHE)
def acknowledge_claim(claim_id: int, now: datetime) -> bool:
    """Queue «Заявка принята» with the number and what comes next, unless the filing already did."""
    with get_engine().begin() as conn:
        return queue_acknowledgement(conn, claim_id, now)


@task(name="move-claim", retries=2, retry_delay_seconds=1, cache_policy=STEP_CACHE)
def move_claim(claim_id: int, trigger: str, now: datetime, actor: str = "system", note: str | None = None, data: dict | None = None) -> str:
    """Apply one trigger; a claim that someone else already moved is read, not moved twice."""
    logger = get_run_logger()
    try:
        with get_engine().begin() as conn:
            outcome = apply_trigger(conn, claim_id=claim_id, trigger=trigger, actor=actor, now=now, note=note, data=data)
        logger.info("claim %s: %s -> %s (%s)", claim_id, outcome.source, outcome.dest, trigger)
        return outcome.dest
    except (InvalidTrigger, ConflictError) as exc:
        state = read_claim(claim_id).state
        logger.info("claim %s: %s not applied (%s); it is %s", claim_id, trigger, exc, state)
        return state
    except TransitionRefused as exc:
        logger.warning("claim %s: %s refused: %s", claim_id, trigger, exc.refusals)
        return read_claim(claim_id).state


@task(name="apply-organizer-input", retries=2, retry_delay_seconds=1, cache_policy=STEP_CACHE)
def apply_input(claim_id: int, decision: dict[str, Any], wait_number: int, now: datetime) -> str:
    """Apply what resumed the run, unless the decision endpoint already recorded it.

    A run resumed from the Prefect UI form gets its decision checked and recorded here by the same
    function the API uses; documents only ever arrive through the API, which records them itself.
    """
    from tasks.intake import DECISION_TRIGGERS, IntakeError, decide

    parsed = ClaimInput(**decision)
    current = read_claim(claim_id).state
    trigger = DECISION_TRIGGERS.get(parsed.decision)
    if trigger is None or not has_step(trigger.value, current):
        return current
    try:
        return decide(get_engine(), claim_id=claim_id, decision=parsed, now=parsed.at or now, resume=False).state
    except IntakeError as exc:
        get_run_logger().warning("claim %s: %s not applied: %s", claim_id, parsed.decision, exc.message_ru)
        return read_claim(claim_id).state


def send_claim_mail(claim_id: int | None, now: datetime) -> DispatchReport:
    """Send what is due in the outbox for one claim (``None``: for everyone). Rows are leased before
    sending, so this may run in the API, in the claim's run and in the sweep at the same time."""
    settings = get_settings()
    return asyncio.run(
        dispatch_emails(engine=get_engine(), smtp=SmtpSettings.from_settings(settings), now=now, mail_from=settings.mail_from,
                        enabled=settings.outbound_email_enabled, claim_id=claim_id)
    )


@task(name="dispatch-outbox", retries=3, retry_delay_seconds=[5, 30, 120])
def dispatch_outbox(now: datetime, claim_id: int | None = None) -> str:
    """Send what is due in the outbox: one claim's mail when ``claim_id`` is given (a claim's run
    mails its own claim only), everything due otherwise (the `outbox-dispatch` sweep)."""
    report = send_claim_mail(claim_id, now)
    get_run_logger().info("outbox%s: %s", f" (claim {claim_id})" if claim_id is not None else "", report)
    return str(report)


@task(name="pay-refund", retries=3, retry_delay_seconds=[5, 30, 120], cache_policy=STEP_CACHE)
def pay_refund(claim_id: int, now: datetime) -> str:
    """Start this claim's payout: a card claim goes to the acquirer now (idempotency key per payout
    attempt); cash and BSO claims wait for bank details or for accounting's 1C export.

    Only this claim's payout is opened and sent: other claims' payouts, and their failures, belong to
    their own runs and to the scheduled payout-run sweep.
    """
    from tasks.acquirer import YooKassaAcquirer
    from tasks.payouts import open_payouts, submit_card_refunds

    state = read_claim(claim_id).state
    # Only an approved claim starts its payout: a replay finds it started, and start_payout from
    # payout_failed means "by bank transfer", which is the acquirer's verdict to give, not a replay's.
    if state == ClaimState.APPROVED.value:
        state = move_claim.fn(claim_id, Trigger.START_PAYOUT.value, now)
    if state == ClaimState.APPROVED.value:  # start_payout refused: the ticket was scanned meanwhile
        state = move_claim.fn(claim_id, Trigger.REFUSE_SCANNED.value, now)
    if state == ClaimState.PAYOUT_PENDING.value:
        engine = get_engine()
        open_payouts(engine, now=now, claim_ids=[claim_id])
        report = submit_card_refunds(engine, YooKassaAcquirer.from_settings(), now=now, claim_ids=[claim_id])
        get_run_logger().info("payout of claim %s: %s", claim_id, report)
        for line in report.failures:
            get_run_logger().warning("%s", line)
        state = read_claim(claim_id).state
    return state
