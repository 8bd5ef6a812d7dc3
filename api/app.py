"""HTTP API: buyers file claims and send documents; organizers decide, one by one or in bulk.

Organizers' and staff routes, and the organizer page, live in api/organizer.py (installed at the end):
users authenticate with `Authorization: Bearer <vzu_ token>` (`vozvrat users token`) or an organizer's
legacy token, see and decide only what their role allows; another organizer's claim answers 404.
Errors are 4xx with field-level details: {"detail": [{"loc": [...], "msg": "...", "type": "..."}]};
messages meant for buyers and organizers are in Russian.
"""
from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal

from fastapi import BackgroundTasks, Depends, FastAPI, HTTPException, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from api.clock import clock
from api.errors import MAX_ID, TEXT_MESSAGES, ClaimId, Text, errors, install_error_handlers, install_openapi
from api.health import HealthReport, check_health
from api.organizer import install as install_organizer
from models.claim_views import read_claim
from models.crypto import require_secret_key
from models.db import get_engine
from tasks.claims import send_claim_mail
from tasks.intake import (
    IntakeError,
    NotYourClaim,
    add_document,
    file_buyer_claim,
    withdraw_claim,
)

# Outside the embedded stack (which makes its own key), no VOZVRAT_SECRET_KEY: refuse to start, one line, exit 2.
require_secret_key("the API")

app = FastAPI(title="vozvrat", version="0.1.0", description="Refund claims for ticket operators.")


Now = Annotated[datetime, Depends(clock)]

# --- hardening: one error shape, bounded input, 409 for lost races, 503 for a dead database -------
# (api/errors.py). Handlers registered here; the specific ones below take precedence for their types.
install_error_handlers(app)
install_openapi(app)


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
    template = RUSSIAN_VALIDATION.get(error["type"], "Неверное значение.")
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


class ClaimCreate(BaseModel):
    ticket_id: int = Field(gt=0, le=MAX_ID)
    reason: Literal["voluntary", "illness", "death", "other", "postponed", "cancelled", "replaced"]
    description: Text = Field(default="", max_length=4000)
    name_mismatch_explanation: Text | None = Field(default=None, max_length=1000)


class ClaimPublic(BaseModel):
    id: int
    number: str
    state: str
    quote: dict | None = None
    refund: str | None = None
    flow_run_id: str | None = None


class DocumentCreate(BaseModel):
    kind: Literal["sick_leave_gosuslugi", "eln_copy", "pcr_test", "death_certificate", "other"]
    sick_from: date | None = None
    sick_to: date | None = None
    person_name: Text | None = Field(default=None, max_length=300)
    relation: Literal["parent", "child", "grandparent", "grandchild", "sibling", "spouse"] | None = None
    filename: Text | None = Field(default=None, max_length=300)


@app.get("/health", response_model=HealthReport, responses={503: {"model": HealthReport, "description": "База данных недоступна.",
                                                                   "headers": {"Retry-After": {"schema": {"type": "integer"}}}}})
async def health() -> JSONResponse:
    """Each dependency (database, Prefect, SMTP, acquirer) checked concurrently; answers within a second."""
    report = await check_health()
    down = report.status == "unavailable"
    return JSONResponse(status_code=503 if down else 200, content=report.model_dump(mode="json"),
                        headers={"Retry-After": "5"} if down else None)


@app.post("/claims", status_code=201, response_model=ClaimPublic, responses=errors(404, 409, 422, 503))
def create_claim(body: ClaimCreate, now: Now, background: BackgroundTasks) -> ClaimPublic:
    filed = file_buyer_claim(get_engine(), ticket_id=body.ticket_id, reason=body.reason, now=now, description=body.description,
                             name_mismatch_explanation=body.name_mismatch_explanation)
    background.add_task(send_claim_mail, filed.id, now)  # «Заявка принята» right after the answer, not when the run starts
    return ClaimPublic(id=filed.id, number=filed.number, state=filed.state, quote=filed.quote,
                       refund=filed.quote.get("refund"), flow_run_id=filed.flow_run_id)


@app.post("/claims/{claim_id}/documents", status_code=201, response_model=ClaimPublic, responses=errors(404, 409, 422, 503))
def upload_document(claim_id: ClaimId, body: DocumentCreate, now: Now) -> ClaimPublic:
    state = add_document(get_engine(), claim_id=claim_id, now=now, **body.model_dump())
    claim = read_claim(claim_id, engine=get_engine())
    return ClaimPublic(id=claim_id, number=claim.number, state=state)


# --- drivers (issue 9): the buyer withdraws a claim; the organizer refuses false documents ----------

DB_ID = Field(gt=0, lt=2**31)  # an integer primary key on both databases
ERROR = {"description": "Ошибка с подробностями по полям: {\"detail\": [{\"loc\", \"msg\", \"type\"}]}"}


class Withdrawal(BaseModel):
    model_config = ConfigDict(str_strip_whitespace=True)

    email: str = Field(min_length=3, max_length=320, pattern=r"^[^@\s\x00]+@[^@\s\x00]+$",
                       description="The order's email: proves the buyer until buyer sign-in exists")
    reason: str = Field(default="", max_length=2000, pattern=r"^[^\x00]*$")


@app.post("/claims/{number}/withdrawal", response_model=ClaimPublic, responses={404: ERROR, 409: ERROR, 422: ERROR})
def withdraw(number: Annotated[str, Path(min_length=1, max_length=40, pattern=r"^[A-Za-z0-9-]+$")], body: Withdrawal, now: Now) -> ClaimPublic:
    """The buyer withdraws a claim before a decision. A wrong email answers 404, like a missing claim."""
    try:
        result = withdraw_claim(get_engine(), number=number, buyer_email=body.email, now=now, note=body.reason)
    except NotYourClaim:
        raise HTTPException(404, detail=[{"loc": ["path", "number"], "msg": "Заявка не найдена.", "type": "not_found"}]) from None
    return ClaimPublic(id=result.id, number=result.number, state=result.state)


# --- organizers and staff (issue 11): read, decide one or many, the organizer page (api/organizer.py) --
install_organizer(app)
