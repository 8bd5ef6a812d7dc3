"""«Где мои деньги»: the buyer's pages, server-rendered in Russian, readable on a phone, no front-end build.

- `/s/{link}`: one claim's status, opened from the signed, expiring link in every email the buyer gets
  (tasks/buyer_links.py). The link authorizes the page and its forms (upload a document, give bank
  details, withdraw); each form also carries a CSRF token (double submit: a SameSite=Strict cookie and
  the same value in the form). An expired or forged link gets a page saying how to get a fresh one.
- `/buyer`: sign in with the order number and a code sent to the order's email (the same codes as
  `POST /buyer/session`); the signed-in buyer sees the order's tickets and claims, files a claim, and
  follows each claim to its status page. The session cookie holds the buyer's `vzb_` token (HttpOnly).

No database ids in URLs: links carry a signed claim number, forms a ticket of the signed-in order.
"""
from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError
from starlette.background import BackgroundTask
from starlette.datastructures import UploadFile

from api.buyer_common import BankDetails, ClaimCreate, DocumentCreate, ask_for_code, give_bank_details, store_file
from api.clock import Now
from models.db import get_engine
from models.settings import get_settings
from states.policy import DOCUMENT_KINDS, reasons_for_event
from tasks.auth import Principal
from tasks.buyer_auth import (
    CODE_TTL,
    MESSAGE_TOO_MANY_RU,
    TOKEN_TTL,
    TooManyCodeRequests,
    buyer,
    resolve_buyer_token,
    revoke_buyer_token,
    send_code,
    verify_code,
)
from tasks.buyer_claims import DOCUMENT_KIND_RU, ClaimStatus, check_ticket, claim_ref, claim_status, order_of_claim, order_tickets
from tasks.buyer_links import LinkExpired, LinkInvalid, read_status_link, status_link_token
from tasks.claims import send_claim_mail
from tasks.emails import reason_ru, ru_date, rub, working_days_ru
from tasks.intake import IntakeError, add_document, file_buyer_claim, withdraw_claim

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates" / "buyer"))
templates.env.filters.update(ru_date=ru_date, rub=rub, working_days_ru=working_days_ru, reason_ru=reason_ru)

CSRF_COOKIE = "vz_csrf"
SESSION_COOKIE = "vz_buyer"
REFILE_AFTER = frozenset({"rejected", "withdrawn"})
EVENT_NOTICE_RU = {
    "cancelled": "Мероприятие отменено: стоимость билета вернём полностью (причина «{reason}»).",
    "replaced": "Мероприятие заменено: стоимость билета вернём полностью (причина «{reason}»).",
    "postponed": "Мероприятие перенесено: билет действует на новую дату; если вы не сможете прийти, стоимость билета вернём полностью (причина «{reason}»).",
}
MAX_FORM_BYTES = 64 * 1024  # a form without a file
T = TypeVar("T")


def _when(value: datetime, zone: Any) -> str:
    local = value.astimezone(zone)
    return f"{ru_date(local)}, {local:%H:%M}"


templates.env.filters["when"] = _when


def _secure() -> bool:
    return get_settings().public_url.startswith("https://")


def page(request: Request, name: str, context: dict[str, Any], status: int = 200) -> HTMLResponse:
    """Render a page with the CSRF token its forms carry (the cookie is set on the first page)."""
    token = request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(32)
    response = templates.TemplateResponse(request, name, {**context, "csrf": token}, status_code=status)
    if request.cookies.get(CSRF_COOKIE) != token:
        response.set_cookie(CSRF_COOKIE, token, httponly=True, samesite="strict", secure=_secure(), path="/")
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"  # the link in the address bar is a credential
    response.headers["X-Frame-Options"] = "DENY"
    return response


def _check_csrf(request: Request, sent: Any) -> None:
    cookie = request.cookies.get(CSRF_COOKIE)
    if not cookie or not isinstance(sent, str) or not secrets.compare_digest(cookie, sent):
        raise HTTPException(403, detail=[{"loc": ["body", "csrf"], "msg": "Форма устарела: обновите страницу и отправьте её ещё раз.",
                                          "type": "csrf"}])


async def _form(request: Request) -> dict[str, Any]:
    """A small url-encoded form, its CSRF token checked."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_FORM_BYTES:
        raise HTTPException(413, detail=[{"loc": ["body"], "msg": "Слишком большая форма.", "type": "too_large"}])
    try:
        form = await request.form(max_files=0, max_fields=20)
    except Exception:  # noqa: BLE001 - a malformed form is the client's error
        raise HTTPException(422, detail=[{"loc": ["body"], "msg": "Не удалось прочитать форму.", "type": "form_invalid"}]) from None
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    _check_csrf(request, fields.get("csrf"))
    return fields


FORM_ERRORS_RU = {
    "missing": "Обязательное поле.",
    "literal_error": "Выберите значение из списка.",
    "int_parsing": "Нужно целое число.",
    "int_type": "Нужно целое число.",
    "string_too_long": "Слишком длинный текст.",
    "string_too_short": "Поле не может быть пустым.",
    "string_pattern_mismatch": "Неверный формат.",
    "date_parsing": "Неверная дата.",
    "date_from_datetime_parsing": "Неверная дата.",
    "control_characters": "Текст содержит управляющие символы; уберите их.",
}


def _errors_ru(exc: ValidationError) -> dict[str, str]:
    return {str(e["loc"][-1]) if e["loc"] else "form": FORM_ERRORS_RU.get(e["type"], "Неверное значение.") for e in exc.errors()}


# --- the status page -------------------------------------------------------------------------------

def _link_principal(link: str, now: datetime) -> tuple[str, Principal]:
    """The claim a link opens and the buyer it proves (the link came to the order's email)."""
    number = read_status_link(link, now=now)
    order_number = order_of_claim(get_engine(), number)
    if order_number is None:
        raise LinkInvalid("the link names no claim we have")
    return number, buyer(order_number)


def _bad_link(request: Request, exc: LinkInvalid) -> HTMLResponse:
    expired = isinstance(exc, LinkExpired)
    return page(request, "link_invalid.html", {"expired": expired, "days": get_settings().status_link_days}, status=410 if expired else 404)


def _status_context(status: ClaimStatus, link: str, done: str | None = None, errors: dict[str, str] | None = None) -> dict[str, Any]:
    return {"s": status, "link": link, "zone": status.event_starts_at.tzinfo or ZoneInfo("Europe/Moscow"), "done": done,
            "errors": errors or {}, "document_kinds": [(k, DOCUMENT_KIND_RU[k]) for k in sorted(DOCUMENT_KINDS, key=_kind_order)]}


def _kind_order(kind: str) -> int:
    return list(DOCUMENT_KIND_RU).index(kind) if kind in DOCUMENT_KIND_RU else 99


DONE_RU = {"documents": "Документ получен.", "bank-details": "Реквизиты сохранены.", "withdrawal": "Заявка отозвана.",
           "filed": "Заявка подана. Письмо с номером заявки и этой ссылкой мы отправили на почту заказа."}


@router.get("/s/{link}", response_class=HTMLResponse)
def status_page(request: Request, link: str, now: Now, done: str | None = None) -> Response:
    try:
        number, _ = _link_principal(link, now)
    except LinkInvalid as exc:
        return _bad_link(request, exc)
    status = claim_status(get_engine(), number, now=now)
    return page(request, "status.html", _status_context(status, link, DONE_RU.get(done or "")))


def _back(link: str, done: str) -> RedirectResponse:
    return RedirectResponse(f"/s/{link}?done={done}", status_code=303)


def _status_with_errors(request: Request, link: str, number: str, now: datetime, errors: dict[str, str], status: int = 422) -> HTMLResponse:
    return page(request, "status.html", _status_context(claim_status(get_engine(), number, now=now), link, errors=errors), status=status)


class _Refused(Exception):
    """A status-page form refused: the errors shown next to its fields, and the answer's status."""

    def __init__(self, errors: dict[str, str], status: int = 422):
        super().__init__(errors)
        self.errors, self.status = errors, status


async def _status_form(request: Request, link: str, now: datetime, *, done: str, read: Callable[[Request], Awaitable[T]],
                       act: Callable[[str, Principal, T, datetime], None]) -> Response:
    """One form of the status page. The link names the claim and proves the buyer (a bad one: its page, and
    the form is not read); `read` takes the form, `act` does the work in a worker thread; either raises
    `_Refused`, shown on the status page; done, back to the status page saying what was done."""
    try:
        number, principal = await run_in_threadpool(_link_principal, link, now)
    except LinkInvalid as exc:
        return _bad_link(request, exc)
    try:
        form = await read(request)
    except _Refused as exc:
        return await run_in_threadpool(_status_with_errors, request, link, number, now, exc.errors, exc.status)
    except HTTPException as exc:  # a stale CSRF token, an oversized or unreadable form: said on the page, not in JSON
        errors = {str(d["loc"][-1]): d["msg"] for d in exc.detail}
        return await run_in_threadpool(_status_with_errors, request, link, number, now, errors, exc.status_code)

    def run() -> Response:
        try:
            act(number, principal, form, now)
        except _Refused as exc:
            return _status_with_errors(request, link, number, now, exc.errors, exc.status)
        return _back(link, done)

    return await run_in_threadpool(run)


async def _document_form(request: Request) -> tuple[bytes, DocumentCreate]:
    limit = get_settings().document_max_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit + 64 * 1024:
        raise _Refused({"file": f"Файл больше {limit // (1024 * 1024)} МБ."}, 413)
    try:
        form = await request.form(max_files=1, max_fields=20)
    except Exception:  # noqa: BLE001 - a malformed form is the client's error
        raise _Refused({"file": "Не удалось прочитать форму."}) from None
    _check_csrf(request, form.get("csrf"))
    upload = form.get("file")
    if not isinstance(upload, UploadFile) or not upload.filename:
        raise _Refused({"file": "Выберите файл документа."})
    data = await upload.read(limit + 1)
    fields = {k: v for k, v in form.items() if isinstance(v, str) and k in ("kind", "sick_from", "sick_to", "person_name") and v}
    try:
        return data, DocumentCreate.model_validate({**fields, "filename": upload.filename[:300]})
    except ValidationError as exc:
        raise _Refused(_errors_ru(exc)) from None


def _attach(number: str, principal: Principal, form: tuple[bytes, DocumentCreate], now: datetime) -> None:
    data, facts = form
    try:
        stored = store_file(data)
        ref = claim_ref(get_engine(), number, principal)
        add_document(get_engine(), claim_id=ref.id, now=now, actor=principal.audit, **facts.model_dump(),
                     sha256=stored.sha256, size=stored.size, content_type=stored.content_type)
    except HTTPException as exc:
        raise _Refused({"file": exc.detail[0]["msg"]}, exc.status_code) from None
    except IntakeError as exc:
        raise _Refused({"file": exc.message_ru}, exc.status) from None


def _save_bank_details(number: str, principal: Principal, fields: dict[str, Any], now: datetime) -> None:
    try:
        body = BankDetails.model_validate({k: fields.get(k, "") for k in ("bik", "account", "name")} | {"inn": fields.get("inn") or None})
        give_bank_details(number, principal, body, now)
    except ValidationError as exc:
        raise _Refused(_errors_ru(exc)) from None
    except HTTPException as exc:
        raise _Refused({str(d["loc"][-1]): d["msg"] for d in exc.detail}, exc.status_code) from None


def _withdraw(number: str, principal: Principal, fields: dict[str, Any], now: datetime) -> None:
    if fields.get("confirm") != "yes":
        raise _Refused({"confirm": "Подтвердите, что хотите отозвать заявку."})
    try:
        withdraw_claim(get_engine(), number=number, actor=principal.audit, now=now, note=fields.get("reason", "")[:2000])
    except IntakeError as exc:
        raise _Refused({"confirm": exc.message_ru}, exc.status) from None


@router.post("/s/{link}/documents", response_class=HTMLResponse)
async def status_upload(request: Request, link: str, now: Now) -> Response:
    return await _status_form(request, link, now, done="documents", read=_document_form, act=_attach)


@router.post("/s/{link}/bank-details", response_class=HTMLResponse)
async def status_bank_details(request: Request, link: str, now: Now) -> Response:
    return await _status_form(request, link, now, done="bank-details", read=_form, act=_save_bank_details)


@router.post("/s/{link}/withdrawal", response_class=HTMLResponse)
async def status_withdraw(request: Request, link: str, now: Now) -> Response:
    return await _status_form(request, link, now, done="withdrawal", read=_form, act=_withdraw)


# --- sign-in and the order's page ------------------------------------------------------------------

def _session(request: Request, now: datetime) -> Principal | None:
    token = request.cookies.get(SESSION_COOKIE)
    return resolve_buyer_token(get_engine(), token, now=now) if token else None


def _event_statuses(ticket_ids: list[int]) -> dict[int, str]:
    """Each ticket's event status (scheduled, cancelled, replaced, postponed)."""
    from sqlalchemy import select

    from models.tables import Event, Ticket

    ticket_t, event_t = Ticket.__table__, Event.__table__  # type: ignore[attr-defined]
    with get_engine().connect() as conn:
        rows = conn.execute(select(ticket_t.c.id, event_t.c.status).join(event_t, event_t.c.id == ticket_t.c.event_id)
                            .where(ticket_t.c.id.in_(ticket_ids or [0]))).all()
    return {r.id: r.status for r in rows}


def _reasons_for(event_status: str) -> list[tuple[str, str]]:
    """The reasons the claim form offers for a ticket, the event's own first (see EVENT_NOTICE_RU):
    states.policy.reasons_for_event, the same rule that refuses the others at filing (a cancelled or
    replaced event: its own reason only, 100 %; a postponed one: its own first, the buyer's own stay)."""
    return [(r.value, reason_ru(r.value)) for r in reasons_for_event(event_status)]


def _order_page(request: Request, principal: Principal, now: datetime, errors: dict[str, str] | None = None, status: int = 200) -> HTMLResponse:
    assert principal.order_number is not None
    tickets = order_tickets(get_engine(), principal.order_number)
    links = {c["number"]: status_link_token(c["number"], now=now) for t in tickets for c in t.claims}
    statuses = _event_statuses([t.ticket_id for t in tickets])
    reasons = {t.ticket_id: _reasons_for(statuses.get(t.ticket_id, "scheduled")) for t in tickets}
    notices = {t.ticket_id: EVENT_NOTICE_RU[st].format(reason=reason_ru(st)) for t in tickets
               if (st := statuses.get(t.ticket_id, "scheduled")) in EVENT_NOTICE_RU}
    # A ticket takes a new claim only when none of its claims is in work or done (the rules refuse it anyway:
    # an open claim, a ticket refunded once); after a refusal or a withdrawal the form is offered again.
    can_file = {t.ticket_id: all(c["state"] in REFILE_AFTER for c in t.claims) for t in tickets}
    return page(request, "order.html", {"order_number": principal.order_number, "tickets": tickets, "links": links, "can_file": can_file,
                                        "reasons": reasons, "notices": notices, "errors": errors or {}}, status=status)


async def _order_form(request: Request, now: datetime) -> dict[str, Any] | Response:
    """The form of a /buyer page; a stale CSRF token or an unreadable form is said on a page (HTML, in Russian):
    the order's page for a signed-in buyer, the sign-in page otherwise. Nothing is done."""
    try:
        return await _form(request)
    except HTTPException as exc:
        errors = {"form": " ".join(d["msg"] for d in exc.detail)}
        principal = await run_in_threadpool(_session, request, now)
        if principal is None:
            return page(request, "sign_in.html", {"errors": errors, "order_number": ""}, status=exc.status_code)
        return await run_in_threadpool(_order_page, request, principal, now, errors, exc.status_code)


@router.get("/buyer", response_class=HTMLResponse)
def buyer_home(request: Request, now: Now) -> Response:
    principal = _session(request, now)
    if principal is None:
        return page(request, "sign_in.html", {"errors": {}, "order_number": ""})
    return _order_page(request, principal, now)


@router.post("/buyer/sign-in", response_class=HTMLResponse)
async def sign_in(request: Request, now: Now) -> Response:
    fields = await _order_form(request, now)
    if isinstance(fields, Response):
        return fields
    order_number, email = fields.get("order_number", "").strip()[:100], fields.get("email", "").strip()[:320]
    errors = {k: "Обязательное поле." for k, v in (("order_number", order_number), ("email", email)) if not v}
    if errors:
        return page(request, "sign_in.html", {"errors": errors, "order_number": order_number}, status=422)
    try:
        key = await ask_for_code(request, order_number=order_number, email=email, now=now)
    except TooManyCodeRequests as exc:
        response = page(request, "sign_in.html", {"order_number": order_number, "errors": {
            "form": MESSAGE_TOO_MANY_RU.format(minutes=max(1, -(-exc.retry_after // 60)))}}, status=429)
        response.headers["Retry-After"] = str(exc.retry_after)
        return response
    response = page(request, "code.html", {"order_number": order_number, "errors": {}, "minutes": int(CODE_TTL.total_seconds() // 60)})
    if key is not None:  # the code only, right after answering (not while the buyer waits: that time would tell)
        response.background = BackgroundTask(send_code, get_engine(), key, now=now)
    return response


@router.post("/buyer/sign-in/code", response_class=HTMLResponse)
async def sign_in_code(request: Request, now: Now) -> Response:
    fields = await _order_form(request, now)
    if isinstance(fields, Response):
        return fields
    order_number, code = fields.get("order_number", "").strip()[:100], fields.get("code", "").strip()[:20]
    session = await run_in_threadpool(lambda: verify_code(get_engine(), order_number=order_number, code=code, now=now))
    if session is None:
        return page(request, "code.html", {"order_number": order_number, "minutes": int(CODE_TTL.total_seconds() // 60),
                                           "errors": {"code": "Код неверный или устарел. Запросите новый, если этот не подходит."}}, status=422)
    response = RedirectResponse("/buyer", status_code=303)
    response.set_cookie(SESSION_COOKIE, session.token, max_age=int(TOKEN_TTL.total_seconds()), httponly=True, samesite="lax",
                        secure=_secure(), path="/")
    return response


@router.post("/buyer/sign-out", response_class=HTMLResponse)
async def sign_out(request: Request, now: Now) -> Response:
    refused = await _order_form(request, now)
    if isinstance(refused, Response):
        return refused
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        await run_in_threadpool(lambda: revoke_buyer_token(get_engine(), token, now=now))
    response = RedirectResponse("/buyer", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.post("/buyer/claims", response_class=HTMLResponse)
async def file_claim_page(request: Request, now: Now) -> Response:
    fields = await _order_form(request, now)
    if isinstance(fields, Response):
        return fields

    def file() -> Response:
        principal = _session(request, now)
        if principal is None:
            return page(request, "sign_in.html", {"errors": {"form": "Сессия закончилась: войдите ещё раз."}, "order_number": ""}, status=401)
        try:
            body = ClaimCreate.model_validate({"ticket_id": fields.get("ticket_id"), "reason": fields.get("reason"),
                                               "description": fields.get("description", "")})
            check_ticket(get_engine(), body.ticket_id, principal)
            filed = file_buyer_claim(get_engine(), ticket_id=body.ticket_id, reason=body.reason, now=now, actor=principal.audit,
                                     description=body.description)
        except ValidationError as exc:
            return _order_page(request, principal, now, _errors_ru(exc), status=422)
        except IntakeError as exc:
            return _order_page(request, principal, now, {"form": exc.message_ru}, status=exc.status)
        send_claim_mail(filed.id, now)  # «Заявка принята», with this claim's status link
        return RedirectResponse(f"/s/{status_link_token(filed.number, now=now)}?done=filed", status_code=303)

    return await run_in_threadpool(file)

