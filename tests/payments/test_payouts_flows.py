"""The payout flows read as named steps, and only the steps that are safe to repeat retry."""
from __future__ import annotations

from flows import payouts as payout_flows


def test_flows_and_their_steps():
    assert payout_flows.payout_run.name == "payout-run"
    assert payout_flows.payout_reconcile.name == "payout-reconcile"
    assert payout_flows.payout_export_1c.name == "payout-export-1c"
    retried = {t.name: t.retries for t in (
        payout_flows.open_payouts, payout_flows.submit_card_refunds, payout_flows.reconcile_pending, payout_flows.export_bank_transfers,
    )}
    # Opening, refunding (same key) and polling are safe to repeat; the export marks before it writes,
    # so a blind retry would only make an empty second batch: it is rerun by a person with --batch.
    assert retried == {"open-payouts": 2, "submit-card-refunds": 2, "reconcile-pending-refunds": 2, "export-bank-transfers": 0}
