"""Mass paths in the API: cancel or replace an event (`POST /events/{event_id}/cancellation`) and the
second-person approval of mass sends (`/mass-sends…`).

The cancellation is checked here (the event's organizer or a staff supervisor; the action must apply
to the event's status) and answered 202 with the run that will carry it out: one `mass-cancellation`
flow run, created with one call to the Prefect server (bounded: 503 when it does not answer). The run
records `principal.audit` as who started it; every claim, audit row and mass send follows from that.
"""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from api.auth import OrganizerOrStaff, requires
from api.errors import MAX_ID, ErrorResponse
from models.db import get_engine
from tasks.auth import Principal
from tasks.mass import MassRefused, check_start
from tasks.mass_sends import (
    MassSendRefused,
    approve_mass_send,
    buyer_not_told,
    get_mass_send,
    list_mass_sends,
    reject_mass_send,
    render_sample,
    resend_mass_send,
)
from tasks.mass_steps import RunNotStarted, start_run

router = APIRouter()
EventId = Annotated[int, Path(gt=0, le=MAX_ID, description="Мероприятие (id).")]
MassSendId = Annotated[int, Path(gt=0, le=MAX_ID, description="Массовая рассылка (id).")]
Supervisor = Annotated[Principal, Depends(requires("staff", roles=("supervisor",)))]
Resender = Annotated[Principal, Depends(requires("staff", roles=("support", "supervisor")))]
AnyStaff = Annotated[Principal, Depends(requires("staff"))]


_DESCRIPTIONS = {
    401: "Нет ключа или он не распознан.",
    403: "Недостаточно прав: нужен организатор мероприятия или старший смены (supervisor).",
    404: "Мероприятие или рассылка не найдены.",
    409: "Конфликт: действие не применяется к текущему статусу, мероприятие уже состоялось или уже отменено (массовый возврат завершён), "
         "или одобрить рассылку должен другой сотрудник.",
    422: "Неверные данные: ошибка по каждому полю, сообщения на русском.",
    503: "Оркестратор (Prefect) или база данных недоступны; ничего не запущено.",
}


def errors(*codes: int) -> dict[int | str, dict]:
    return {code: {"model": ErrorResponse, "description": _DESCRIPTIONS[code]} for code in codes}


def clock() -> datetime:
    """This router's clock seam; tests override the dependency."""
    return datetime.now(UTC)


Now = Annotated[datetime, Depends(clock)]


def _refused(status: int, loc: list, message: str, type_: str) -> HTTPException:
    return HTTPException(status, detail=[{"loc": loc, "msg": message, "type": type_}])


class Cancellation(BaseModel):
    model_config = ConfigDict(str_strip_whitespace=True, extra="forbid")

    action: Literal["cancelled", "replaced"] = Field(default="cancelled", description="cancelled: мероприятие отменено; replaced: заменено")
    reason: str = Field(min_length=1, max_length=500, pattern=r"^[^\x00-\x08\x0b\x0c\x0e-\x1f]*$",
                        description="Причина: её увидят покупатели, она остаётся в журнале")


class CancellationStarted(BaseModel):
    event_id: int
    action: str
    flow_run_id: str
    prefect_url: str
    started_by: str


@router.post("/events/{event_id}/cancellation", status_code=202, response_model=CancellationStarted,
             responses=errors(401, 403, 404, 409, 422, 503))
async def cancel_event(event_id: EventId, body: Cancellation, principal: OrganizerOrStaff, now: Now) -> CancellationStarted:
    """Cancel or replace an event: one mass-cancellation run refunds every valid ticket (202: started)."""
    try:
        check_start(get_engine(), event_id=event_id, action=body.action, reason=body.reason, principal=principal, now=now)
    except MassRefused as exc:
        loc = ["body", "reason"] if exc.code == "REASON_MISSING" else ["path", "event_id"]
        raise _refused(exc.status, loc, exc.message_ru, exc.code.lower()) from None
    try:
        run_id, url = await start_run(event_id=event_id, action=body.action, reason=body.reason, started_by=principal.audit)
    except RunNotStarted:
        raise HTTPException(503, detail=[{"loc": [], "msg": "Оркестратор (Prefect) не ответил: запуск не создан, повторите позже.",
                                          "type": "orchestrator_unavailable"}], headers={"Retry-After": "30"}) from None
    return CancellationStarted(event_id=event_id, action=body.action, flow_run_id=run_id, prefect_url=url, started_by=principal.audit)


class MassSendPublic(BaseModel):
    id: int
    template: str
    event_id: int | None
    started_by: str
    recipient_count: int
    status: str
    status_ru: str
    approved_by: str | None
    rejected_by: str | None
    created_at: str
    approved_at: str | None
    rejected_at: str | None
    done_at: str | None
    note: str | None
    sent: int
    waiting: int
    resend_of: int | None = Field(default=None, description="Повтор отклонённой рассылки №")
    buyer_not_told: list[str] = Field(default_factory=list, description="Отклонённая рассылка: заявки, покупатель которых так и не уведомлён")
    resent_as: list[int] = Field(default_factory=list, description="Повторы этой рассылки (новые рассылки, ждущие второго сотрудника)")
    sample_recipient: str | None = None
    sample_subject: str | None = None
    sample_text: str | None = None


def _public(view, with_sample: bool = False) -> MassSendPublic:
    out = MassSendPublic(**view.to_json())
    if with_sample:
        sample = render_sample(get_engine(), view.id)
        if sample is not None:
            out.sample_recipient, out.sample_subject, out.sample_text = sample.recipient, sample.subject, sample.text
    return out


@router.get("/mass-sends", response_model=list[MassSendPublic], responses=errors(401, 403, 422))
def mass_sends(principal: Supervisor, status: Literal["held", "approved", "rejected", "sending", "done"] | None = None) -> list[MassSendPublic]:
    """Mass sends, newest first (staff supervisors)."""
    return [_public(v) for v in list_mass_sends(get_engine(), status=status)]


class UntoldClaim(BaseModel):
    claim_number: str
    mass_send_id: int = Field(description="Отклонённая рассылка, которая не ушла этому покупателю")


@router.get("/mass-sends/buyer-not-told", response_model=list[UntoldClaim], responses=errors(401, 403, 422))
def untold_claims(principal: AnyStaff, event_id: Annotated[int | None, Query(gt=0, le=MAX_ID)] = None) -> list[UntoldClaim]:
    """Claims whose buyer a rejected mass send left untold (staff): they wait for the buyer, who was never asked."""
    return [UntoldClaim(claim_number=n, mass_send_id=m) for _, n, m in buyer_not_told(get_engine(), event_id=event_id)]


@router.get("/mass-sends/{mass_send_id}", response_model=MassSendPublic, responses=errors(401, 403, 404, 422))
def mass_send(mass_send_id: MassSendId, principal: Supervisor) -> MassSendPublic:
    """One mass send with its template, recipient count and a rendered sample: what an approver must see."""
    view = get_mass_send(get_engine(), mass_send_id)
    if view is None:
        raise _refused(404, ["path", "mass_send_id"], "Рассылка не найдена.", "not_found")
    return _public(view, with_sample=True)


class Rejection(BaseModel):
    model_config = ConfigDict(str_strip_whitespace=True, extra="forbid")

    note: str | None = Field(default=None, max_length=2000, pattern=r"^[^\x00]*$", description="Почему рассылка отклонена")


def _decided(call, mass_send_id: int) -> MassSendPublic:
    try:
        return _public(call())
    except MassSendRefused as exc:
        raise _refused(exc.status, ["path", "mass_send_id"], exc.message_ru, exc.code) from None


@router.post("/mass-sends/{mass_send_id}/approve", response_model=MassSendPublic, responses=errors(401, 403, 404, 409, 422))
def approve(mass_send_id: MassSendId, principal: Supervisor, now: Now) -> MassSendPublic:
    """A second staff supervisor (not the one who started it) lets the held messages go."""
    return _decided(lambda: approve_mass_send(get_engine(), mass_send_id, principal=principal, now=now), mass_send_id)


@router.post("/mass-sends/{mass_send_id}/reject", response_model=MassSendPublic, responses=errors(401, 403, 404, 409, 422))
def reject(mass_send_id: MassSendId, principal: Supervisor, now: Now, body: Rejection | None = None) -> MassSendPublic:
    """A second staff supervisor stops the mass send: its messages never leave."""
    return _decided(lambda: reject_mass_send(get_engine(), mass_send_id, principal=principal, now=now, note=body.note if body else None),
                    mass_send_id)


@router.post("/mass-sends/{mass_send_id}/resend", status_code=201, response_model=MassSendPublic, responses=errors(401, 403, 404, 409, 422))
def resend(mass_send_id: MassSendId, principal: Resender, now: Now) -> MassSendPublic:
    """Queue a rejected send's template again for the buyers it left untold: a new held send (201) that
    another staff supervisor must approve."""
    return _decided(lambda: resend_mass_send(get_engine(), mass_send_id, principal=principal, now=now), mass_send_id)
