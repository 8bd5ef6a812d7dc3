"""Organizers and staff: read the claims waiting on them, decide one or many, and the organizer page.

JSON API (bearer: an organizer user's `vzu_` token, an organizer's legacy token, a staff token):
  GET  /organizer/claims                                  waiting claims (or others by state), filtered, paged
  GET  /organizer/claims/{number}                         one claim: reason, documents, amount and rule, deadline, version, history
  GET  /organizer/claims/{number}/documents/{doc_id}      a document's file
  POST /organizer/claims/{claim_id}/decision | extension | false-documents   one claim
  POST /organizer/decisions                               one decision for up to 10,000 claims by number (Idempotency-Key)
The page (`/organizer`, `/organizer/login`, …) is server-rendered Russian HTML on a signed session
cookie with a CSRF token in every form; its GETs of the JSON routes (document downloads) ride the
same cookie, the JSON POSTs never do (bearer only: no cross-site request can decide a claim).

Who may do what (docs/ops.md, "Roles"): an organizer's users their own events' claims; staff
support read every claim; staff supervisor read and decide any; accounting none of these.
Another organizer's claim answers 404, exactly like a missing one.
"""
from __future__ import annotations

import re
import secrets
import uuid
from datetime import date, datetime
from hashlib import sha256
from pathlib import Path as FilePath
from typing import Annotated, Any, Literal
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Header, HTTPException, Path, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from pydantic import BaseModel, Field

from api.auth import requires
from api.clock import clock
from api.errors import MAX_KOPECKS, ClaimId, Text, errors
from models.crypto import secret_keys
from models.db import get_engine
from models.organizer_views import (
    MAX_PAGE,
    WAITING_STATES,
    BadCursor,
    ClaimDetail,
    ClaimFilter,
    ClaimRecord,
    ClaimRow,
    DocumentFacts,
    claims_by_number,
    document_file,
    list_claims,
    read_claim_detail,
)
from states.lifecycle import ClaimState
from states.policy import Reason
from tasks.accounts import authenticate, get_user, user_principal
from tasks.auth import Principal
from tasks.bulk_decisions import (
    DECIDED_STATES,
    MAX_CLAIMS,
    REJECT_REASONS,
    BulkRequest,
    IdempotencyInProgress,
    IdempotencyMismatch,
    NotAllowed,
    decide_by_numbers,
    decision_scope,
    once,
)
from tasks.buyer_claims import DOCUMENT_KIND_RU
from tasks.documents import read as read_document
from tasks.emails import basis_ru, rub
from tasks.intake import STATE_LABELS_RU, ClaimInput, decide, refuse_false_documents

MSK = ZoneInfo("Europe/Moscow")  # the operator's day: deadlines in working days are counted from it


Now = Annotated[datetime, Depends(clock)]

# --- the page's session: a signed cookie (itsdangerous), HttpOnly, SameSite=Lax, Secure on https ---------

SESSION_COOKIE = "vz_session"
SESSION_SECONDS = 12 * 3600  # a working day; then the page asks to sign in again


def _serializer() -> URLSafeTimedSerializer:
    # Derived from the bank-details key (VOZVRAT_SECRET_KEY): one secret to rotate, not a second one to forget.
    key = sha256(b"vozvrat-organizer-session:" + secret_keys()[0].encode()).hexdigest()
    return URLSafeTimedSerializer(key, salt="organizer-page")


def session_cookie_value(user_id: int | None, csrf: str | None = None) -> str:
    """A signed session value (the current time is its issue time)."""
    return _serializer().dumps({"u": user_id, "c": csrf or secrets.token_urlsafe(24)})


def _set_session(request: Request, response: Response, value: str) -> None:
    response.set_cookie(SESSION_COOKIE, value, max_age=SESSION_SECONDS, httponly=True, samesite="lax",
                        secure=request.url.scheme == "https", path="/organizer")


def load_session(request: Request) -> None:
    """Reads the session cookie: `request.state.session` ({"u": user id, "c": csrf}), `request.state.principal`
    for a signed-in, still active user, `request.state.session_expired` when the cookie has run out."""
    request.state.session, request.state.session_expired = None, False
    raw = request.cookies.get(SESSION_COOKIE)
    if not raw:
        return
    try:
        data = _serializer().loads(raw, max_age=SESSION_SECONDS)
    except SignatureExpired:
        request.state.session_expired = True
        return
    except BadSignature:
        return
    if not isinstance(data, dict):
        return
    request.state.session = data
    if data.get("u"):
        with get_engine().connect() as conn:
            user = get_user(conn, int(data["u"]))
        if user is not None:
            request.state.principal = user_principal(user)


# --- who may do what -------------------------------------------------------------------------------

Reader = Annotated[Principal, Depends(requires("organizer", "staff", roles=("support", "supervisor")))]
Decider = Annotated[Principal, Depends(requires("organizer", "staff", roles=("supervisor",)))]


def read_scope(principal: Principal) -> int | None:
    """The organizer whose claims the principal reads; None: every organizer's (support, supervisor)."""
    return principal.organizer_id if principal.kind == "organizer" else None


def _today(now: datetime) -> date:
    return now.astimezone(MSK).date()


def _not_found(field: str = "number") -> HTTPException:
    return HTTPException(404, detail=[{"loc": ["path", field], "msg": "Заявка не найдена.", "type": "not_found"}])


router = APIRouter()
reads = APIRouter(dependencies=[Depends(load_session)])  # GETs: the page's cookie works too

CLAIM_NUMBER = re.compile(r"[A-Za-z0-9-]{1,40}")
NumberPath = Annotated[str, Path(min_length=1, max_length=40, pattern=r"^[A-Za-z0-9-]+$",
                                 description="Номер заявки (VZ-0000001-1); для старых клиентов — id.")]
REASONS = Literal["voluntary", "illness", "death", "other", "postponed", "cancelled", "replaced"]
STATES = Literal[tuple(s.value for s in ClaimState)]  # type: ignore[valid-type]


# The JSON models take their fields from models/organizer_views.py (one definition); no docstrings here:
# a model's docstring would become its description in the OpenAPI document.
class ClaimSummary(ClaimRow):  # a claim in a list

    @classmethod
    def of(cls, row: ClaimRow) -> ClaimSummary:
        return cls(**row.model_dump())


class ClaimList(BaseModel):
    items: list[ClaimSummary]
    total: int
    next_cursor: str | None = Field(description="Передайте в `cursor`, чтобы получить следующую страницу")


class DocumentOut(DocumentFacts):
    download_url: str | None


class AmountOut(BaseModel):
    amount_kopecks: int
    approved_kopecks: int | None
    quote: dict[str, Any]
    basis_ru: str = Field(description="Как посчитана сумма: правило, по которому она определена")


class ClaimOut(ClaimRecord, ClaimSummary):  # one claim in full: its list row, its own facts, the amount and rule, documents, history
    amount: AmountOut
    documents: list[DocumentOut]
    history: list[dict[str, Any]]


def _claim_out(detail: ClaimDetail) -> ClaimOut:
    number = detail.row.number
    docs = [DocumentOut(**d.model_dump(exclude={"has_file"}), download_url=f"/organizer/claims/{number}/documents/{d.id}" if d.has_file else None)
            for d in detail.documents]
    amount = AmountOut(amount_kopecks=detail.row.amount_kopecks, approved_kopecks=detail.approved_amount, quote=detail.quote,
                       basis_ru=basis_ru(detail.quote | {"reason": detail.row.reason}))
    record = {name: getattr(detail, name) for name in ClaimRecord.model_fields}
    return ClaimOut(**detail.row.model_dump(), **record, amount=amount, documents=docs, history=detail.history)


@reads.get("/organizer/claims", response_model=ClaimList, responses=errors(401, 403, 422, 503))
def organizer_claims(
    principal: Reader,
    now: Now,
    state: Annotated[list[STATES] | None, Query(description="Состояния; по умолчанию ждущие решения")] = None,
    event_id: Annotated[int | None, Query(gt=0, le=2**31 - 1)] = None,
    reason: REASONS | None = None,
    overdue: bool | None = Query(None, description="true: срок решения прошёл; false: ещё не прошёл"),
    due_within_days: Annotated[int | None, Query(ge=0, le=60, description="Срок решения не позже чем через N рабочих дней")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    cursor: Annotated[str | None, Query(max_length=200, pattern=r"^[A-Za-z0-9_-]+$")] = None,
) -> ClaimList:
    """Claims waiting for a decision (or in `state`), newest deadline first; scoped to the caller's events."""
    where = ClaimFilter(states=tuple(state) if state else WAITING_STATES, event_id=event_id, reason=reason, overdue=overdue,
                        due_within_days=due_within_days)
    try:
        with get_engine().connect() as conn:
            page = list_claims(conn, organizer_id=read_scope(principal), today=_today(now), where=where, limit=limit, cursor=cursor)
    except BadCursor:
        raise HTTPException(422, detail=[{"loc": ["query", "cursor"], "msg": "Неверный курсор страницы.", "type": "value_error"}]) from None
    return ClaimList(items=[ClaimSummary.of(r) for r in page.items], total=page.total, next_cursor=page.next_cursor)


@reads.get("/organizer/claims/{number}", response_model=ClaimOut, responses=errors(401, 403, 404, 422, 503))
def organizer_claim(number: NumberPath, principal: Reader, now: Now) -> ClaimOut:
    """One claim in full: reason, description, documents, buyer, amount and its rule, deadline, version, history."""
    with get_engine().connect() as conn:
        detail = read_claim_detail(conn, ref=number, organizer_id=read_scope(principal), today=_today(now))
    if detail is None:
        raise _not_found()
    return _claim_out(detail)


@reads.get("/organizer/claims/{number}/documents/{doc_id}", responses=errors(401, 403, 404, 422, 503) | {
    200: {"description": "Файл документа (PDF, JPEG, PNG)", "content": {"application/pdf": {}, "image/jpeg": {}, "image/png": {}}}})
def organizer_document(number: NumberPath, doc_id: Annotated[int, Path(gt=0, le=2**31 - 1)], principal: Reader) -> Response:
    """A claim's document file, served only to the claim's organizer and to staff who read claims."""
    with get_engine().connect() as conn:
        found = document_file(conn, ref=number, document_id=doc_id, organizer_id=read_scope(principal))
    if found is None:
        raise HTTPException(404, detail=[{"loc": ["path", "doc_id"], "msg": "Документ не найден.", "type": "not_found"}])
    digest, content_type, filename = found
    try:
        data = read_document(digest)
    except FileNotFoundError:
        raise HTTPException(404, detail=[{"loc": ["path", "doc_id"], "msg": "Файл документа не найден в хранилище.", "type": "not_found"}]) from None
    ext = {"application/pdf": "pdf", "image/jpeg": "jpg", "image/png": "png"}.get(content_type, "bin")
    return Response(data, media_type=content_type, headers={
        "Content-Disposition": f'attachment; filename="{number}-{doc_id}.{ext}"', "X-Content-Type-Options": "nosniff",
        "Cache-Control": "private, no-store"})


# --- one claim: decide, extend, false documents (bearer only) ------------------------------------------

class Decision(BaseModel):
    decision: Literal["approve", "reject"]
    amount_kopecks: int | None = Field(default=None, ge=0, le=MAX_KOPECKS)
    note: str = Field(default="", max_length=2000)
    expected_version: int | None = Field(default=None, ge=1)


class Extension(BaseModel):
    reason: str = Field(min_length=1, max_length=2000)


class DecisionPublic(BaseModel):
    claim_id: int
    number: str
    state: str
    resumed: bool


class FalseDocuments(BaseModel):
    note: str = Field(min_length=1, max_length=2000, pattern=r"^[^\x00]*$", description="What is false: kept in the claim's audit trail")
    document_ids: list[Annotated[int, Field(gt=0, lt=2**31)]] | None = Field(
        default=None, min_length=1, max_length=100, description="The documents judged false; all of the claim's when omitted")
    expected_version: int | None = Field(default=None, ge=1, lt=2**31)


def _scope(principal: Principal) -> int | None:
    return decision_scope(principal)


@router.post("/organizer/claims/{claim_id}/decision", response_model=DecisionPublic, responses=errors(401, 403, 404, 409, 422, 503))
def decide_claim(claim_id: ClaimId, body: Decision, principal: Decider, now: Now) -> DecisionPublic:
    result = decide(get_engine(), claim_id=claim_id, organizer_id=_scope(principal), now=now, expected_version=body.expected_version,
                    actor=principal.audit, decision=ClaimInput(decision=body.decision, amount_kopecks=body.amount_kopecks, note=body.note))
    return DecisionPublic(**result.__dict__)


@router.post("/organizer/claims/{claim_id}/extension", response_model=DecisionPublic, responses=errors(401, 403, 404, 409, 422, 503))
def extend_review(claim_id: ClaimId, body: Extension, principal: Decider, now: Now) -> DecisionPublic:
    result = decide(get_engine(), claim_id=claim_id, organizer_id=_scope(principal), now=now, actor=principal.audit,
                    decision=ClaimInput(decision="extend", note=body.reason))
    return DecisionPublic(**result.__dict__)


@router.post("/organizer/claims/{claim_id}/false-documents", response_model=DecisionPublic, responses=errors(401, 403, 404, 409, 422, 503))
def refuse_documents(claim_id: ClaimId, body: FalseDocuments, principal: Decider, now: Now) -> DecisionPublic:
    """The organizer judges the claim's documents false: the claim is refused with DOCUMENTS_FALSE (Decree 1491)."""
    result = refuse_false_documents(get_engine(), claim_id=claim_id, organizer_id=_scope(principal), now=now, note=body.note,
                                    document_ids=body.document_ids, expected_version=body.expected_version, actor=principal.audit)
    return DecisionPublic(**result.__dict__)


# --- many claims -------------------------------------------------------------------------------------

ClaimNumber = Annotated[str, Field(min_length=1, max_length=40, pattern=r"^[A-Za-z0-9-]+$")]


class BulkDecision(BaseModel):
    numbers: list[ClaimNumber] = Field(min_length=1, max_length=MAX_CLAIMS, description="Номера заявок (VZ-…), до 10 000")
    decision: Literal["approve", "reject", "extend"]
    note: Text = Field(default="", max_length=2000, description="Причина отказа или продления: покупатель увидит её в письме")
    reason_code: Literal[tuple(REJECT_REASONS)] | None = Field(default=None, description="Код причины отказа")  # type: ignore[valid-type]
    amounts: dict[ClaimNumber, Annotated[int, Field(gt=0, le=MAX_KOPECKS)]] = Field(
        default_factory=dict, max_length=MAX_CLAIMS, description="Только approve: согласованная сумма для заявок «Прочее», в копейках")

    def request(self) -> BulkRequest:
        return BulkRequest(numbers=tuple(self.numbers), decision=self.decision, note=self.note, reason_code=self.reason_code,
                           amounts=self.amounts)


class BulkResult(BaseModel):
    number: str
    outcome: Literal["decided", "refused"]
    state: str | None = None
    type: str | None = None
    msg: str | None = None


class BulkDecisionOut(BaseModel):
    decision: str
    decided_by: str
    requested: int
    decided: int
    refused: int
    approved_kopecks: int
    approved_rub: str
    resumes_queued: int
    results: list[BulkResult]


def _idempotent_bulk(principal: Principal, request: BulkRequest, key: str | None, now: datetime) -> tuple[dict[str, Any], bool]:
    engine = get_engine()

    def compute() -> dict[str, Any]:
        return decide_by_numbers(engine, request, principal=principal, now=now)

    if key is None:
        return compute(), False
    try:
        return once(engine, key=key, principal=principal, request_sha256=request.digest(), now=now, compute=compute)
    except IdempotencyMismatch:
        raise HTTPException(422, detail=[{"loc": ["header", "idempotency-key"], "type": "idempotency_key_reused",
                                          "msg": "Этот Idempotency-Key уже использован для другого запроса."}]) from None
    except IdempotencyInProgress:
        raise HTTPException(409, detail=[{"loc": ["header", "idempotency-key"], "type": "in_progress",
                                          "msg": "Запрос с этим Idempotency-Key ещё выполняется; повторите позже."}],
                            headers={"Retry-After": "2"}) from None


@router.post("/organizer/decisions", response_model=BulkDecisionOut, responses=errors(401, 403, 409, 422, 503))
def bulk_decide(
    body: BulkDecision,
    principal: Decider,
    now: Now,
    idempotency_key: Annotated[str | None, Header(min_length=1, max_length=200, pattern=r"^[\x21-\x7e]+$",
                                                  description="Ключ клиента: повтор с тем же ключом вернёт тот же ответ")] = None,
) -> JSONResponse:
    """One decision for up to 10,000 claims by number, applied with one batch transition; a result for each claim.

    approve (with `amounts` for «Прочее» claims), reject (reason code and message), extend (to 20
    working days, with a reason). Claims not found or another organizer's, already decided, or in a
    state that takes no such decision come back in `results` with the reason. The decided claims'
    runs are resumed in the background by the run starter. With an Idempotency-Key, a repeat returns
    the first answer (header `Idempotent-Replayed: true`); the same key with another body is 422.
    """
    try:
        answer, replayed = _idempotent_bulk(principal, body.request(), idempotency_key, now)
    except NotAllowed:
        raise HTTPException(403, detail=[{"loc": ["header", "authorization"], "msg": "Недостаточно прав для этого действия.",
                                          "type": "forbidden"}]) from None
    return JSONResponse(answer, headers={"Idempotent-Replayed": "true"} if replayed else None)


# --- the organizer page -----------------------------------------------------------------------------

templates = Jinja2Templates(directory=str(FilePath(__file__).parent / "templates"))
templates.env.filters["rub"] = rub


def _local(value: datetime, zone: str, pattern: str = "%d.%m.%Y %H:%M") -> str:
    """An event's start in its venue's zone (stored in UTC): 19:00 in Moscow is shown as 19:00, not 16:00 UTC."""
    return value.astimezone(ZoneInfo(zone)).strftime(pattern)


templates.env.filters["local"] = _local
templates.env.filters["document_kind_ru"] = lambda kind: DOCUMENT_KIND_RU.get(kind, kind)
pages = APIRouter(include_in_schema=False, dependencies=[Depends(load_session)])

REASON_LABELS_RU = {
    "voluntary": "по собственной инициативе", "illness": "болезнь", "death": "смерть близкого", "other": "прочее",
    "postponed": "перенос", "cancelled": "отмена", "replaced": "замена",
}
DECISION_LABELS_RU = {"approve": "Одобрить возврат", "reject": "Отказать", "extend": "Продлить срок до 20 рабочих дней"}
PAGE_SIZE = 200


class PageRedirect(Exception):
    """Raised by page dependencies: go to the login page (not signed in, or the session expired)."""

    def __init__(self, url: str):
        self.url = url


class PageForbidden(Exception):
    """Signed in, but the role may not see this page."""


async def page_redirect(_: Request, exc: PageRedirect) -> Response:
    return RedirectResponse(exc.url, status_code=303)


async def page_forbidden(request: Request, _: PageForbidden) -> Response:
    return templates.TemplateResponse(request, "organizer/forbidden.html", {"principal": request.state.principal}, status_code=403)


def _login_url(request: Request, expired: bool) -> str:
    query = {"next": request.url.path + (f"?{request.url.query}" if request.url.query else "")}
    if expired:
        query["expired"] = "1"
    return "/organizer/login?" + urlencode(query)


def page_principal(request: Request) -> Principal:
    principal = getattr(request.state, "principal", None)
    if principal is None:
        raise PageRedirect(_login_url(request, request.state.session_expired))
    if principal.kind not in ("organizer", "staff") or (principal.kind == "staff" and principal.role not in ("support", "supervisor")):
        raise PageForbidden()
    return principal


PageUser = Annotated[Principal, Depends(page_principal)]


def _csrf(request: Request) -> str:
    return (request.state.session or {}).get("c", "")


class PageStale(Exception):
    """A page's form without the session's CSRF token (stale, or from another site): nothing is done."""


async def page_stale(request: Request, _: PageStale) -> Response:
    return _render(request, "organizer/error.html", {"error": "Форма устарела: обновите страницу и повторите."}, status=403)


def _check_csrf(request: Request, sent: str | None) -> None:
    expected = _csrf(request)
    if not expected or not sent or not secrets.compare_digest(expected, sent):
        raise PageStale()


def _may_decide(principal: Principal) -> bool:
    return principal.kind == "organizer" or principal.is_staff("supervisor")


def _render(request: Request, name: str, context: dict[str, Any], status: int = 200) -> HTMLResponse:
    base = {"principal": getattr(request.state, "principal", None), "csrf": _csrf(request), "reasons": REASON_LABELS_RU,
            "states": STATE_LABELS_RU, "decisions": DECISION_LABELS_RU, "reject_reasons": REJECT_REASONS}
    response = templates.TemplateResponse(request, name, base | context, status_code=status)
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "DENY"
    return response


@pages.get("/organizer/login")
def login_page(request: Request, next: str = "/organizer", expired: bool = False) -> HTMLResponse:
    csrf = _csrf(request) or secrets.token_urlsafe(24)
    response = _render(request, "organizer/login.html", {"csrf": csrf, "next": _safe_next(next), "expired": expired, "error": None})
    if not _csrf(request):
        _set_session(request, response, session_cookie_value(None, csrf))
    return response


def _safe_next(target: str) -> str:
    """Only a path of this page after signing in: never another site."""
    return target if target.startswith("/organizer") and not target.startswith("//") else "/organizer"


@pages.post("/organizer/login")
async def login(request: Request) -> Response:
    form = await request.form()
    _check_csrf(request, str(form.get("csrf", "")))
    login_name, password = str(form.get("login", "")), str(form.get("password", ""))
    user = authenticate(get_engine(), login_name, password) if login_name and password else None
    if user is None:
        return _render(request, "organizer/login.html", {"next": _safe_next(str(form.get("next", ""))), "expired": False,
                                                         "error": "Неверный логин или пароль."}, status=401)
    response = RedirectResponse(_safe_next(str(form.get("next", ""))), status_code=303)
    _set_session(request, response, session_cookie_value(user.id))  # a fresh session and CSRF token at sign-in
    return response


@pages.post("/organizer/logout")
async def logout(request: Request) -> Response:
    form = await request.form()
    _check_csrf(request, str(form.get("csrf", "")))
    response = RedirectResponse("/organizer/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/organizer")
    return response


def _page_filter(request: Request) -> tuple[ClaimFilter, dict[str, str]]:
    q = request.query_params
    chosen = {k: q.get(k, "") for k in ("event_id", "reason", "state", "deadline")}
    state = chosen["state"] if chosen["state"] in {s.value for s in ClaimState} else ""
    reason = chosen["reason"] if chosen["reason"] in {r.value for r in Reason} else ""
    event_id = int(chosen["event_id"]) if chosen["event_id"].isdigit() and 0 < int(chosen["event_id"]) < 2**31 else None
    deadline = chosen["deadline"]
    overdue = True if deadline == "overdue" else None
    within = int(deadline.removeprefix("within")) if deadline.startswith("within") and deadline[6:].isdigit() else None
    where = ClaimFilter(states=(state,) if state else WAITING_STATES, event_id=event_id, reason=reason or None, overdue=overdue,
                        due_within_days=min(within, 60) if within is not None else None)
    return where, chosen


@pages.get("/organizer")
def claims_page(request: Request, principal: PageUser, now: Now, cursor: str | None = None) -> HTMLResponse:
    where, chosen = _page_filter(request)
    scope = read_scope(principal)
    try:
        with get_engine().connect() as conn:
            page = list_claims(conn, organizer_id=scope, today=_today(now), where=where, limit=PAGE_SIZE, cursor=cursor)
    except BadCursor:
        return RedirectResponse("/organizer", status_code=303)  # type: ignore[return-value]
    next_url = None
    if page.next_cursor:
        next_url = "/organizer?" + urlencode({k: v for k, v in chosen.items() if v} | {"cursor": page.next_cursor})
    return _render(request, "organizer/claims.html", {"page": page, "chosen": chosen, "next_url": next_url,
                                                       "may_decide": _may_decide(principal), "today": _today(now)})


@pages.get("/organizer/claim/{number}")
def claim_page(request: Request, number: str, principal: PageUser, now: Now) -> HTMLResponse:
    detail = None
    if CLAIM_NUMBER.fullmatch(number):  # anything else is no claim: the page says so (not a JSON error)
        with get_engine().connect() as conn:
            detail = read_claim_detail(conn, ref=number, organizer_id=read_scope(principal), today=_today(now))
    if detail is None:
        return _render(request, "organizer/not_found.html", {}, status=404)
    return _render(request, "organizer/claim.html", {"c": _claim_out(detail), "may_decide": _may_decide(principal)})


async def _decision_form(request: Request, principal: Principal) -> tuple[BulkRequest | None, str | None, Any]:
    """The selected numbers and the action from a page form; (None, error) when something is missing."""
    form = await request.form(max_fields=MAX_CLAIMS + 50, max_files=0)
    _check_csrf(request, str(form.get("csrf", "")))
    if not _may_decide(principal):
        raise PageForbidden()
    numbers = tuple(dict.fromkeys(str(n) for n in form.getlist("numbers") if str(n).strip()))
    action = str(form.get("decision", ""))
    note = str(form.get("note", "")).strip()
    reason_code = str(form.get("reason_code", "")) or None
    if not numbers:
        return None, "Не выбрано ни одной заявки.", form
    if len(numbers) > MAX_CLAIMS:
        return None, f"Не больше {MAX_CLAIMS} заявок за один раз.", form
    if action not in DECISION_LABELS_RU:
        return None, "Выберите действие: одобрить, отказать или продлить срок.", form
    if action in ("reject", "extend") and not note:
        return None, "Укажите причину: покупатель увидит её в письме.", form
    if len(note) > 2000:
        return None, "Слишком длинный текст причины.", form
    if action != "reject":
        reason_code = None
    elif reason_code not in REJECT_REASONS:
        return None, "Выберите причину отказа.", form
    return BulkRequest(numbers=numbers, decision=action, note=note, reason_code=reason_code), None, form  # type: ignore[arg-type]


@pages.post("/organizer/confirm")
async def confirm_page(request: Request, principal: PageUser) -> HTMLResponse:
    """How many claims and how much money the action moves, before anything is done."""
    bulk, error, _ = await _decision_form(request, principal)
    if bulk is None:
        return _render(request, "organizer/error.html", {"error": error}, status=422)
    with get_engine().connect() as conn:
        found = claims_by_number(conn, list(bulk.numbers), organizer_id=read_scope(principal))
    # Only claims still open for a decision count: a claim decided already (say, in another tab) moves no money now.
    open_ = {n: v for n, v in found.items() if v[1] not in DECIDED_STATES}
    missing, decided = len(bulk.numbers) - len(found), len(found) - len(open_)
    if not open_:
        why = ", ".join(part for part in (f"не найдено: {missing}" if missing else "", f"решение уже принято: {decided}" if decided else "") if part)
        return _render(request, "organizer/error.html", {"error": f"Среди выбранных нет заявок, по которым можно принять решение ({why})."},
                       status=422)
    total = sum(amount for _, _, amount in open_.values())
    return _render(request, "organizer/confirm.html", {
        "bulk": bulk, "count": len(open_), "missing": missing, "decided": decided, "total_kopecks": total,
        "idempotency_key": str(uuid.uuid4()),
    })


@pages.post("/organizer/decide")
async def decide_page(request: Request, principal: PageUser, now: Now) -> HTMLResponse:
    """Applies the confirmed action once (the confirmation carries its own idempotency key) and shows each claim's result."""
    bulk, error, form = await _decision_form(request, principal)
    if bulk is None:
        return _render(request, "organizer/error.html", {"error": error}, status=422)
    key = str(form.get("idempotency_key", "")) or None
    try:
        answer, replayed = _idempotent_bulk(principal, bulk, f"page:{key}" if key else None, now)
    except HTTPException as exc:
        return _render(request, "organizer/error.html", {"error": exc.detail[0]["msg"]}, status=exc.status_code)  # type: ignore[index]
    return _render(request, "organizer/result.html", {"answer": answer, "replayed": replayed})


router.include_router(reads)
router.include_router(pages)


def install(app) -> None:
    """The organizers' routes and the page's handlers (to the login page when signed out; a 403 page)."""
    app.include_router(router)
    app.add_exception_handler(PageRedirect, page_redirect)
    app.add_exception_handler(PageForbidden, page_forbidden)
    app.add_exception_handler(PageStale, page_stale)
