"""Claims by email: the buyer confirms a claim sent to the refunds address (tasks/inbound_claims.py).

The confirmation email (sent to the order's own email, never to the letter's From) carries a signed,
expiring link and a code:

- `GET /inbound/confirm/{token}` shows what will be filed and a button; opening the link files
  nothing (mail scanners open links too). `POST` to the same address files it.
- `GET /inbound/confirm` is a form for the letter's number and the code; `POST /inbound/confirm`
  files it. Wrong codes are counted and limited.

Pages are in Russian; a client sending `Accept: application/json` gets JSON, errors as
{"detail": [{"loc", "msg", "type"}]}. An expired or reused confirmation files nothing twice.
"""
from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import jinja2
from fastapi import APIRouter, BackgroundTasks, Depends, Form, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from models.db import get_engine
from tasks.claims import send_claim_mail
from tasks.emails import reason_ru, ru_date
from tasks.inbound_claims import ConfirmationError, Confirmed, confirm, confirm_with_code, pending_view, read_token, status_problem

router = APIRouter(prefix="/inbound", tags=["claims by email"])

_PAGES = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates" / "inbound"),
                            autoescape=True, undefined=jinja2.StrictUndefined)


def clock() -> datetime:
    """This router's clock seam; tests override the dependency."""
    return datetime.now(UTC)


Now = Annotated[datetime, Depends(clock)]
TOKEN_MAX = 300

_ERROR_JSON = {"$ref": "#/components/schemas/ErrorResponse"}  # api/errors.py: {"detail": [{"loc", "msg", "type"}]}


def _answer(description: str, json_schema: dict | None = None) -> dict[str, Any]:
    """Every answer here is a Russian page, or JSON for a client that asks for it (Accept: application/json)."""
    return {"description": description, "content": {"text/html": {"schema": {"type": "string"}},
                                                    "application/json": {"schema": json_schema or _ERROR_JSON}}}


_PROBLEMS = {422: _answer("Неверный запрос."), 404: _answer("Ссылка недействительна."), 409: _answer("Уже подтверждена или подать нельзя."), 410: _answer("Срок ссылки истёк.")}
_FILED = {201: _answer("Заявка подана.", {"type": "object", "properties": {"claims": {"type": "array"}, "refused_tickets": {"type": "array"}}})}


def _wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "")


def _page(name: str, status: int = 200, **context: Any) -> HTMLResponse:
    return HTMLResponse(_PAGES.get_template(name).render(**context), status_code=status,
                        headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})


_HEADINGS = {"expired": "Срок ссылки истёк", "invalid": "Ссылка недействительна", "already_confirmed": "Заявка уже подтверждена",
             "refused": "Заявку подать не удалось", "too_many_attempts": "Слишком много попыток", "wrong_code": "Неверный код"}


def _problem(request: Request, exc: ConfirmationError, loc: list[str]) -> Response:
    if _wants_json(request):
        return JSONResponse(status_code=exc.status, content={"detail": [{"loc": loc, "msg": exc.message_ru, "type": exc.code}]},
                            headers={"Cache-Control": "no-store"})
    return _page("problem.html.j2", exc.status, heading=_HEADINGS.get(exc.code, "Заявка не подтверждена"), message=exc.message_ru)


def _done(request: Request, result: Confirmed, background: BackgroundTasks, now: datetime) -> Response:
    for claim in result.claims:  # «Заявка принята» right after the answer, as for a claim filed through the API
        background.add_task(send_claim_mail, claim["id"], now)
    if _wants_json(request):
        return JSONResponse(status_code=201, content={"claims": [{"number": c["number"], "state": c["state"]} for c in result.claims],
                                                      "refused_tickets": result.refused_tickets})
    return _page("done.html.j2", 201, claims=result.claims, refused_tickets=result.refused_tickets)


@router.get("/confirm/{token}", response_class=HTMLResponse, responses={200: _answer("Что будет подано.", {"type": "object"}), **_PROBLEMS})
def confirmation_page(token: str, request: Request, now: Now) -> Response:
    """What the letter asked for, and a button to file it (opening the link files nothing)."""
    try:
        pending_id = read_token(token[:TOKEN_MAX], now=now)
        view = pending_view(get_engine(), pending_id)
        if view.status != "pending" or now >= view.expires_at:
            raise status_problem(view)
    except ConfirmationError as exc:
        return _problem(request, exc, ["path", "token"])
    if _wants_json(request):
        return JSONResponse({"reference": view.reference, "order_number": view.order_number, "events": view.event_titles,
                             "tickets": view.tickets, "reason": view.reason, "files": [f["filename"] for f in view.files],
                             "expires_at": view.expires_at.isoformat()}, headers={"Cache-Control": "no-store"})
    return _page("confirm.html.j2", view=view, reason_label=reason_ru(view.reason), expires=ru_date(view.expires_at),
                 action=f"/inbound/confirm/{token[:TOKEN_MAX]}")


@router.post("/confirm/{token}", status_code=201, response_class=HTMLResponse,
             responses={**_FILED, **_PROBLEMS})
def confirm_by_link(token: str, request: Request, now: Now, background: BackgroundTasks) -> Response:
    """File the claim the letter asked for, once."""
    try:
        result = confirm(get_engine(), pending_id=read_token(token[:TOKEN_MAX], now=now), now=now)
    except ConfirmationError as exc:
        return _problem(request, exc, ["path", "token"])
    return _done(request, result, background, now)


@router.get("/confirm", response_class=HTMLResponse,
            responses={200: {"content": {"text/html": {"schema": {"type": "string"}}}}, 422: _answer("Неверный запрос.")})
def code_page(reference: str = "") -> Response:
    """The form for the letter's number and the code."""
    return _page("code.html.j2", message=None, reference=reference[:12] if reference.isdigit() else "")


@router.post("/confirm", status_code=201, response_class=HTMLResponse,
             responses={**_FILED, **_PROBLEMS, 422: _answer("Неверный номер письма или код."), 429: _answer("Слишком много попыток.")})
def confirm_by_code(request: Request, now: Now, background: BackgroundTasks,
                    reference: Annotated[str, Form(max_length=20)] = "", code: Annotated[str, Form(max_length=20)] = "") -> Response:
    """File the claim of letter `reference` with the code from the confirmation email."""
    missing = [{"loc": ["body", name], "msg": "Обязательное поле.", "type": "missing"}
               for name, value in (("reference", reference), ("code", code)) if not value.strip()]
    if missing:
        if _wants_json(request):
            return JSONResponse(status_code=422, content={"detail": missing})
        return _page("code.html.j2", 422, message="Введите номер письма и код.", reference=reference if reference.isdigit() else "")
    try:
        result = confirm_with_code(get_engine(), reference_number=reference, code=code, now=now)
    except ConfirmationError as exc:
        if exc.code in ("wrong_code",) and not _wants_json(request):
            return _page("code.html.j2", exc.status, message=exc.message_ru, reference=reference if reference.isdigit() else "")
        return _problem(request, exc, ["body", "code"])
    return _done(request, result, background, now)
