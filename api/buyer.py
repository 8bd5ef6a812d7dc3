"""Buyers' endpoints: sign in with the order's email code, then file, document, pay out and withdraw claims.

Every claim endpoint needs `api.auth.Buyerish`: the operator's service key (the operator's site has
signed the buyer in and vouches for the order), or a buyer token (`POST /buyer/session` sends a code to
the order's email, `POST /buyer/session/verify` trades it for a `vzb_` token) of THAT order. A claim or
ticket of another order answers 404, like a missing one. Buyers' URLs carry claim numbers, never
database ids. Audit rows record the principal (`buyer:order:<number>`, `service:<key name>`).
"""
from __future__ import annotations

from datetime import date, datetime
from typing import Literal

from fastapi import APIRouter, BackgroundTasks, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from api.auth import Buyerish
from api.buyer_common import (
    DOCUMENT_BODY,
    FORBIDDEN,
    ORDER_NUMBER,
    TOO_LARGE,
    BankDetails,
    BankDetailsPublic,
    ClaimCreate,
    ClaimNumber,
    ClaimPublic,
    Withdrawal,
    ask_for_code,
    attach_document,
    buyer_claim,
    give_bank_details,
    not_found,
    read_document,
)
from api.buyer_pages import router as pages_router
from api.clock import Now
from api.errors import ErrorResponse, errors
from models.db import get_engine
from tasks.buyer_auth import MESSAGE_TOO_MANY_RU, TooManyCodeRequests, send_code, verify_code
from tasks.buyer_claims import check_ticket, claim_status
from tasks.claims import send_claim_mail
from tasks.intake import NotYourClaim, file_buyer_claim, withdraw_claim

router = APIRouter()
router.include_router(pages_router)

# --- sign-in ---------------------------------------------------------------------------------------

class SessionRequest(BaseModel):
    model_config = ConfigDict(str_strip_whitespace=True)

    order_number: str = ORDER_NUMBER
    email: str = Field(min_length=3, max_length=320, pattern=r"^[^@\s\x00-\x1f]+@[^@\s\x00-\x1f]+$", description="Почта, указанная в заказе.")


class SessionRequested(BaseModel):
    detail: str


class SessionVerify(BaseModel):
    model_config = ConfigDict(str_strip_whitespace=True)

    order_number: str = ORDER_NUMBER
    code: str = Field(pattern=r"^[0-9]{6}$", description="Шесть цифр из письма.")


class BuyerSessionPublic(BaseModel):
    token: str = Field(description="Bearer-токен покупателя (vzb_…), только для этого заказа.")
    token_type: Literal["bearer"] = "bearer"
    order_number: str
    expires_at: datetime


CODE_SENT = ("Если номер заказа и почта указаны верно, мы отправили на эту почту код для входа. Код действует 15 минут. "
             "Новый код можно запросить не чаще 5 раз в час.")
BAD_CODE = "Код неверный или устарел. Запросите новый код, если этот не подходит."


TOO_MANY = {429: {"model": ErrorResponse, "description": "Слишком много запросов кода с одного адреса; повторите через Retry-After секунд.",
                  "headers": {"Retry-After": {"description": "Через сколько секунд повторить запрос.", "schema": {"type": "integer"}}}}}


def too_many(exc: TooManyCodeRequests) -> HTTPException:
    return HTTPException(429, detail=[{"loc": ["client"], "msg": MESSAGE_TOO_MANY_RU.format(minutes=max(1, -(-exc.retry_after // 60))),
                                       "type": "too_many_requests"}], headers={"Retry-After": str(exc.retry_after)})


@router.post("/buyer/session", status_code=202, response_model=SessionRequested, responses={**errors(422, 503), **TOO_MANY})
async def start_session(body: SessionRequest, now: Now, request: Request, background: BackgroundTasks) -> SessionRequested:
    """Send a one-time code to the order's email. The answer is the same whether or not the order
    exists, the email is the order's, or the order asked too often, and it takes the same time:
    nothing here reveals an order. One address asking too often is answered 429 with Retry-After."""
    try:
        key = await ask_for_code(request, order_number=body.order_number, email=body.email, now=now)
    except TooManyCodeRequests as exc:
        raise too_many(exc) from None
    if key is not None:
        background.add_task(send_code, get_engine(), key, now=now)  # the code now, not at the next outbox sweep
    return SessionRequested(detail=CODE_SENT)


@router.post("/buyer/session/verify", response_model=BuyerSessionPublic, responses=errors(422, 503))
def finish_session(body: SessionVerify, now: Now) -> BuyerSessionPublic:
    """Trade the emailed code for a short-lived buyer token of the order. A wrong, expired or spent code,
    an unknown order and an order out of tries all answer the same 422."""
    session = verify_code(get_engine(), order_number=body.order_number, code=body.code, now=now)
    if session is None:
        raise HTTPException(422, detail=[{"loc": ["body", "code"], "msg": BAD_CODE, "type": "invalid_code"}])
    return BuyerSessionPublic(token=session.token, order_number=session.order_number, expires_at=session.expires_at)


# --- claims ----------------------------------------------------------------------------------------

@router.post("/claims", status_code=201, response_model=ClaimPublic, responses={**errors(404, 409, 422, 503), **FORBIDDEN})
def create_claim(body: ClaimCreate, principal: Buyerish, now: Now, background: BackgroundTasks) -> ClaimPublic:
    """File a claim for one ticket of the caller's order (a service key: any order's)."""
    engine = get_engine()
    check_ticket(engine, body.ticket_id, principal)
    filed = file_buyer_claim(engine, ticket_id=body.ticket_id, reason=body.reason, now=now, actor=principal.audit,
                             description=body.description, name_mismatch_explanation=body.name_mismatch_explanation)
    background.add_task(send_claim_mail, filed.id, now)  # «Заявка принята» right after the answer, not when the run starts
    return ClaimPublic(id=filed.id, number=filed.number, state=filed.state, quote=filed.quote,
                       refund=filed.quote.get("refund"), flow_run_id=filed.flow_run_id)


class DeadlinePublic(BaseModel):
    what: str
    due: date
    working_days_left: int
    provisional: bool


class StepPublic(BaseModel):
    at: datetime
    title: str
    who: str
    state: str


class ClaimStatusPublic(BaseModel):
    number: str
    state: str
    state_ru: str = Field(description="Состояние простыми словами.")
    holder: Literal["buyer", "organizer", "operator", "bank"] | None = Field(description="Чей сейчас ход; null — заявка завершена.")
    holder_ru: str
    reason: str
    reason_ru: str
    event_title: str
    event_starts_at: datetime
    amount: str = Field(description="Сумма в рублях, «1750.00».")
    amount_kopecks: int
    amount_ru: str
    percent: int | None
    basis: str = Field(description="Правило, по которому считается сумма.")
    refusal_message: str | None
    deadline: DeadlinePublic | None
    history: list[StepPublic]
    can_upload_documents: bool
    can_give_bank_details: bool
    can_withdraw: bool


@router.get("/claims/{number}", response_model=ClaimStatusPublic, responses={**errors(404, 422, 503), **FORBIDDEN})
def read_status(number: ClaimNumber, principal: Buyerish, now: Now) -> ClaimStatusPublic:
    """The claim's state, in plain words too, who holds it, the deadline, the amount and its rule, the history."""
    ref = buyer_claim(number, principal)
    status = claim_status(get_engine(), ref.number, now=now).to_json()
    return ClaimStatusPublic.model_validate({k: v for k, v in status.items() if k != "documents"})


# --- documents: JSON facts, or a file with its facts (multipart) -----------------------------------

@router.post("/claims/{number}/documents", status_code=201, response_model=ClaimPublic, openapi_extra=DOCUMENT_BODY,
             responses={**errors(404, 409, 422, 503), **FORBIDDEN, **TOO_LARGE})
async def upload_document(number: ClaimNumber, request: Request, principal: Buyerish, now: Now) -> ClaimPublic:
    """A document for the claim: its facts as JSON, or a file (PDF, JPEG, PNG; checked by content, size-limited)
    with its facts as multipart/form-data. A claim waiting for documents moves on to the organizer."""
    facts, data, _ = await read_document(request)
    state = await run_in_threadpool(attach_document, number, principal, facts, data, now)
    ref = await run_in_threadpool(buyer_claim, number, principal)
    return ClaimPublic(id=ref.id, number=ref.number, state=state)


# --- bank details, withdrawal ---------------------------------------------------------------------

@router.post("/claims/{number}/bank-details", response_model=BankDetailsPublic, responses={**errors(404, 409, 422, 503), **FORBIDDEN})
def bank_details(number: ClaimNumber, body: BankDetails, principal: Buyerish, now: Now) -> BankDetailsPublic:
    """Bank details for a refund by transfer (cash, box office, BSO purchases, or a card the bank refused):
    only a claim waiting for them takes them; they are stored encrypted and shown masked."""
    return give_bank_details(number, principal, body, now)


@router.post("/claims/{number}/withdrawal", response_model=ClaimPublic, responses={**errors(404, 409, 422, 503), **FORBIDDEN})
def withdraw(number: ClaimNumber, body: Withdrawal, principal: Buyerish, now: Now) -> ClaimPublic:
    """The buyer withdraws a claim before a decision."""
    ref = buyer_claim(number, principal)
    try:
        result = withdraw_claim(get_engine(), number=ref.number, actor=principal.audit, now=now, note=body.reason)
    except NotYourClaim:
        raise not_found() from None
    return ClaimPublic(id=result.id, number=result.number, state=result.state)


__all__ = ["ClaimPublic", "router"]
