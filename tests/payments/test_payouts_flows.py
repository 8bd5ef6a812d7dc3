"""The payout flows read as named steps, and only the steps that are safe to repeat retry."""
from __future__ import annotations

from flows import payouts as payout_flows
from tasks import payout_steps


def test_flows_and_their_steps():
    assert payout_flows.payout_run.name == "payout-run"
    assert payout_flows.payout_reconcile.name == "payout-reconcile"
    assert not hasattr(payout_flows, "payout_export_1c")  # never deployed: the export is `vozvrat payouts export-1c`
    retried = {t.name: t.retries for t in (
        payout_steps.retry_due_payouts, payout_steps.open_payouts, payout_steps.submit_card_refunds, payout_steps.reconcile_pending,
    )}
    # Retrying (guarded by the claim's state), opening, refunding (same key) and polling are safe to repeat.
    assert retried == {"retry-due-payouts": 2, "open-payouts": 2, "submit-card-refunds": 2, "reconcile-pending-refunds": 2}
