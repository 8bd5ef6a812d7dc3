"""The stand-in answers chosen refunds with 5xx, 429 or a cancel, so the payout tests can see each path."""
from __future__ import annotations

import pytest

from tasks.acquirer import AcquirerError, RefundRequest


def refund(payment_id: str, key: str, kopecks: int = 10000) -> RefundRequest:
    return RefundRequest(payment_id=payment_id, amount_kopecks=kopecks, idempotency_key=key, description="Возврат")


def test_a_fault_for_a_chosen_payment_skips_the_others(standin, acquirer):
    chosen, other = standin.payment("100.00"), standin.payment("100.00")
    standin.faults("error_500", status=503, payment_id=chosen)

    assert acquirer.create_refund(refund(other, "k-other")).status == "succeeded"  # not this one's fault
    with pytest.raises(AcquirerError) as err:
        acquirer.create_refund(refund(chosen, "k-chosen"))
    assert (err.value.http_status, err.value.retryable) == (503, True)
    assert acquirer.create_refund(refund(chosen, "k-chosen")).status == "succeeded"  # same key, not applied before
    assert len(standin.ledger()["refunds"]) == 2


def test_429_is_retryable_and_never_makes_the_refund(standin, acquirer):
    payment = standin.payment("100.00")
    standin.faults("error_429", payment_id=payment, apply=True)
    with pytest.raises(AcquirerError) as err:
        acquirer.create_refund(refund(payment, "k"))
    assert (err.value.http_status, err.value.code, err.value.retryable) == (429, "too_many_requests", True)
    assert standin.ledger()["refunds"] == []


def test_a_5xx_status_outside_the_range_is_refused(standin):
    import httpx

    r = httpx.post(standin.base + "/_standin/faults", json={"kind": "error_500", "status": 404}, timeout=5)
    assert r.status_code == 400
