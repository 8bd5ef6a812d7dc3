"""payout-run and payout-reconcile: pay approved refunds to cards through the acquirer, retry the ones
that got no answer, and poll the refunds it holds as pending (YooKassa's webhook announces only success).

A claim's own run (refund-claim) pays its own claim at once; these scheduled runs sweep everything
else: payouts a claim run did not reach, failed payouts whose retry time has come, pending refunds.

Every step may be retried: payouts open under a unique index, each refund carries its payout's
idempotency key, every record is guarded by the status it was read in, and `retry_payout` is
guarded by the claim's state.
"""
from __future__ import annotations

from datetime import datetime, timezone

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from models.db import get_engine
from tasks import payouts
from tasks.acquirer import YooKassaAcquirer

# Side effects are never cached: a re-run must look at the database again.
_IO = dict(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=30)


@task(name="retry-due-payouts", **_IO)
def retry_due_payouts(now: datetime, db_url: str | None = None) -> list[str]:
    return payouts.retry_due_payouts(get_engine(db_url), now=now)


@task(name="open-payouts", **_IO)
def open_payouts(now: datetime, db_url: str | None = None) -> int:
    return payouts.open_payouts(get_engine(db_url), now=now)


@task(name="submit-card-refunds", **_IO)
def submit_card_refunds(now: datetime, db_url: str | None = None) -> str:
    report = payouts.submit_card_refunds(get_engine(db_url), YooKassaAcquirer.from_settings(), now=now)
    for line in report.failures + report.anomalies:
        print(line)
    return str(report)


@task(name="reconcile-pending-refunds", **_IO)
def reconcile_pending(now: datetime, db_url: str | None = None) -> str:
    report = payouts.reconcile_pending(get_engine(db_url), YooKassaAcquirer.from_settings(), now=now)
    for line in report.failures + report.anomalies:
        print(line)
    return str(report)


@flow(name="payout-run", log_prints=True)
def payout_run(now: datetime | None = None, db_url: str | None = None) -> dict:
    now = now or datetime.now(timezone.utc)
    retried = retry_due_payouts(now, db_url)
    opened = open_payouts(now, db_url)
    refunds = submit_card_refunds(now, db_url)
    print(f"retried {len(retried)} failed payout(s); opened {opened} payout(s); card refunds: {refunds}")
    return {"retried": retried, "opened": opened, "card_refunds": refunds}


@flow(name="payout-reconcile", log_prints=True)
def payout_reconcile(now: datetime | None = None, db_url: str | None = None) -> str:
    now = now or datetime.now(timezone.utc)
    report = reconcile_pending(now, db_url)
    print(f"pending refunds: {report}")
    return report
