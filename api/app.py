"""HTTP API: buyers file claims and send documents (api/buyer.py); organizers decide, one by one or in bulk.

Organizers authenticate with `Authorization: Bearer <token>` (`vozvrat organizers token ID`) and see
and decide only their own events' claims; another organizer's claim answers 404, like a missing one.
Errors are 4xx with field-level details: {"detail": [{"loc": [...], "msg": "...", "type": "..."}]};
messages meant for buyers and organizers are in Russian.
"""
from __future__ import annotations

from typing import Annotated, Literal

from fastapi import Depends, FastAPI, Header, HTTPException, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from api import inbound, operator
from api.buyer import ClaimPublic
from api.buyer import router as buyer_router
from api.clock import Now, clock  # noqa: F401 - tests override api.app.clock
from api.errors import MAX_KOPECKS, TEXT_MESSAGES, ClaimId, Id, errors, install_error_handlers, install_openapi
from api.events import router as events_router
from api.health import HealthReport, check_health
from api.ops import router as ops_router
from api.regimes import router as regimes_router
from models.claim_views import read_claim
from models.crypto import require_secret_key
from models.db import get_engine
from tasks.intake import (
    ClaimInput,
    IntakeError,
    NotYourClaim,
    decide,
    decide_many,
    organizer_for_token,
    refuse_false_documents,
)

# Outside the embedded stack (which makes its own key), no VOZVRAT_SECRET_KEY: refuse to start, one line, exit 2.
require_secret_key("the API")

# /docs and /redoc come from api/ops.py with local assets (no CDN): FastAPI's own pages are switched off.
app = FastAPI(title="vozvrat", version="0.1.0", description="Refund claims for ticket operators.", docs_url=None, redoc_url=None)

# --- hardening: one error shape, bounded input, 409 for lost races, 503 for a dead database -------
# (api/errors.py). Handlers registered here; the specific ones below take precedence for their types.
install_error_handlers(app)
install_openapi(app)
app.include_router(operator.router)  # the operator's sales feed (api/operator.py)
app.include_router(inbound.router)  # claims by email: the buyer's confirmation (api/inbound.py)
app.include_router(ops_router)
app.include_router(events_router)  # issue 12: /events/{id}/cancellation, /mass-sends…


RUSSIAN_VALIDATION = {
    "missing": "Обязательное поле.",
    "literal_error": "Недопустимое значение.",
    "enum": "Недопустимое значение.",
    "int_parsing": "Нужно целое число.",
    "int_type": "Нужно целое число.",
    "greater_than": "Значение должно быть больше допустимого минимума.",
    "greater_than_equal": "Значение меньше допустимого.",
    "date_from_datetime_parsing": "Неверная дата, нужен формат ГГГГ-ММ-ДД.",
    "date_parsing": "Неверная дата, нужен формат ГГГГ-ММ-ДД.",
    "string_too_long": "Слишком длинный текст.",
    "string_too_short": "Поле не может быть пустым.",
    "too_short": "Список не может быть пустым.",
    "too_long": "Слишком много элементов.",
    "json_invalid": "Тело запроса — не JSON.",
    "model_attributes_type": "Нужен JSON-объект.",
}
RUSSIAN_VALIDATION.update({
    "less_than_equal": "Значение больше допустимого ({le}).",
    "less_than": "Значение должно быть меньше {lt}.",
    "int_from_float": "Нужно целое число.",
    "int_parsing_size": "Слишком большое число.",
    "string_type": "Нужна строка.",
    "list_type": "Нужен список.",
    "dict_type": "Нужен JSON-объект.",
    "date_type": "Неверная дата, нужен формат ГГГГ-ММ-ДД.",
    "date_from_datetime_inexact": "Неверная дата, нужен формат ГГГГ-ММ-ДД.",
    **TEXT_MESSAGES,
    "json_type": "Тело запроса — не JSON.",
    "none_required": "Значение не допускается.",
})


def _russian(error: dict) -> str:
    """The Russian message of a validation error, with its limit when the message names one ({le})."""
    # A validator that speaks Russian itself (tasks/sales.py) puts its message in the error's context.
    template = (error.get("ctx") or {}).get("ru") or RUSSIAN_VALIDATION.get(error["type"], "Неверное значение.")
    try:
        return template.format(**error.get("ctx", {}))
    except (KeyError, IndexError, ValueError):
        return template


@app.exception_handler(RequestValidationError)
async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    """422 with field-level details, each message in Russian (the buyer or organizer reads it)."""
    detail = [
        {"loc": list(e["loc"]), "msg": _russian(e), "type": e["type"]}
        for e in exc.errors()
    ]
    return JSONResponse(status_code=422, content={"detail": detail})


@app.exception_handler(IntakeError)
async def _intake_error(_: Request, exc: IntakeError) -> JSONResponse:
    return JSONResponse(status_code=exc.status, content={"detail": [{"loc": ["body", exc.field], "msg": exc.message_ru, "type": exc.code}]})


@app.exception_handler(NotYourClaim)
async def _not_found(_: Request, exc: NotYourClaim) -> JSONResponse:
    return JSONResponse(status_code=404, content={"detail": [{"loc": ["path", "claim_id"], "msg": "Заявка не найдена.", "type": "not_found"}]})


def organizer(authorization: Annotated[str | None, Header()] = None) -> int:
    if not authorization or not authorization.lower().startswith("bearer "):
        raise HTTPException(401, detail=[{"loc": ["header", "authorization"], "msg": "Нужен токен организатора.", "type": "auth"}],
                            headers={"WWW-Authenticate": "Bearer"})
    organizer_id = organizer_for_token(get_engine(), authorization.split(" ", 1)[1].strip())
    if organizer_id is None:
        raise HTTPException(401, detail=[{"loc": ["header", "authorization"], "msg": "Токен не распознан.", "type": "auth"}],
                            headers={"WWW-Authenticate": "Bearer"})
    return organizer_id


Organizer = Annotated[int, Depends(organizer)]


class Decision(BaseModel):
    decision: Literal["approve", "reject"]
    amount_kopecks: int | None = Field(default=None, ge=0, le=MAX_KOPECKS)
    note: str = Field(default="", max_length=2000)
    expected_version: int | None = Field(default=None, ge=1)


class Extension(BaseModel):
    reason: str = Field(min_length=1, max_length=2000)


class BulkDecision(BaseModel):
    claim_ids: list[Id] = Field(min_length=1, max_length=5000)
    decision: Literal["approve", "reject"]
    note: str = Field(default="", max_length=2000)


class DecisionPublic(BaseModel):
    claim_id: int
    number: str
    state: str
    resumed: bool


@app.get("/health", response_model=HealthReport, responses={503: {"model": HealthReport, "description": "База данных недоступна.",
                                                                   "headers": {"Retry-After": {"schema": {"type": "integer"}}}}})
async def health() -> JSONResponse:
    """Each dependency (database, Prefect, SMTP, acquirer) checked concurrently; answers within a second."""
    report = await check_health()
    down = report.status == "unavailable"
    return JSONResponse(status_code=503 if down else 200, content=report.model_dump(mode="json"),
                        headers={"Retry-After": "5"} if down else None)


@app.get("/organizer/claims/{claim_id}", response_model=ClaimPublic, responses=errors(401, 404, 422, 503))
def organizer_claim(claim_id: ClaimId, organizer_id: Organizer) -> ClaimPublic:
    try:
        claim = read_claim(claim_id, engine=get_engine())
    except LookupError:
        raise NotYourClaim(claim_id) from None
    if claim.organizer_id != organizer_id:
        raise NotYourClaim(claim_id)
    return ClaimPublic(id=claim.id, number=claim.number, state=claim.state)


@app.post("/organizer/claims/{claim_id}/decision", response_model=DecisionPublic, responses=errors(401, 404, 409, 422, 503))
def decide_claim(claim_id: ClaimId, body: Decision, organizer_id: Organizer, now: Now) -> DecisionPublic:
    result = decide(get_engine(), claim_id=claim_id, organizer_id=organizer_id, now=now, expected_version=body.expected_version,
                    decision=ClaimInput(decision=body.decision, amount_kopecks=body.amount_kopecks, note=body.note))
    return DecisionPublic(**result.__dict__)


@app.post("/organizer/claims/{claim_id}/extension", response_model=DecisionPublic, responses=errors(401, 404, 409, 422, 503))
def extend_review(claim_id: ClaimId, body: Extension, organizer_id: Organizer, now: Now) -> DecisionPublic:
    result = decide(get_engine(), claim_id=claim_id, organizer_id=organizer_id, now=now,
                    decision=ClaimInput(decision="extend", note=body.reason))
    return DecisionPublic(**result.__dict__)


@app.post("/organizer/decisions", responses=errors(401, 409, 422, 503))
def bulk_decide(body: BulkDecision, organizer_id: Organizer, now: Now) -> dict:
    """One decision for many claims with one batch transition; each moved claim's run is resumed.

    Claims that cannot take the decision come back in `refused` with their reason.
    """
    result = decide_many(get_engine(), claim_ids=body.claim_ids, organizer_id=organizer_id, now=now,
                         decision=ClaimInput(decision=body.decision, note=body.note))
    return result


# --- drivers (issue 9): the buyer withdraws a claim; the organizer refuses false documents ----------

DB_ID = Field(gt=0, lt=2**31)  # an integer primary key on both databases
ERROR = {"description": "Ошибка с подробностями по полям: {\"detail\": [{\"loc\", \"msg\", \"type\"}]}"}


class FalseDocuments(BaseModel):
    note: str = Field(min_length=1, max_length=2000, pattern=r"^[^\x00]*$", description="What is false: kept in the claim's audit trail")
    document_ids: list[Annotated[int, DB_ID]] | None = Field(default=None, min_length=1, max_length=100,
                                                             description="The documents judged false; all of the claim's when omitted")
    expected_version: int | None = Field(default=None, ge=1, lt=2**31)


@app.post("/organizer/claims/{claim_id}/false-documents", response_model=DecisionPublic, responses={404: ERROR, 409: ERROR, 422: ERROR})
def refuse_documents(claim_id: Annotated[int, Path(gt=0, lt=2**31)], body: FalseDocuments, organizer_id: Organizer, now: Now) -> DecisionPublic:
    """The organizer judges the claim's documents false: the claim is refused with DOCUMENTS_FALSE (Decree 1491)."""
    result = refuse_false_documents(get_engine(), claim_id=claim_id, organizer_id=organizer_id, now=now, note=body.note,
                                    document_ids=body.document_ids, expected_version=body.expected_version)
    return DecisionPublic(**result.__dict__)


# Postponements, Decree 442 regimes and vouchers (issue 13): api/regimes.py.
app.include_router(regimes_router)

# --- buyers (issue 10): sign-in with an order's email code, their claims by number, the «Где мои деньги» pages
app.include_router(buyer_router)
