"""Serve every vozvrat deployment from this process (`make up`; no work pool needed).

The same deployments are declared in prefect.yaml for workers on several machines (`prefect deploy`).
"""
from __future__ import annotations

import os

from prefect import serve

from flows.outbox_dispatch import outbox_dispatch
from flows.payouts import payout_reconcile, payout_run
from flows.refund_claim import refund_claim
from flows.sla_watch import sla_watch
from models.settings import require_secret_key

SLA_WATCH_INTERVAL_S = int(os.environ.get("VOZVRAT_SLA_WATCH_INTERVAL_S", "900"))
OUTBOX_INTERVAL_S = int(os.environ.get("VOZVRAT_OUTBOX_INTERVAL_S", "60"))


def deployments() -> list:
    items = [
        refund_claim.to_deployment(name="refund-claim", tags=["vozvrat"], description="One buyer's claim, filing to payout."),
        sla_watch.to_deployment(name="sla-watch", interval=SLA_WATCH_INTERVAL_S, tags=["vozvrat", "sla"],
                                description="Escalate claims past their decision or payout deadline."),
        outbox_dispatch.to_deployment(name="outbox-dispatch", interval=OUTBOX_INTERVAL_S, tags=["vozvrat"],
                                      description="Send queued emails; retries after an SMTP outage."),
    ]
    items += [
        payout_run.to_deployment(name="payout-run", interval=300, tags=["vozvrat", "payouts"], description="Open and submit due payouts."),
        payout_reconcile.to_deployment(name="payout-reconcile", interval=600, tags=["vozvrat", "payouts"],
                                       description="Poll the acquirer for refunds it still holds as pending."),
    ]
    return items


def main() -> None:
    require_secret_key("flows.serve")
    serve(*deployments(), limit=int(os.environ.get("VOZVRAT_RUN_LIMIT", "4")))


if __name__ == "__main__":
    main()
