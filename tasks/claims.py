"""Side effects of one claim's flow: read it, acknowledge it, move it, send its mail.

Each function is a Prefect task with a cache key derived from the claim and the step, so a flow run
that replays after a suspend/resume gets the earlier results back instead of acting twice. The
steps are idempotent on their own as well (outbox dedup keys, state checks), so a cache miss is
harmless too.
"""
from __future__ import annotations

import asyncio
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

from models.claim_store import ConflictError, InvalidTrigger, TransitionRefused, apply_trigger, claim_t, event_t, order_t, ticket_t
from models.db import get_engine
from models.settings import get_settings
from states.lifecycle import ClaimState, Trigger, has_step
from states.money import parse_rub
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

    decision: Literal["approve", "reject", "extend", "documents", "bank_details", "recheck"] = Field(
        description="approve, reject, extend (10 -> 20 working days); documents or bank_details (received, already recorded); "
                    "recheck (the claim moved on: read it again)")
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


@task(name="acknowledge-claim", retries=3, retry_delay_seconds=2, cache_policy=STEP_CACHE)
def acknowledge_claim(claim_id: int, now: datetime) -> bool:
    """Queue «Заявка принята» with the number and the quote; the dedup key makes it once per claim."""
    with get_engine().begin() as conn:
        row = conn.execute(_claim_with_order_and_event(
            claim_id, claim_t.c.number, claim_t.c.quote, claim_t.c.reason, order_t.c.buyer_email, order_t.c.buyer_name, event_t.c.title,
        )).one()
        quote = row.quote
        with Session(bind=conn) as session:
            queued = enqueue_email(
                session,
                dedup_key=f"claim:{claim_id}:claim_received",
                claim_id=claim_id,
                template="claim_received",
                recipient=row.buyer_email,
                payload={
                    "claim_number": row.number,
                    "buyer_name": row.buyer_name,
                    "event_title": row.title,
                    "reason": row.reason,
                    "refund_percent": quote.get("percent", 0),
                    "refund_kopecks": parse_rub(quote.get("amount", "0.00")),
                    "days_before": quote.get("days_before"),
                    "rule": quote.get("rule", ""),
                },
                now=now,
            )
            session.flush()
    return queued


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


@task(name="dispatch-outbox", retries=3, retry_delay_seconds=[5, 30, 120])
def dispatch_outbox(now: datetime) -> str:
    """Send what is due in the outbox (all claims, not just this one: one SMTP pass serves everyone)."""
    settings = get_settings()
    report: DispatchReport = asyncio.run(
        dispatch_emails(engine=get_engine(), smtp=SmtpSettings.from_settings(settings), now=now, mail_from=settings.mail_from,
                        enabled=settings.outbound_email_enabled)
    )
    get_run_logger().info("outbox: %s", report)
    return str(report)


@task(name="pay-refund", retries=3, retry_delay_seconds=[5, 30, 120], cache_policy=STEP_CACHE)
def pay_refund(claim_id: int, now: datetime) -> str:
    """Start the payout: card claims go to the acquirer now (idempotency key per payout attempt);
    cash and BSO claims wait for bank details or for accounting's 1C export."""
    from tasks.acquirer import YooKassaAcquirer
    from tasks.payouts import open_payouts, submit_card_refunds

    state = move_claim.fn(claim_id, Trigger.START_PAYOUT.value, now)
    if state == ClaimState.APPROVED.value:  # start_payout refused: the ticket was scanned meanwhile
        state = move_claim.fn(claim_id, Trigger.REFUSE_SCANNED.value, now)
    if state == ClaimState.PAYOUT_PENDING.value:
        engine = get_engine()
        open_payouts(engine, now=now)
        report = submit_card_refunds(engine, YooKassaAcquirer.from_settings(), now=now)
        get_run_logger().info("payouts: %s", report)
        state = read_claim(claim_id).state
    return state
