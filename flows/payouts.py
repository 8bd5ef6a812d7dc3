"""payout-run and payout-reconcile: pay approved refunds to cards through the acquirer, retry the ones
that got no answer, and poll the refunds it holds as pending (YooKassa's webhook announces only success).

A claim's own run (refund-claim) pays its own claim at once; these scheduled runs sweep everything
else: payouts a claim run did not reach, failed payouts whose retry time has come, pending refunds.

Every step may be retried: payouts open under a unique index, each refund carries its payout's
idempotency key, every record is guarded by the status it was read in, and `retry_payout` is
guarded by the claim's state.
"""
from __future__ import annotations

from datetime import UTC, datetime

from prefect import flow

from tasks.payout_steps import open_payouts, reconcile_pending, retry_due_payouts, submit_card_refunds


@flow(name="payout-run", log_prints=True)
def payout_run(now: datetime | None = None, db_url: str | None = None) -> dict:
    now = now or datetime.now(UTC)
    retried = retry_due_payouts(now, db_url)
    opened = open_payouts(now, db_url)
    refunds = submit_card_refunds(now, db_url)
    print(f"retried {len(retried)} failed payout(s); opened {opened} payout(s); card refunds: {refunds}")
    return {"retried": retried, "opened": opened, "card_refunds": refunds}


@flow(name="payout-reconcile", log_prints=True)
def payout_reconcile(now: datetime | None = None, db_url: str | None = None) -> str:
    now = now or datetime.now(UTC)
    report = reconcile_pending(now, db_url)
    print(f"pending refunds: {report}")
    return report
