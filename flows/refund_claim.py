"""refund-claim: one flow run per buyer's claim, from filing to payout.

Created by the run starter from the `refund-claim` deployment (tasks/run_actions.py) with the claim
id as idempotency key, named after the claim number and tagged with event, organizer and reason.
Where a person must act (documents, the organizer's decision, the buyer's bank details), the run
suspends (no process is held) under a key that names what it waits for; the run starter resumes it
once the step is recorded, or the Prefect UI resumes it with a ClaimInput. A resumed run replays from
the top; every step is idempotent (outbox dedup keys, state-guarded transitions), so a replay that
repeats one changes nothing. Each step is stamped with the clock at that step, not the run's start.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime

from prefect import flow, get_run_logger
from prefect.states import Completed, State

from models.claim_views import ClaimView, read_claim
from states.lifecycle import ClaimState, Trigger
from tasks.claim_card import PublishedCard, publish_claim_card, suspend_claim_run
from tasks.claims import acknowledge_claim, apply_input, check_claim, dispatch_outbox, move_claim, pay_refund
from tasks.intake import ClaimInput
from tasks.run_actions import RUN_WAIT_STATES, pause_key

WAITING_FOR = {
    ClaimState.AWAITING_DOCUMENTS.value: "the buyer's documents",
    ClaimState.AWAITING_ORGANIZER.value: "the organizer's decision",
    ClaimState.ESCALATED.value: "the supervisor's decision (decision deadline passed)",
    ClaimState.NEEDS_BANK_DETAILS.value: "the buyer's bank details",
}


def step_clock(now: datetime | None) -> Callable[[], datetime]:
    """The time of each step as it happens (under load a run starts a minute or more after it was
    scheduled). A run given `now` (tests, a replay of a past day) keeps that moment throughout."""
    if now is not None:
        fixed = datetime.fromtimestamp(now.timestamp(), tz=UTC)  # a pendulum DateTime may drop its zone in arithmetic
        return lambda: fixed
    return lambda: datetime.now(UTC)


def wait_for_a_person(claim: ClaimView, waits: Counter, card: PublishedCard) -> ClaimInput:
    """Suspend until the step is recorded; the key names the claim state and version the run read,
    so the starter can tell a run that waits for the right thing from one left behind. The state's
    name and message say whom it waits on and until when (the card's label)."""
    waits[claim.version] += 1
    key = pause_key(claim.id, claim.state, claim.version, waits[claim.version])
    get_run_logger().info("claim %s waits for %s (%s)", claim.number, WAITING_FOR[claim.state], key)
    return suspend_claim_run(ClaimInput, key=key, card=card)


@flow(name="refund-claim", persist_result=True, log_prints=True, retries=3, retry_delay_seconds=60)
def refund_claim(claim_id: int, now: datetime | None = None) -> State:
    clock = step_clock(now)
    claim = check_claim(claim_id)
    acknowledge_claim(claim_id, clock())
    if read_claim(claim_id).state == ClaimState.FILED.value:
        move_claim(claim_id, Trigger.ASSESS.value, clock())
    dispatch_outbox(clock(), claim_id)

    waits: Counter = Counter()
    while True:
        # Read, not remembered: a step recorded before this run reached its wait must not be missed.
        current = read_claim(claim_id)
        if current.state in RUN_WAIT_STATES:
            step = wait_for_a_person(current, waits, publish_claim_card(claim_id, clock()))
            apply_input(claim_id, step.model_dump(mode="json"), current.version, step.at or clock())
            dispatch_outbox(clock(), claim_id)
            continue
        # payout_pending here means the run was resumed by the buyer's bank details: open the transfer now.
        if current.state in (ClaimState.APPROVED.value, ClaimState.PAYOUT_PENDING.value):
            paid = pay_refund(claim_id, clock())
            dispatch_outbox(clock(), claim_id)
            if paid == ClaimState.NEEDS_BANK_DETAILS.value:
                continue
        break

    card = publish_claim_card(claim_id, clock())
    get_run_logger().info("claim %s ends this run as %s", claim["number"], card.state)
    # The run's result is the claim's state; its final state's name says who holds the claim now.
    return Completed(data=card.state, name=card.final_name, message=card.final_message)
