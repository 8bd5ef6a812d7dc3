"""refund-claim: one flow run per buyer's claim, from filing to payout.

Created from the `refund-claim` deployment with the claim id as idempotency key, named after the
claim number and tagged with event, organizer and reason (tasks/intake.py). Where a person must
decide, the run suspends (no process is held) until the decision endpoint or the Prefect UI resumes
it with a ClaimInput. A resumed run replays from the top; finished steps come back from the cache.
"""
from __future__ import annotations

from datetime import datetime, timezone

from prefect import flow, get_run_logger
from prefect.flow_runs import suspend_flow_run
from prefect.runtime import flow_run

from states.lifecycle import ClaimState, Trigger
from tasks.claims import WAITING_STATES, ClaimInput, acknowledge_claim, apply_input, check_claim, dispatch_outbox, move_claim, pay_refund, read_claim

# A claim can wait for documents, then for the organizer, be extended, escalated...: each wait is
# one suspend with its own key, so a replay finds the same waits in the same order.
MAX_WAITS = 12


def _run_started_at(now: datetime | None) -> datetime:
    # Stable across replays of this run, so cached steps keep their cache keys. Prefect hands back a
    # pendulum DateTime, whose arithmetic can drop the zone: make it a plain aware datetime.
    moment = now or flow_run.get_scheduled_start_time() or datetime.now(timezone.utc)
    return datetime.fromtimestamp(moment.timestamp(), tz=timezone.utc)


# A failed run (an error past its tasks' own retries) is retried: it replays from the top, finished
# steps come back from the cache. A crashed run (worker killed) is restarted by ops from the UI.
@flow(name="refund-claim", persist_result=True, log_prints=True, retries=3, retry_delay_seconds=60)
def refund_claim(claim_id: int, now: datetime | None = None) -> str:
    started = _run_started_at(now)
    claim = check_claim(claim_id)
    acknowledge_claim(claim_id, started)
    state = move_claim(claim_id, Trigger.ASSESS.value, started) if claim["state"] == ClaimState.FILED.value else claim["state"]
    dispatch_outbox(started, claim_id)

    waits = 0
    while waits < MAX_WAITS:
        # Read, not remembered: a decision recorded before this run reached its wait must not be missed.
        state = read_claim(claim_id).state
        if state not in WAITING_STATES:
            break
        waits += 1
        decision = suspend_flow_run(wait_for_input=ClaimInput, key=f"claim-{claim_id}-wait-{waits}")
        resumed_at = decision.at or datetime.now(timezone.utc)
        state = apply_input(claim_id, decision.model_dump(mode="json"), waits, resumed_at)
        dispatch_outbox(resumed_at, claim_id)
        started = resumed_at

    if state == ClaimState.APPROVED.value:
        pay_at = started if now is not None else datetime.now(timezone.utc)
        state = pay_refund(claim_id, pay_at)
        dispatch_outbox(pay_at, claim_id)
    get_run_logger().info("claim %s ends this run as %s", claim["number"], state)
    return state
