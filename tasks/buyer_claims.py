"""A buyer's view of claims: which claims and tickets a principal may touch, and a claim's status in plain
Russian («Где мои деньги»): its state, who holds it now, the deadline as a date and as working days
left, the amount and the rule it follows, the history as a timeline, and what the buyer can do next.

Buyers name claims by number, never by database id. A claim or ticket outside the principal's order
answers exactly like a missing one (NotYourClaim / IntakeError 404).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.engine import Engine

from models.claim_store import claim_t, document_t, event_t, order_t, ticket_t
from models.tables import ClaimTransition, Venue
from states.calendar import is_published, working_days_left
from states.lifecycle import ClaimState, Trigger, has_step
from states.money import format_rub, parse_rub
from states.policy import DOCUMENTED_REASONS, documents_last_day
from tasks.auth import Principal
from tasks.emails import basis_ru, reason_ru, rub
from tasks.intake import IntakeError, NotYourClaim

audit_t = ClaimTransition.__table__
venue_t = Venue.__table__


@dataclass(frozen=True)
class ClaimRef:
    id: int
    number: str
    state: str
    reason: str
    order_number: str


def claim_ref(engine: Engine, number: str, principal: Principal) -> ClaimRef:
    """The claim `number` when the principal covers its order (a service key: any; a buyer: their own)."""
    with engine.connect() as conn:
        row = conn.execute(
            select(claim_t.c.id, claim_t.c.number, claim_t.c.state, claim_t.c.reason, order_t.c.number.label("order_number"))
            .join(ticket_t, ticket_t.c.id == claim_t.c.ticket_id)
            .join(order_t, order_t.c.id == ticket_t.c.order_id)
            .where(claim_t.c.number == number)
        ).one_or_none()
    if row is None or not principal.covers_order(row.order_number):
        raise NotYourClaim(f"claim {number} not found")
    return ClaimRef(**row._mapping)


def order_of_claim(engine: Engine, number: str) -> str | None:
    """The order number of the claim `number`, or None when there is no such claim."""
    with engine.connect() as conn:
        return conn.execute(select(order_t.c.number).join(ticket_t, ticket_t.c.order_id == order_t.c.id)
                            .join(claim_t, claim_t.c.ticket_id == ticket_t.c.id).where(claim_t.c.number == number)).scalar_one_or_none()


def check_ticket(engine: Engine, ticket_id: int, principal: Principal) -> None:
    """A buyer files claims only for the tickets of their own order: another order's ticket is 404, like a missing one."""
    with engine.connect() as conn:
        order_number = conn.execute(select(order_t.c.number).join(ticket_t, ticket_t.c.order_id == order_t.c.id)
                                    .where(ticket_t.c.id == ticket_id)).scalar_one_or_none()
    if order_number is None or not principal.covers_order(order_number):
        raise IntakeError("ticket_id", "Билет не найден.", code="not_found", status=404)


# --- plain words -----------------------------------------------------------------------------------

#: The claim's state as the buyer reads it.
STATE_RU = {
    "filed": "Заявка принята, проверяем её",
    "awaiting_documents": "Ждём документы",
    "awaiting_organizer": "Ждём решения организатора",
    "escalated": "Организатор не ответил в срок, заявкой занимается оператор",
    "approved": "Возврат одобрен, готовим выплату",
    "rejected": "В возврате отказано",
    "payout_pending": "Деньги отправлены в банк",
    "payout_failed": "Выплата не прошла, повторяем",
    "needs_bank_details": "Нужны ваши банковские реквизиты",
    "paid": "Деньги выплачены",
    "voucher_issued": "Выдан ваучер",
    "withdrawn": "Заявка отозвана",
    "closed": "Заявка закрыта",
}
#: Who holds the claim now: whose move it is.
HOLDER = {
    "filed": "operator", "awaiting_documents": "buyer", "awaiting_organizer": "organizer", "escalated": "operator",
    "approved": "operator", "payout_pending": "bank", "payout_failed": "operator", "needs_bank_details": "buyer",
}
HOLDER_RU = {"buyer": "вы, покупатель", "organizer": "организатор", "operator": "оператор (служба возврата)", "bank": "банк",
             None: "никто: заявка завершена"}
TRIGGER_RU = {
    "file": "Заявка подана",
    "assess": "Заявка проверена",
    "submit_documents": "Получены документы",
    "approve": "Возврат одобрен",
    "reject": "В возврате отказано",
    "extend_review": "Организатор продлил рассмотрение",
    "escalate": "Срок решения истёк, заявку взял оператор",
    "expire_documents": "Срок отправки документов истёк",
    "withdraw": "Заявка отозвана",
    "start_payout": "Начата выплата",
    "bank_details_received": "Получены банковские реквизиты",
    "bank_details_set": "Сохранены банковские реквизиты",
    "payout_succeeded": "Деньги выплачены",
    "payout_failed": "Выплата не прошла",
    "retry_payout": "Выплата повторяется",
    "flag_payout_overdue": "Срок выплаты истёк, выплатой занимается оператор",
    "refuse_scanned": "Билет уже прошёл контроль на входе",
}
DOCUMENT_KIND_RU = {
    "sick_leave_gosuslugi": "Больничный с Госуслуг (снимок экрана)",
    "eln_copy": "Копия электронного больничного",
    "pcr_test": "Результат ПЦР-теста",
    "death_certificate": "Свидетельство о смерти",
    "other": "Другой документ",
}


def who_ru(actor: str) -> str:
    """Who took a step, in words and without anyone's internal id or login."""
    if actor.startswith("buyer"):
        return "вы"
    if actor.startswith("service:"):
        return "вы, через сайт оператора"
    if actor.startswith("organizer"):
        return "организатор"
    if actor in ("acquirer", "bank"):
        return "банк"
    if actor.startswith(("staff:", "ops", "prefect-ui")):
        return "оператор"
    return "служба возврата, автоматически"


def holder(state: str) -> str | None:
    return HOLDER.get(state)


# --- the status ------------------------------------------------------------------------------------

@dataclass
class Step:
    at: datetime
    title: str
    who: str
    state: str


@dataclass
class Deadline:
    what: str  # what must happen by then, in Russian
    due: date
    working_days_left: int
    provisional: bool


@dataclass
class ClaimStatus:
    number: str
    state: str
    state_ru: str
    holder: str | None
    holder_ru: str
    reason: str
    reason_ru: str
    event_title: str
    event_starts_at: datetime
    amount_kopecks: int
    amount_ru: str
    percent: int | None
    basis: str
    refusal_message: str | None
    deadline: Deadline | None
    history: list[Step] = field(default_factory=list)
    documents: list[dict[str, Any]] = field(default_factory=list)
    can_upload_documents: bool = False
    can_give_bank_details: bool = False
    can_withdraw: bool = False

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["amount"] = format_rub(self.amount_kopecks)
        return out


def _deadline(state: str, reason: str, row: Any, event_start: datetime, today: date) -> Deadline | None:
    if state == ClaimState.AWAITING_DOCUMENTS.value and reason in {r.value for r in DOCUMENTED_REASONS}:
        due, what = documents_last_day(event_start), "прислать документы"
    elif state in (ClaimState.AWAITING_ORGANIZER.value, ClaimState.ESCALATED.value) and row.decision_due:
        due, what = row.decision_due, "решение организатора"
    elif state in (ClaimState.APPROVED.value, ClaimState.PAYOUT_PENDING.value, ClaimState.PAYOUT_FAILED.value,
                   ClaimState.NEEDS_BANK_DETAILS.value) and row.payout_due:
        due, what = row.payout_due, "выплата денег"
    else:
        return None
    provisional = bool(row.deadline_provisional) or not is_published(due.year)
    return Deadline(what, due, working_days_left(today, due), provisional)


def claim_status(engine: Engine, number: str, *, now: datetime) -> ClaimStatus:
    """The claim `number` as its buyer sees it (the caller checked the buyer may see it)."""
    with engine.connect() as conn:
        row = conn.execute(
            select(claim_t.c.id, claim_t.c.number, claim_t.c.state, claim_t.c.reason, claim_t.c.quote, claim_t.c.amount,
                   claim_t.c.approved_amount, claim_t.c.refusal_message, claim_t.c.decision_due, claim_t.c.payout_due,
                   claim_t.c.deadline_provisional, event_t.c.title, event_t.c.starts_at, venue_t.c.timezone)
            .join(event_t, event_t.c.id == claim_t.c.event_id)
            .join(venue_t, venue_t.c.id == event_t.c.venue_id)
            .where(claim_t.c.number == number)
        ).one_or_none()
        if row is None:
            raise NotYourClaim(f"claim {number} not found")
        steps = conn.execute(select(audit_t.c.trigger, audit_t.c.to_state, audit_t.c.actor, audit_t.c.at)
                             .where(audit_t.c.claim_id == row.id).order_by(audit_t.c.at, audit_t.c.id)).all()
        documents = conn.execute(select(document_t.c.kind, document_t.c.received_at, document_t.c.filename, document_t.c.size)
                                 .where(document_t.c.claim_id == row.id).order_by(document_t.c.id)).all()
    zone = ZoneInfo(row.timezone)
    event_start = row.starts_at.astimezone(zone)
    quote = row.quote or {}
    amount = row.approved_amount if row.approved_amount is not None else (row.amount or parse_rub(quote.get("amount", "0.00")))
    state = row.state
    who = holder(state)
    return ClaimStatus(
        number=row.number, state=state, state_ru=STATE_RU.get(state, state), holder=who, holder_ru=HOLDER_RU[who],
        reason=row.reason, reason_ru=reason_ru(row.reason), event_title=row.title, event_starts_at=event_start,
        amount_kopecks=amount, amount_ru=rub(amount), percent=quote.get("percent"), basis=basis_ru(quote | {"reason": row.reason}),
        refusal_message=row.refusal_message if state == ClaimState.REJECTED.value else None,
        deadline=_deadline(state, row.reason, row, event_start, now.astimezone(zone).date()),
        history=[Step(s.at, TRIGGER_RU.get(s.trigger, s.trigger), who_ru(s.actor), STATE_RU.get(s.to_state, s.to_state)) for s in steps],
        documents=[{"kind": d.kind, "kind_ru": DOCUMENT_KIND_RU.get(d.kind, d.kind), "received_at": d.received_at, "filename": d.filename,
                    "size": d.size} for d in documents],
        can_upload_documents=state in (ClaimState.FILED.value, ClaimState.AWAITING_DOCUMENTS.value, ClaimState.AWAITING_ORGANIZER.value,
                                       ClaimState.ESCALATED.value),
        can_give_bank_details=state == ClaimState.NEEDS_BANK_DETAILS.value,
        can_withdraw=has_step(Trigger.WITHDRAW.value, state),
    )


@dataclass
class OrderTicket:
    ticket_id: int
    event_title: str
    event_starts_at: datetime
    price_ru: str
    barcode_status: str
    claims: list[dict[str, str]]


def order_tickets(engine: Engine, order_number: str) -> list[OrderTicket]:
    """The order's tickets, each with its event and its claims (number, state in words): the signed-in buyer's page."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(ticket_t.c.id, ticket_t.c.price_paid, ticket_t.c.barcode_status, event_t.c.title, event_t.c.starts_at, venue_t.c.timezone)
            .join(order_t, order_t.c.id == ticket_t.c.order_id)
            .join(event_t, event_t.c.id == ticket_t.c.event_id)
            .join(venue_t, venue_t.c.id == event_t.c.venue_id)
            .where(order_t.c.number == order_number).order_by(ticket_t.c.id)
        ).all()
        claims = conn.execute(select(claim_t.c.ticket_id, claim_t.c.number, claim_t.c.state)
                              .where(claim_t.c.ticket_id.in_([r.id for r in rows] or [0])).order_by(claim_t.c.id)).all()
    by_ticket: dict[int, list[dict[str, str]]] = {}
    for c in claims:
        by_ticket.setdefault(c.ticket_id, []).append({"number": c.number, "state": c.state, "state_ru": STATE_RU.get(c.state, c.state)})
    return [OrderTicket(r.id, r.title, r.starts_at.astimezone(ZoneInfo(r.timezone)), rub(r.price_paid), r.barcode_status,
                        by_ticket.get(r.id, [])) for r in rows]
