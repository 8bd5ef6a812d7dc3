"""HTTP API: buyers file claims and send documents; organizers decide, one by one or in bulk.

Organizers' and staff routes, and the organizer page, live in api/organizer.py (installed at the end):
users authenticate with `Authorization: Bearer <vzu_ token>` (`vozvrat users token`) or an organizer's
legacy token, see and decide only what their role allows; another organizer's claim answers 404.
Errors are 4xx with field-level details: {"detail": [{"loc": [...], "msg": "...", "type": "..."}]};
messages meant for buyers and organizers are in Russian.
"""
from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from api import inbound, operator
from api.buyer import router as buyer_router
from api.clock import Now, clock  # noqa: F401 - tests override api.app.clock
from api.errors import TEXT_MESSAGES, install_error_handlers, install_openapi
from api.events import router as events_router
from api.health import HealthReport, check_health
from api.mail import router as mail_router
from api.ops import router as ops_router
from api.organizer import install as install_organizer
from api.regimes import router as regimes_router
from models.crypto import require_secret_key
from tasks.intake import (
    IntakeError,
    NotYourClaim,
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
app.include_router(mail_router)  # the outbound-mail kill switch: /mail/switch (api/mail.py)


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


@app.get("/health", response_model=HealthReport, responses={503: {"model": HealthReport, "description": "База данных недоступна.",
                                                                   "headers": {"Retry-After": {"schema": {"type": "integer"}}}}})
async def health() -> JSONResponse:
    """Each dependency (database, Prefect, SMTP, acquirer, inbound mail server) checked concurrently; answers within a second."""
    report = await check_health()
    down = report.status == "unavailable"
    return JSONResponse(status_code=503 if down else 200, content=report.model_dump(mode="json"),
                        headers={"Retry-After": "5"} if down else None)


# Postponements, Decree 442 regimes and vouchers (issue 13): api/regimes.py.
app.include_router(regimes_router)

# --- buyers (issue 10): sign-in with an order's email code, their claims by number, the «Где мои деньги» pages
app.include_router(buyer_router)

# --- organizers and staff (issue 11): read, decide one or many, the organizer page (api/organizer.py) --
install_organizer(app)
