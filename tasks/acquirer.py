"""The acquirer port and its YooKassa adapter (DESIGN "Payment channels": a card purchase is refunded
to the same card through YooKassa's refunds API, with an Idempotence-Key derived from the claim).

Why the adapter does not call `yookassa.Configuration.configure()`: the SDK keeps its configuration in
class attributes of `Configuration` (process-global), and every `Refund.create` builds a fresh
`ApiClient` that reads them. Two adapters (two shops, or a test next to production code) in one
process, or two threads, would then race on the credentials. Instead each `YooKassaAcquirer` owns an
`ApiClient` subclass with its own URL, credentials and timeout, and a `Refund` subclass bound to that
client, so the SDK's own request/response classes (RefundRequest validation, RefundResponse parsing,
the Idempotence-Key header) are used unchanged, without touching global state.

The subclass also fixes three SDK behaviours that matter for money:
- the SDK sends requests without any HTTP timeout (`Configuration.timeout` is a retry back-off, not a
  socket timeout): a hung acquirer would hang the worker forever. We pass `timeout_seconds`;
- a network error (connection refused, timeout) surfaces from the SDK as
  `AttributeError: 'NoneType' object has no attribute 'status_code'`; here it is a retryable
  `AcquirerError`;
- the SDK opens a new HTTP connection for every request; here each thread keeps one keep-alive
  session per adapter, so a mass cancellation's refunds (`tasks/payouts.submit_card_refunds_concurrently`,
  VOZVRAT_ACQUIRER_CONCURRENCY threads) do not pay a TCP handshake each;
- the SDK logs request and response bodies (which carry card details in `payment_method` /
  `refund_authorization_details`) to `Configuration.logger` when one is set; this client never logs,
  and only the fields of `RefundResult` leave this module.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal, Protocol

import requests
from requests.adapters import HTTPAdapter
from yookassa import Refund
from yookassa.client import ApiClient
from yookassa.domain.common import RequestObject
from yookassa.domain.exceptions import ApiError

from states.money import format_rub

__all__ = [
    "AcquirerError",
    "AcquirerPort",
    "RefundRequest",
    "RefundResult",
    "YooKassaAcquirer",
    "refund_receipt",
]

RETRY_LATER_REASONS = frozenset({"insufficient_funds", "rejected_by_timeout"})


@dataclass(frozen=True)
class RefundRequest:
    payment_id: str
    amount_kopecks: int
    idempotency_key: str
    description: str
    receipt: dict | None = None

    def __post_init__(self) -> None:
        # A refund of nothing or of a negative amount is a bug upstream, never a request to send.
        if isinstance(self.amount_kopecks, bool) or not isinstance(self.amount_kopecks, int) or self.amount_kopecks <= 0:
            raise ValueError(f"a refund needs a positive amount in kopecks, got {self.amount_kopecks!r}")


@dataclass(frozen=True)
class RefundResult:
    refund_id: str
    status: Literal["pending", "succeeded", "canceled"]
    cancellation_party: str | None = None
    cancellation_reason: str | None = None
    payment_id: str | None = None
    amount_kopecks: int | None = None

    @property
    def retry_later(self) -> bool:
        """Canceled for a passing reason (the shop's balance today, a timeout at the initiator):
        not a failed claim; try again later WITH A NEW idempotency key (the old one replays this
        canceled answer)."""
        return self.status == "canceled" and self.cancellation_reason in RETRY_LATER_REASONS

    @property
    def failed(self) -> bool:
        """Canceled for good (e.g. rejected_by_payee): the claim needs another way to pay."""
        return self.status == "canceled" and not self.retry_later


class AcquirerError(Exception):
    """The acquirer did not give an answer about the refund.

    `retryable` True: network error, timeout, 5xx, 429, 202 - the outcome is unknown, repeat the same
    call with the SAME idempotency key. False: the request itself is wrong (400/401/403/404);
    `parameter` names the field YooKassa objected to (payment_id, amount, Idempotence-Key...).
    """

    def __init__(
        self, message: str, *, retryable: bool, code: str | None = None, http_status: int | None = None,
        parameter: str | None = None,
    ):
        super().__init__(message)
        self.retryable = retryable
        self.code = code
        self.http_status = http_status
        self.parameter = parameter

    @property
    def card_refused(self) -> bool:
        """The acquirer will never refund this payment to the card (payment unknown or malformed): a
        permanent failure, the refund needs another channel.

        Not "more than is left of the payment": that says the money already went back some other way
        (a refund made outside vozvrat), and paying it again by bank transfer would pay twice. That
        claim waits in payout_failed for a person."""
        if self.retryable or self.http_status in (401, 403):
            return False
        return self.parameter == "payment_id" or self.code == "not_found"


class AcquirerPort(Protocol):
    def create_refund(self, req: RefundRequest) -> RefundResult: ...

    def get_refund(self, refund_id: str) -> RefundResult: ...


def _kopecks(value: Any) -> int:
    return int((Decimal(str(value)) * 100).to_integral_value())


def refund_receipt(email: str, amount_kopecks: int, description: str, *, vat_code: int = 1) -> dict:
    """54-FZ refund receipt for a (partial) refund: one service line for the refunded amount.

    vat_code 1 = "без НДС" (the payment purpose says «НДС не облагается»); payment_mode full_payment
    because the ticket was paid in full before the event.
    """
    if not email or "@" not in email:
        raise ValueError("a 54-FZ receipt needs the buyer's email")
    return {
        "customer": {"email": email},
        "items": [
            {
                "description": description[:128],  # the fiscal line limit
                "quantity": "1.00",
                "amount": {"value": format_rub(amount_kopecks), "currency": "RUB"},
                "vat_code": vat_code,
                "payment_subject": "service",
                "payment_mode": "full_payment",
            }
        ],
    }


class _TimeoutAdapter(HTTPAdapter):
    def __init__(self, timeout: float):
        super().__init__(max_retries=0)  # retries are the caller's, with the same idempotency key
        self._timeout = timeout

    def send(self, request, **kwargs):  # type: ignore[override]
        kwargs["timeout"] = self._timeout
        return super().send(request, **kwargs)


class _ScopedApiClient(ApiClient):
    """The SDK client with per-instance settings and no logging (see the module docstring)."""

    def __init__(self, *, api_url: str, shop_id: str, secret_key: str, timeout_seconds: float,
                 sessions: threading.local | None = None):
        # Deliberately not calling ApiClient.__init__: it reads the global Configuration.
        self._sessions = sessions if sessions is not None else threading.local()
        from yookassa.domain.common import UserAgent

        self.endpoint = api_url.rstrip("/")
        self.shop_id = shop_id
        self.shop_password = secret_key
        self.auth_token = None
        self.timeout_seconds = timeout_seconds
        self.user_agent = UserAgent()
        self.configuration = type("_Cfg", (), {"verify": None})()

    def get_session(self) -> requests.Session:
        session = requests.Session()
        adapter = _TimeoutAdapter(self.timeout_seconds)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        return session

    def _session(self) -> requests.Session:
        """This thread's keep-alive session (a requests.Session is not shared between threads)."""
        session = getattr(self._sessions, "session", None)
        if session is None:
            session = self._sessions.session = self.get_session()
        return session

    def execute(self, body, method, path, query_params, request_headers):
        return self._session().request(
            method, self.endpoint + path, params=query_params, headers=request_headers, json=body,
            verify=self.configuration.verify if self.configuration.verify is not None else True,
        )

    def request(self, method="", path="", query_params=None, headers=None, body=None):
        if isinstance(body, RequestObject):
            body.validate()
            body = dict(body)
        request_headers = self.prepare_request_headers(headers)
        try:
            raw = self.execute(body, method, path, query_params, request_headers)
        except requests.RequestException as exc:
            raise AcquirerError(
                f"acquirer unreachable: {type(exc).__name__}", retryable=True, code="network"
            ) from None  # the exception text can quote the request; keep it out
        if raw.status_code != 200:
            _raise_for_status(raw)
        return raw.json()


def _raise_for_status(raw: requests.Response) -> None:
    try:
        error = raw.json()
    except ValueError:
        error = {}
    code = error.get("code") if isinstance(error, dict) else None
    description = error.get("description") if isinstance(error, dict) else None
    parameter = error.get("parameter") if isinstance(error, dict) else None
    retryable = raw.status_code in (202, 429) or raw.status_code >= 500
    message = f"acquirer answered HTTP {raw.status_code}"
    if code:
        message += f" {code}"
    if description:
        message += f": {description}"
    if parameter:
        message += f" (parameter {parameter})"
    raise AcquirerError(message, retryable=retryable, code=code, http_status=raw.status_code, parameter=parameter)


class YooKassaAcquirer:
    """AcquirerPort on the official `yookassa` SDK (Refund.create / Refund.find_one)."""

    def __init__(self, *, api_url: str, shop_id: str, secret_key: str, timeout_seconds: float = 30.0):
        sessions = threading.local()

        def client() -> _ScopedApiClient:
            return _ScopedApiClient(
                api_url=api_url, shop_id=shop_id, secret_key=secret_key, timeout_seconds=timeout_seconds, sessions=sessions
            )

        class _BoundRefund(Refund):
            def __init__(self) -> None:  # Refund.__init__ would build a global-config ApiClient
                self.client = client()

        self._refund_api = _BoundRefund
        self.api_url = api_url

    @classmethod
    def from_settings(cls, settings=None, *, timeout_seconds: float = 30.0) -> YooKassaAcquirer:
        if settings is None:
            from models.settings import get_settings

            settings = get_settings()
        return cls(
            api_url=settings.acquirer_api_url,
            shop_id=settings.acquirer_shop_id,
            secret_key=settings.acquirer_secret_key.get_secret_value(),
            timeout_seconds=timeout_seconds,
        )

    def create_refund(self, req: RefundRequest) -> RefundResult:
        """POST /refunds with OUR idempotency key (the SDK would invent a random one if given none)."""
        if not req.idempotency_key:
            raise ValueError("a refund needs an idempotency key derived from the claim")
        if not isinstance(req.payment_id, str) or len(req.payment_id) != 36:
            # The SDK would raise a bare ValueError here; YooKassa's ids are 36 characters. Refused
            # before anything is sent, as the acquirer would refuse it.
            raise AcquirerError(
                f"refused before sending: {str(req.payment_id)[:40]!r} is not a YooKassa payment id "
                "(36 characters) (parameter payment_id)",
                retryable=False, code="invalid_request", parameter="payment_id",
            )
        params: dict[str, Any] = {
            "payment_id": req.payment_id,
            "amount": {"value": format_rub(req.amount_kopecks), "currency": "RUB"},
            "description": req.description,
        }
        if req.receipt is not None:
            params["receipt"] = req.receipt
        try:
            response = self._refund_api.create(params, req.idempotency_key)
        except ApiError as exc:  # not expected with our client, kept as a safety net
            raise AcquirerError(f"acquirer error: {exc.content}", retryable=False) from None
        return _result(response)

    def get_refund(self, refund_id: str) -> RefundResult:
        """GET /refunds/{id}: the current status of a refund (for pending ones)."""
        return _result(self._refund_api.find_one(refund_id))


def _result(response: Any) -> RefundResult:
    details = response.cancellation_details
    return RefundResult(
        refund_id=response.id,
        status=response.status,
        cancellation_party=getattr(details, "party", None) if details else None,
        cancellation_reason=getattr(details, "reason", None) if details else None,
        payment_id=response.payment_id,
        amount_kopecks=_kopecks(response.amount.value) if response.amount else None,
    )
