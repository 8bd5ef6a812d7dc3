"""payout-run and payout-reconcile: pay approved refunds to cards through the acquirer, and poll the
refunds it holds as pending (YooKassa's webhook announces only success).

Every step may be retried: payouts open under a unique index, each refund carries its payout's
idempotency key, and every record is guarded by the status it was read in.
"""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from models.db import get_engine
from tasks import payouts
from tasks.acquirer import YooKassaAcquirer

# Side effects are never cached: a re-run must look at the database again.
_IO = dict(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=30)


@task(name="open-payouts", **_IO)
def open_payouts(now: datetime, db_url: str | None = None) -> int:
    return payouts.open_payouts(get_engine(db_url), now=now)


@task(name="submit-card-refunds", **_IO)
def submit_card_refunds(now: datetime, db_url: str | None = None) -> str:
    return str(payouts.submit_card_refunds(get_engine(db_url), YooKassaAcquirer.from_settings(), now=now))


@task(name="reconcile-pending-refunds", **_IO)
def reconcile_pending(now: datetime, db_url: str | None = None) -> str:
    return str(payouts.reconcile_pending(get_engine(db_url), YooKassaAcquirer.from_settings(), now=now))


@task(name="export-bank-transfers", cache_policy=NO_CACHE)  # marks before it writes: no blind retry
def export_bank_transfers(now: datetime, out: str, db_url: str | None = None) -> int:
    return payouts.export_bank_transfers(get_engine(db_url), out=Path(out), now=now)


@flow(name="payout-run", log_prints=True)
def payout_run(now: datetime | None = None, db_url: str | None = None) -> dict:
    now = now or datetime.now(timezone.utc)
    opened = open_payouts(now, db_url)
    refunds = submit_card_refunds(now, db_url)
    print(f"opened {opened} payout(s); card refunds: {refunds}")
    return {"opened": opened, "card_refunds": refunds}


@flow(name="payout-reconcile", log_prints=True)
def payout_reconcile(now: datetime | None = None, db_url: str | None = None) -> str:
    now = now or datetime.now(timezone.utc)
    report = reconcile_pending(now, db_url)
    print(f"pending refunds: {report}")
    return report


@flow(name="payout-export-1c", log_prints=True)
def payout_export_1c(out: str, now: datetime | None = None, db_url: str | None = None) -> int:
    now = now or datetime.now(timezone.utc)
    count = export_bank_transfers(now, out, db_url)
    print(f"exported {count} bank transfer(s) to {out}" if count else "no bank transfers to export")
    return count
