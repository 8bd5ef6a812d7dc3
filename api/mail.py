"""The outbound-mail kill switch for staff supervisors: `GET /mail/switch` says whether mail is held (and
by whom, since when, why), `POST /mail/switch` holds or releases it on the running stack (tasks/mail_switch.py).

Every dispatcher on every host sees the change within a second; each change leaves an audit row with the
caller's principal. The environment switch (VOZVRAT_OUTBOUND_EMAIL_ENABLED=false) is reported beside it.
"""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from api.auth import requires
from api.errors import ErrorResponse
from models.db import get_engine
from tasks.auth import Principal
from tasks.mail_switch import REASON_MAX, MailSwitchRefused, SwitchState, mail_switch_state, set_mail_switch
from tasks.outbox import email_enabled_now

router = APIRouter()
Supervisor = Annotated[Principal, Depends(requires("staff", roles=("supervisor",)))]

_DESCRIPTIONS = {
    401: "Нет ключа или он не распознан.",
    403: "Недостаточно прав: нужен старший смены (supervisor).",
    409: "Выключатель переключали одновременно: повторите запрос.",
    422: "Неверные данные: ошибка по каждому полю, сообщения на русском.",
    503: "База данных недоступна; ничего не изменено.",
}


def errors(*codes: int) -> dict[int | str, dict]:
    return {code: {"model": ErrorResponse, "description": _DESCRIPTIONS[code]} for code in codes}


def clock() -> datetime:
    """This router's clock seam; tests override the dependency."""
    return datetime.now(UTC)


Now = Annotated[datetime, Depends(clock)]


class SwitchChange(BaseModel):
    model_config = ConfigDict(str_strip_whitespace=True, extra="forbid")

    held: bool = Field(description="true: остановить всю исходящую почту; false: возобновить")
    reason: str | None = Field(default=None, max_length=REASON_MAX, pattern=r"^[^\x00-\x08\x0b\x0c\x0e-\x1f\x7f]*$",
                               description="Почему (обязательно при остановке); остаётся в журнале")


class SwitchPublic(BaseModel):
    held: bool = Field(description="Выключатель в базе данных: почта остановлена.")
    reason: str | None
    changed_by: str | None = Field(description="Кто последним переключил (Principal.audit).")
    changed_at: datetime | None
    env_held: bool = Field(description="VOZVRAT_OUTBOUND_EMAIL_ENABLED=false у процесса API (каждый процесс читает своё окружение).")
    changed: bool = Field(default=False, description="POST: выключатель переключён этим запросом (false: уже был в этом положении).")


def _public(state: SwitchState, changed: bool = False) -> SwitchPublic:
    return SwitchPublic(held=state.held, reason=state.reason, changed_by=state.changed_by, changed_at=state.changed_at,
                        env_held=not email_enabled_now(), changed=changed)


@router.get("/mail/switch", response_model=SwitchPublic, responses=errors(401, 403, 422, 503))
def mail_switch(principal: Supervisor) -> SwitchPublic:
    """Whether outbound mail is held, by whom, since when and why."""
    return _public(mail_switch_state(get_engine()))


@router.post("/mail/switch", response_model=SwitchPublic, responses=errors(401, 403, 409, 422, 503))
def throw_mail_switch(body: SwitchChange, principal: Supervisor, now: Now) -> SwitchPublic:
    """Hold (`{"held": true, "reason": "..."}`) or release (`{"held": false}`) all outbound mail, live: every
    dispatcher stops before its next message within a second. Repeating the same position changes nothing."""
    try:
        state, changed = set_mail_switch(get_engine(), held=body.held, principal=principal, now=now, reason=body.reason)
    except MailSwitchRefused as exc:
        status = 403 if exc.forbidden else 422
        raise HTTPException(status, detail=[{"loc": ["body", exc.field] if exc.field else ["principal"], "msg": exc.message_ru,
                                             "type": "forbidden" if exc.forbidden else "value_error"}]) from None
    return _public(state, changed)
