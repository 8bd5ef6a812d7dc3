"""The acquirer stand-in as the embedded stack starts it (`make up`, `make demo`, the flow tests)."""
from __future__ import annotations

import httpx
import pytest

from cli.stack import Stack, free_port
from models.settings import get_settings
from tasks.acquirer import AcquirerError, RefundRequest, YooKassaAcquirer
from tasks.payouts import payout_key

PAYMENT = "2d1f5a0e-000f-5000-9000-000000003000"


@pytest.fixture()
def stack(tmp_path):
    s = Stack(root=tmp_path, acquirer_port=free_port())
    s.start_acquirer()
    yield s
    s.stop()


def refund(acquirer: YooKassaAcquirer, payment_id: str, attempt: int):
    return acquirer.create_refund(RefundRequest(
        payment_id=payment_id, amount_kopecks=300000, idempotency_key=payout_key(1, attempt),
        description="Возврат по заявке № VZ-0000001-1", receipt=None,
    ))


def test_the_stacks_acquirer_refunds_a_payment_once_up_to_its_amount(stack):
    # Used to go wrong: the stack's stand-in made up a 1,000,000.00 payment for any id, so one 3000.00
    # ticket was refunded 3000.00 three times.
    settings = get_settings()
    acquirer = YooKassaAcquirer(api_url=stack.acquirer_api_url, shop_id=settings.acquirer_shop_id,
                                secret_key=settings.acquirer_secret_key.get_secret_value(), timeout_seconds=5)
    stack.register_payment(PAYMENT, 300000)
    assert refund(acquirer, PAYMENT, 1).status == "succeeded"
    with pytest.raises(AcquirerError) as over:
        refund(acquirer, PAYMENT, 2)
    assert (over.value.http_status, over.value.code, over.value.retryable) == (400, "invalid_request", False)
    with pytest.raises(AcquirerError) as unknown:
        refund(acquirer, "2d1f5a0e-000f-5000-9000-0000000fffff", 1)
    assert (unknown.value.http_status, unknown.value.code) == (400, "invalid_request")


def test_a_payment_registered_again_keeps_its_amount(stack):
    stack.register_payment(PAYMENT, 300000)
    stack.register_payment(PAYMENT, 300000)  # the same sale told twice: no change
    with pytest.raises(httpx.HTTPStatusError):
        stack.register_payment(PAYMENT, 900000)
    ledger = httpx.get(f"http://127.0.0.1:{stack.acquirer_port}/_standin/ledger", timeout=5).json()
    assert [p["amount"]["value"] for p in ledger["payments"]] == ["3000.00"]
