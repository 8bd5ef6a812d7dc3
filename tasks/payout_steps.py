"""The payout deployments' steps as Prefect tasks (flows/payouts.py puts them in order).

Side effects are never cached: a re-run must look at the database again. Every step may be retried:
payouts open under a unique index, each refund carries its payout's idempotency key.
"""
from __future__ import annotations

from datetime import datetime

from prefect import task
from prefect.cache_policies import NO_CACHE

from models.db import get_engine
from tasks import payouts
from tasks.acquirer import YooKassaAcquirer

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
