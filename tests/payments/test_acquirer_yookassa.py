"""tasks.acquirer.YooKassaAcquirer through the real yookassa SDK against the stand-in over HTTP."""
from __future__ import annotations

import httpx
import pytest
import yookassa

from standins.yookassa import YooKassaStandIn
from tasks.acquirer import (
    AcquirerError,
    RefundRequest,
    YooKassaAcquirer,
    refund_receipt,
)
from tasks.payouts import payout_key

from .conftest import SECRET, SHOP_ID


def request(payment_id: str, kopecks: int = 175000, key: str | None = None, **kw) -> RefundRequest:
    return RefundRequest(
        payment_id=payment_id,
        amount_kopecks=kopecks,
        idempotency_key=payout_key(1, 1) if key is None else key,
        description=kw.pop("description", "Возврат по заявке № CLM-1"),
        receipt=kw.pop("receipt", None),
    )


def test_create_refund(standin, acquirer):
    payment = standin.payment("3500.00")
    result = acquirer.create_refund(
        request(payment, receipt=refund_receipt("buyer@example.ru", 175000, "Возврат билета"))
    )
    assert result.status == "succeeded"
    assert result.payment_id == payment
    assert result.amount_kopecks == 175000
    assert not result.retry_later and not result.failed
    [entry] = standin.ledger()["refunds"]
    assert entry["amount"] == {"value": "1750.00", "currency": "RUB"}
    assert entry["id"] == result.refund_id


def test_adapter_leaves_the_sdk_global_configuration_alone(standin, acquirer):
    before = (yookassa.Configuration.account_id, yookassa.Configuration.api_url)
    acquirer.create_refund(request(standin.payment("100.00"), 10000))
    assert (yookassa.Configuration.account_id, yookassa.Configuration.api_url) == before


def test_replay_with_same_key_returns_same_refund_and_pays_once(standin, acquirer):
    payment = standin.payment("3500.00")
    first = acquirer.create_refund(request(payment))
    second = acquirer.create_refund(request(payment))
    assert second == first
    assert len(standin.ledger()["refunds"]) == 1


def test_new_key_is_a_new_refund_up_to_the_payment_amount(standin, acquirer):
    payment = standin.payment("3500.00")
    acquirer.create_refund(request(payment, key=payout_key(1, 1)))
    acquirer.create_refund(request(payment, key=payout_key(1, 2)))
    with pytest.raises(AcquirerError) as info:
        acquirer.create_refund(request(payment, 1, key=payout_key(1, 3)))
    assert (info.value.http_status, info.value.code, info.value.retryable) == (400, "invalid_request", False)
    assert "amount" in str(info.value)
    assert len(standin.ledger()["refunds"]) == 2


def test_same_key_with_other_body_is_refused(standin, acquirer):
    payment = standin.payment("3500.00")
    acquirer.create_refund(request(payment, 100000))
    with pytest.raises(AcquirerError, match="Idempotence-Key") as info:
        acquirer.create_refund(request(payment, 50000))
    assert info.value.http_status == 400 and not info.value.retryable
    assert len(standin.ledger()["refunds"]) == 1


def test_wrong_credentials(standin):
    wrong = YooKassaAcquirer(api_url=standin.server.api_url, shop_id=SHOP_ID, secret_key="nope")
    with pytest.raises(AcquirerError) as info:
        wrong.create_refund(request(standin.payment("100.00"), 10000))
    assert (info.value.http_status, info.value.code, info.value.retryable) == (401, "invalid_credentials", False)
    assert standin.ledger()["refunds"] == []


def test_missing_idempotency_key_is_400_in_youkassa_error_shape(standin):
    payment = standin.payment("100.00")
    response = httpx.post(
        standin.server.api_url + "/refunds",
        json={"payment_id": payment, "amount": {"value": "1.00", "currency": "RUB"}},
        auth=(SHOP_ID, SECRET),
    )
    assert response.status_code == 400
    body = response.json()
    assert body["type"] == "error" and body["code"] == "invalid_request"
    assert body["parameter"] == "Idempotence-Key" and body["id"]


def test_adapter_refuses_to_send_without_our_key(acquirer):
    # The SDK would silently invent a random uuid4 key; a retry would then pay twice.
    with pytest.raises(ValueError, match="idempotency key"):
        acquirer.create_refund(request("2d4c8b7d-000f-5000-9000-1a1d4c2b8a9e", key=""))


def test_unknown_payment(standin, acquirer):
    with pytest.raises(AcquirerError) as info:
        acquirer.create_refund(request("2d4c8b7d-000f-5000-9000-1a1d4c2b8a9e"))
    assert info.value.http_status == 400 and "payment_id" in str(info.value)


def test_500_then_success_on_retry_with_same_key(standin, acquirer):
    payment = standin.payment("3500.00")
    standin.faults("error_500")
    with pytest.raises(AcquirerError) as info:
        acquirer.create_refund(request(payment))
    assert info.value.retryable and info.value.http_status == 500
    result = acquirer.create_refund(request(payment))
    assert result.status == "succeeded"
    assert len(standin.ledger()["refunds"]) == 1


def test_lost_answer_then_retry_with_same_key_does_not_pay_twice(standin, ledger_path):
    # The refund is made but the answer never arrives (timeout): the retry must replay, not pay again.
    quick = YooKassaAcquirer(api_url=standin.server.api_url, shop_id=SHOP_ID, secret_key=SECRET, timeout_seconds=0.3)
    payment = standin.payment("3500.00")
    standin.faults("timeout", delay=30, apply=True)
    with pytest.raises(AcquirerError) as info:
        quick.create_refund(request(payment))
    assert info.value.retryable and info.value.code == "network"
    assert len(standin.ledger()["refunds"]) == 1
    result = quick.create_refund(request(payment))
    assert result.status == "succeeded"
    assert [r["id"] for r in standin.ledger()["refunds"]] == [result.refund_id]


def test_unreachable_acquirer_is_retryable():
    nowhere = YooKassaAcquirer(api_url="http://127.0.0.1:9/v3", shop_id=SHOP_ID, secret_key=SECRET, timeout_seconds=1)
    with pytest.raises(AcquirerError) as info:
        nowhere.get_refund("2d4c8b7d-000f-5000-9000-1a1d4c2b8a9e")
    assert info.value.retryable


def test_insufficient_funds_means_retry_later_with_a_new_key(standin, acquirer):
    payment = standin.payment("3500.00")
    standin.faults("cancel", reason="insufficient_funds")
    result = acquirer.create_refund(request(payment, key=payout_key(1, 1)))
    assert result.status == "canceled"
    assert (result.cancellation_party, result.cancellation_reason) == ("yoo_money", "insufficient_funds")
    assert result.retry_later and not result.failed
    # The same key replays the canceled answer; the next attempt's key pays.
    assert acquirer.create_refund(request(payment, key=payout_key(1, 1))) == result
    again = acquirer.create_refund(request(payment, key=payout_key(1, 2)))
    assert again.status == "succeeded"


def test_rejected_by_payee_is_a_failure_not_a_retry(standin, acquirer):
    standin.faults("cancel", reason="rejected_by_payee")
    result = acquirer.create_refund(request(standin.payment("100.00"), 10000))
    assert result.failed and not result.retry_later


def test_pending_then_settle_then_find_one_succeeded(standin, acquirer):
    payment = standin.payment("3500.00")
    standin.faults("pending")
    created = acquirer.create_refund(request(payment))
    assert created.status == "pending"
    assert acquirer.get_refund(created.refund_id).status == "pending"
    [settled] = standin.settle(refund_id=created.refund_id)
    assert settled["status"] == "succeeded"
    assert acquirer.get_refund(created.refund_id).status == "succeeded"


def test_pending_refund_counts_against_the_payment(standin, acquirer):
    payment = standin.payment("1750.00")
    standin.faults("pending")
    acquirer.create_refund(request(payment, key=payout_key(1, 1)))
    with pytest.raises(AcquirerError):
        acquirer.create_refund(request(payment, key=payout_key(1, 2)))


def test_get_unknown_refund_is_not_found(acquirer):
    with pytest.raises(AcquirerError) as info:
        acquirer.get_refund("2d4c8b7d-000f-5000-9000-1a1d4c2b8a9e")
    assert info.value.http_status == 404 and not info.value.retryable


def test_ledger_survives_restart_and_replay_still_pays_once(ledger_path):
    first = YooKassaStandIn(shop_id=SHOP_ID, secret_key=SECRET, ledger_path=ledger_path).start()
    try:
        payment = httpx.post(
            f"http://127.0.0.1:{first.port}/_standin/payments",
            json={"amount": {"value": "3500.00", "currency": "RUB"}},
        ).json()["id"]
        acq = YooKassaAcquirer(api_url=first.api_url, shop_id=SHOP_ID, secret_key=SECRET)
        made = acq.create_refund(request(payment))
    finally:
        first.stop()
    second = YooKassaStandIn(shop_id=SHOP_ID, secret_key=SECRET, ledger_path=ledger_path).start()
    try:
        acq = YooKassaAcquirer(api_url=second.api_url, shop_id=SHOP_ID, secret_key=SECRET)
        assert acq.create_refund(request(payment)) == made
        assert acq.get_refund(made.refund_id).status == "succeeded"
        refunds = httpx.get(f"http://127.0.0.1:{second.port}/_standin/ledger").json()["refunds"]
        assert [r["id"] for r in refunds] == [made.refund_id]
    finally:
        second.stop()


def test_refund_receipt_shape():
    receipt = refund_receipt("buyer@example.ru", 175050, "Возврат стоимости билета")
    assert receipt["customer"] == {"email": "buyer@example.ru"}
    [item] = receipt["items"]
    assert item["amount"] == {"value": "1750.50", "currency": "RUB"}
    assert (item["payment_subject"], item["payment_mode"], item["vat_code"]) == ("service", "full_payment", 1)


def test_refund_receipt_needs_an_email():
    with pytest.raises(ValueError):
        refund_receipt("", 100, "x")


