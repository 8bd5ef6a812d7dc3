"""Side effects of one claim's flow: read it, acknowledge it, move it, send its mail.

Each function is a Prefect task with a cache key derived from the claim and the step, so a flow run
that replays after a suspend/resume gets the earlier results back instead of acting twice. The
steps are idempotent on their own as well (outbox dedup keys, state checks), so a cache miss is
harmless too.
"""
from __future__ import annotations

import asyncio
from dataclasses import asdict
from datetime import datetime
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import INPUTS, RUN_ID, TASK_SOURCE
from prefect.runtime import flow_run
from sqlalchemy import update

from models.claim_store import ConflictError, InvalidTrigger, TransitionRefused, apply_trigger, claim_t
from models.claim_views import read_claim
from models.db import get_engine
from models.settings import get_settings
from states.lifecycle import ClaimState, Trigger, has_step
from tasks.acquirer import YooKassaAcquirer
from tasks.intake import DECISION_TRIGGERS, ClaimInput, IntakeError, decide, queue_acknowledgement
from tasks.outbox import DispatchReport, dispatch_emails
from tasks.payouts import open_payouts, submit_card_refunds
from tasks.smtp import SmtpSettings

# Replays of one flow run reuse a step's result; another claim or another run does not.
STEP_CACHE = INPUTS + TASK_SOURCE + RUN_ID

WAITING_STATES = frozenset({ClaimState.AWAITING_DOCUMENTS.value, ClaimState.AWAITING_ORGANIZER.value, ClaimState.ESCALATED.value})


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
                        enabled=settings.outbound_email_enabled, claim_id=claim_id, rate_per_s=settings.mail_rate_per_s,
                        concurrency=settings.mail_connections if claim_id is None else 1)
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
