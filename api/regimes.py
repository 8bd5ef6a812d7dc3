"""Postponements, high-alert regimes (Decree 442) and vouchers over HTTP.

- POST /events/{id}/postponement (the event's organizer or a staff supervisor): the change recorded with its
  history, every buyer told; GET /events/{id}/changes: that history.
- POST /events/{id}/vouchers (the event's organizer or a staff supervisor): every ticket holder of a regime event gets a voucher.
- /regimes: staff list them; staff supervisors declare and end regimes of a region.
- POST /vouchers (the buyer, or the operator's site for them): a voucher instead of money for one ticket;
  GET /vouchers/{number} and POST /vouchers/{number}/redemption (the sales system's key, or staff).

Errors have the API's one shape, {"detail": [{"loc", "msg", "type"}]}, with Russian messages;
audit rows and event history record `principal.audit`, never a name the client typed.
"""
from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from api.auth import Buyerish, OrganizerOrStaff, Staff, requires
from api.errors import MAX_ID, ErrorResponse, Text, errors
from models.db import get_engine
from tasks.auth import Principal
from tasks.postponement import event_history, notify_postponement, record_postponement
from tasks.regimes import RegimeInputError, add_regime, end_regime, list_regimes
from tasks.vouchers import issue_event_vouchers, read_voucher, redeem_voucher, take_voucher

router = APIRouter(tags=["regimes"])


def clock() -> datetime:
    """This router's clock seam (tests override it, as they do api.app.clock)."""
    return datetime.now(UTC)


Now = Annotated[datetime, Depends(clock)]
EventId = Annotated[int, Path(gt=0, le=MAX_ID, description="Мероприятие (id).")]
VoucherNumber = Annotated[str, Path(min_length=6, max_length=40, pattern=r"^[A-Za-z0-9-]+$", description="Номер ваучера.")]
ServiceOrStaff = Annotated[Principal, Depends(requires("service", "staff"))]
# Acts on every ticket holder of an event (mass notices, vouchers): the event's organizer or a staff supervisor,
# as for a cancellation (api/events.py); support and accounting may read, not act.
EventActor = Annotated[Principal, Depends(requires("organizer", "staff", roles=("supervisor",)))]
# Declaring or ending a regime changes the refund rule of a whole region: staff supervisors only.
Supervisor = Annotated[Principal, Depends(requires("staff", roles=("supervisor",)))]


def responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """api.errors.errors, plus the 401 / 403 (api/auth.py) and 422 every route here may answer."""
    out = errors(*sorted({401, 422, *codes}))
    out[403] = {"model": ErrorResponse, "description": "Недостаточно прав для этого действия."}
    return out


def _own(principal: Principal) -> int | None:
    """An organizer acts on their own events only; staff on any."""
    return principal.organizer_id if principal.kind == "organizer" else None


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PostponementCreate(Strict):
    new_starts_at: AwareDatetime | None = Field(default=None, description="Новая дата и время, с часовым поясом; пусто: дата будет объявлена позже")
    claims_until: date | None = Field(default=None, description="Последний день приёма заявок на возврат по причине переноса")
    note: Text = Field(default="", max_length=1000)


class RegimeCreate(Strict):
    region: str = Field(min_length=1, max_length=100)
    starts_on: date
    ends_on: date | None = None


class RegimeEnd(Strict):
    ends_on: date


class VoucherRequest(Strict):
    ticket_id: int = Field(gt=0, le=MAX_ID)


class Redemption(Strict):
    event_id: int = Field(gt=0, le=MAX_ID)


@router.post("/events/{event_id}/postponement", status_code=201, responses=responses(404, 409, 422, 503))
def postpone_event(event_id: EventId, body: PostponementCreate, principal: EventActor, now: Now) -> dict[str, Any]:
    """Postpone the event (again, possibly): tickets stay valid for the new date; every buyer is told
    the new date, their options and the rule that applies (Art. 52.1, or Decree 442 under a regime)."""
    engine = get_engine()
    done = record_postponement(engine, event_id=event_id, new_starts_at=body.new_starts_at, claims_until=body.claims_until,
                               actor=principal.audit, now=now, organizer_id=_own(principal), note=body.note)
    told = notify_postponement(engine, change_id=done.change_id, now=now, started_by=principal.audit)
    return done.to_json() | {"notices_written": told}


@router.get("/events/{event_id}/changes", responses=responses(404, 503))
def event_changes(event_id: EventId, principal: OrganizerOrStaff) -> list[dict[str, Any]]:
    return event_history(get_engine(), event_id=event_id, organizer_id=_own(principal))


@router.post("/events/{event_id}/vouchers", responses=responses(404, 409, 422, 503))
def exchange_event_tickets(event_id: EventId, principal: EventActor, now: Now) -> dict[str, Any]:
    """Decree 442: every ticket of the event not refunded yet is exchanged for a voucher (the organizer's
    policy must offer vouchers). For a stadium, the flow event-postponement does this with progress."""
    return issue_event_vouchers(get_engine(), event_id=event_id, actor=principal.audit, now=now, organizer_id=_own(principal))


@router.post("/regimes", status_code=201, responses=responses(409, 422, 503))
def declare_regime(body: RegimeCreate, principal: Supervisor, now: Now) -> dict[str, Any]:
    return add_regime(get_engine(), region=body.region, starts_on=body.starts_on, ends_on=body.ends_on, actor=principal.audit, now=now).to_json()


@router.post("/regimes/{regime_id}/end", responses=responses(404, 422, 503))
def finish_regime(regime_id: Annotated[int, Path(gt=0, le=MAX_ID)], body: RegimeEnd, principal: Supervisor, now: Now) -> dict[str, Any]:
    return end_regime(get_engine(), regime_id=regime_id, ends_on=body.ends_on, actor=principal.audit, now=now).to_json()


@router.get("/regimes", responses=responses(503))
def regimes(principal: Staff, region: Annotated[str | None, Query(max_length=100, description="Только этот регион: 77 или RU-MOW.")] = None,
            ) -> list[dict[str, Any]]:
    try:
        return [r.to_json() for r in list_regimes(get_engine(), region=region)]
    except RegimeInputError as exc:  # a query parameter, not the body
        raise HTTPException(422, detail=[{"loc": ["query", "region"], "msg": exc.message_ru, "type": exc.code}]) from None


@router.post("/vouchers", status_code=201, responses=responses(404, 409, 422, 503))
def request_voucher(body: VoucherRequest, principal: Buyerish, now: Now) -> dict[str, Any]:
    """A voucher instead of money for one ticket of an event cancelled or postponed under a regime,
    when the organizer offers vouchers; the email with its number is queued with it."""
    order = principal.order_number if principal.kind == "buyer" else None
    return take_voucher(get_engine(), ticket_id=body.ticket_id, actor=principal.audit, now=now, order_number=order).to_json()


@router.get("/vouchers/{number}", responses=responses(404, 503))
def voucher(number: VoucherNumber, principal: ServiceOrStaff) -> dict[str, Any]:
    return read_voucher(get_engine(), number).to_json()


@router.post("/vouchers/{number}/redemption", responses=responses(404, 409, 422, 503))
def redeem(number: VoucherNumber, body: Redemption, principal: ServiceOrStaff, now: Now) -> dict[str, Any]:
    """The holder used the voucher for another event of the same organizer (the sales system reports it)."""
    return redeem_voucher(get_engine(), number=number, event_id=body.event_id, actor=principal.audit, now=now).to_json()
