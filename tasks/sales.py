"""The operator's sales feed in: organizers, venues, events, orders and tickets, upserted by the operator's own keys.

One JSON shape for an order (`OrderIn`, documented in docs/sales-feed.md) arrives two ways: `PUT
/operator/orders/{number}` (api/operator.py) and `vozvrat sales import FILE` (cli/sales_commands.py).
Both call `upsert_orders`, which is idempotent: the same order twice changes nothing and says
"unchanged"; changed fields say "updated". It is set-based (a few SELECTs and bulk INSERT/UPDATEs
per batch, whatever its size) and runs in the caller's transaction.

Changes that matter for refunds are honoured by the lifecycle in the same transaction:
- a barcode reported `scanned`: no new claim can be filed (models.claim_store.unclaimable_tickets),
  and a claim not yet paid out is refused (`refuse_scanned`, TICKET_SCANNED);
- a ticket or a whole order reported `refunded` elsewhere: the barcode is void and a claim whose money
  has not left is closed (`close_refunded_elsewhere`, REFUNDED_ELSEWHERE);
- a void barcode is never made valid again by the feed: such a line is refused with the reason.
"""
from __future__ import annotations

import hashlib
import json
import re
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import lru_cache
from itertools import islice
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from email_validator import EmailNotValidError, validate_email
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError
from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.engine import Connection, Engine

from models.claim_store import apply_batch_in, claim_t, event_t, id_in, order_t, organizer_t, ticket_t, venue_t
from models.tables import REFUND_STATES
from states.lifecycle import ClaimState, Trigger, has_step
from tasks.intake import ClaimInput
from tasks.run_actions import queue_resume

MAX_KOPECKS = 2**63 - 1
MAX_TICKETS_PER_ORDER = 500

# --- the shape ------------------------------------------------------------------------------------

_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")


def _ru(kind: str, message_ru: str) -> PydanticCustomError:
    # The Russian message travels in the error's context (`ru`): the API and the CLI show it as is.
    return PydanticCustomError(kind, message_ru, {"ru": message_ru})


def _printable(value: str) -> str:
    if _CONTROL.search(value):
        raise _ru("control_characters", "Текст содержит управляющие символы; уберите их.")
    return value


def _zone(value: str) -> str:
    """An IANA zone name the standard library knows (Europe/Moscow, Asia/Vladivostok …)."""
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise _ru("timezone", "Неизвестный часовой пояс: нужен идентификатор IANA, например Europe/Moscow.") from exc
    return value


# RFC 5322 dot-atom local part: what nearly every buyer's address is. Anything else goes through the
# full check; the domain's check is cached (a feed has 100,000 buyers on a few dozen domains).
_DOT_ATOM = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")


@lru_cache(maxsize=4096)
def _domain(domain: str) -> str | None:
    try:
        return validate_email(f"x@{domain}", check_deliverability=False).ascii_domain
    except EmailNotValidError:
        return None


def _email(value: str) -> str:
    local, at, domain = value.rpartition("@")
    if at and len(local) <= 64 and len(value) <= 254 and _DOT_ATOM.match(local):
        checked = _domain(domain)
        if checked is not None and checked == domain.lower():
            return f"{local}@{checked}"
    try:
        return validate_email(value, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        raise _ru("email", "Неверный адрес электронной почты.") from exc


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise _ru("timezone_aware", "Нужны дата и время с часовым поясом, например 2026-12-01T19:00:00+03:00.")
    return value


Text = Annotated[str, AfterValidator(_printable)]
Name = Annotated[Text, Field(min_length=1, max_length=300)]
Key = Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$")]
Email = Annotated[str, Field(max_length=320), AfterValidator(_email)]
Kopecks = Annotated[int, Field(strict=True, ge=0, le=MAX_KOPECKS)]
Aware = Annotated[datetime, AfterValidator(_aware)]

EventStatus = Literal["scheduled", "cancelled", "postponed", "replaced"]
TicketStatus = Literal["valid", "scanned", "refunded"]


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class OrganizerIn(_In):
    id: Key = Field(description="The operator's id of the organizer")
    name: Name
    email: Email = Field(description="Where the organizer is told about claims")


class VenueIn(_In):
    id: Key = Field(description="The operator's id of the venue")
    name: Name
    timezone: Annotated[str, Field(max_length=64), AfterValidator(_zone)] = Field(description="IANA zone, e.g. Europe/Moscow")
    region: Annotated[str, Field(max_length=20, pattern=r"^[0-9A-Za-z-]*$")] = Field(
        default="", description="The subject of the Russian Federation (code as in regimes, e.g. 77); high-alert regimes are per region")


class EventIn(_In):
    id: Key = Field(description="The operator's id of the event")
    title: Name
    starts_at: Aware = Field(description="Start, with its UTC offset")
    status: EventStatus = "scheduled"
    new_starts_at: Aware | None = Field(default=None, description="A postponed event's new start")
    claims_until: date | None = Field(default=None, description="A postponed event's last day for refund claims")


class BuyerIn(_In):
    name: Name
    email: Email
    phone: Annotated[str, Field(max_length=32, pattern=r"^\+?[0-9 ()-]*$")] = ""


class PaymentIn(_In):
    method: Literal["card", "cash", "bso"] = Field(description="card: refunded to the card; cash and bso: by bank transfer")
    acquirer_payment_id: Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9._-]+$")] | None = Field(
        default=None, description="The acquirer's payment id (YooKassa); required for card, absent otherwise. Never a card number")
    amount: Kopecks = Field(description="What the buyer paid for the order, kopecks: the tickets' price_paid + service_fee + delivery_fee")


class TicketIn(_In):
    barcode: Key
    price_paid: Kopecks = Field(description="What the buyer paid for this ticket, kopecks (after discounts)")
    nominal: Kopecks | None = Field(default=None, description="The face value printed on the ticket, kopecks")
    service_fee: Kopecks = 0
    delivery_fee: Kopecks = 0
    promo: bool = Field(default=False, description="Bought in a promotion")
    status: TicketStatus = Field(default="valid", description="valid | scanned (at the door) | refunded (elsewhere)")


class OrderIn(_In):
    """One order of the operator's ticketing system, with everything a refund needs (docs/sales-feed.md)."""

    number: Key = Field(description="The order number the buyer knows")
    created_at: Aware
    status: Literal["paid", "refunded"] = Field(default="paid", description="refunded: refunded elsewhere, every ticket void")
    channel: Literal["site", "app", "box_office", "partner"] = "site"
    organizer: OrganizerIn
    venue: VenueIn
    event: EventIn
    buyer: BuyerIn
    payment: PaymentIn
    tickets: list[TicketIn] = Field(min_length=1, max_length=MAX_TICKETS_PER_ORDER)

    @model_validator(mode="after")
    def _consistent(self) -> OrderIn:
        if self.payment.method == "card" and not self.payment.acquirer_payment_id:
            raise _ru("card_payment_id", "payment.acquirer_payment_id: для оплаты картой нужен идентификатор платежа эквайера.")
        if self.payment.method != "card" and self.payment.acquirer_payment_id:
            raise _ru("payment_id_without_card", "payment.acquirer_payment_id: идентификатор платежа бывает только у оплаты картой.")
        total = sum(t.price_paid + t.service_fee + t.delivery_fee for t in self.tickets)
        if total != self.payment.amount:
            raise _ru("amount_mismatch", f"payment.amount: сумма платежа {self.payment.amount} коп. не равна сумме билетов "
                                         f"с сборами {total} коп.")
        barcodes = [t.barcode for t in self.tickets]
        if len(set(barcodes)) != len(barcodes):
            raise _ru("duplicate_barcode", "tickets: один штрихкод указан в заказе дважды.")
        if self.event.status == "postponed" and self.event.new_starts_at is None:
            raise _ru("new_start_missing", "event.new_starts_at: у перенесённого мероприятия нужна новая дата.")
        return self


# --- errors in one shape (API 422 details and the import's refused lines) --------------------------

RUSSIAN = {
    "missing": "Обязательное поле.",
    "extra_forbidden": "Неизвестное поле.",
    "literal_error": "Недопустимое значение.",
    "int_type": "Нужно целое число (копейки).",
    "int_parsing": "Нужно целое число (копейки).",
    "int_from_float": "Нужно целое число (копейки).",
    "greater_than_equal": "Значение не может быть отрицательным.",
    "less_than_equal": "Слишком большое число.",
    "string_type": "Нужна строка.",
    "string_too_short": "Поле не может быть пустым.",
    "string_too_long": "Слишком длинный текст.",
    "string_pattern_mismatch": "Недопустимые символы.",
    "bool_type": "Нужно true или false.",
    "bool_parsing": "Нужно true или false.",
    "datetime_type": "Нужны дата и время в формате ISO 8601.",
    "datetime_parsing": "Нужны дата и время в формате ISO 8601.",
    "datetime_from_date_parsing": "Нужны дата и время в формате ISO 8601.",
    "date_type": "Неверная дата, нужен формат ГГГГ-ММ-ДД.",
    "date_parsing": "Неверная дата, нужен формат ГГГГ-ММ-ДД.",
    "date_from_datetime_parsing": "Неверная дата, нужен формат ГГГГ-ММ-ДД.",
    "list_type": "Нужен список.",
    "too_short": "Список не может быть пустым.",
    "too_long": "Слишком много элементов.",
    "model_type": "Нужен JSON-объект.",
    "dict_type": "Нужен JSON-объект.",
}


def error_details(exc: ValidationError, prefix: Sequence[str | int] = ()) -> list[dict[str, Any]]:
    """Pydantic's errors as [{"loc", "msg", "type"}] with Russian messages."""
    out = []
    for e in exc.errors(include_url=False):
        msg = (e.get("ctx") or {}).get("ru") or RUSSIAN.get(e["type"], "Неверное значение.")
        out.append({"loc": [*prefix, *e["loc"]], "msg": msg, "type": e["type"]})
    return out


# --- results --------------------------------------------------------------------------------------

Outcome = Literal["created", "updated", "unchanged", "refused"]


@dataclass
class OrderResult:
    """What happened to one order (one line of an import, or one PUT)."""

    number: str
    outcome: Outcome
    line: int | None = None
    changed: list[str] = field(default_factory=list)  # what changed, e.g. "event.status", "tickets[BC1].status"
    errors: list[dict[str, Any]] = field(default_factory=list)  # refused: [{"loc", "msg", "type"}]
    claims_refused: list[str] = field(default_factory=list)  # claim numbers refused (barcode scanned)
    claims_closed: list[str] = field(default_factory=list)  # claim numbers closed (refunded elsewhere)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"order_number": self.number, "result": self.outcome}
        if self.line is not None:
            out["line"] = self.line
        if self.changed:
            out["changed"] = self.changed
        if self.errors:
            out["errors"] = self.errors
        if self.claims_refused:
            out["claims_refused"] = self.claims_refused
        if self.claims_closed:
            out["claims_closed"] = self.claims_closed
        return out


def refused(number: str, line: int | None, errors: list[dict[str, Any]]) -> OrderResult:
    return OrderResult(number=number, outcome="refused", line=line, errors=errors)


# --- the upsert -----------------------------------------------------------------------------------

@dataclass
class _Rec:
    """One row as it stands while a batch is applied: its id (None until inserted) and its values."""

    id: int | None
    values: dict[str, Any]
    dirty: bool = False
    extra: dict[str, Any] = field(default_factory=dict)  # read-only facts (refund holder, open claims …)


def _organizer_values(o: OrganizerIn) -> dict[str, Any]:
    return {"name": o.name, "email": o.email}


def _venue_values(v: VenueIn) -> dict[str, Any]:
    return {"name": v.name, "timezone": v.timezone, "region": v.region}


def _event_values(e: EventIn, organizer: str, venue: str) -> dict[str, Any]:
    return {"title": e.title, "starts_at": e.starts_at, "status": e.status, "new_starts_at": e.new_starts_at,
            "claims_until": e.claims_until, "organizer": organizer, "venue": venue}


def _order_values(o: OrderIn) -> dict[str, Any]:
    return {"buyer_name": o.buyer.name, "buyer_email": o.buyer.email, "buyer_phone": o.buyer.phone, "channel": o.channel,
            "payment_method": o.payment.method, "acquirer_payment_id": o.payment.acquirer_payment_id,
            "payment_amount": o.payment.amount, "created_at": o.created_at, "status": o.status}


def barcode_status(order: OrderIn, ticket: TicketIn) -> str:
    """The stored barcode status the feed asks for: refunded (the ticket or its order) is void."""
    if order.status == "refunded" or ticket.status == "refunded":
        return "void"
    return ticket.status


def _ticket_values(order: OrderIn, t: TicketIn) -> dict[str, Any]:
    return {"order": order.number, "event": order.event.id, "price_paid": t.price_paid, "nominal": t.nominal,
            "service_fee": t.service_fee, "delivery_fee": t.delivery_fee, "promo": t.promo, "barcode_status": barcode_status(order, t)}


def _diff(rec: _Rec | None, values: Mapping[str, Any]) -> list[str]:
    if rec is None:
        return list(values)
    # Aware datetimes compare as instants: the stored UTC value equals the feed's +03:00 one.
    return [k for k, v in values.items() if rec.values.get(k) != v]


class _Batch:
    """The rows a batch touches, read once, changed in memory line by line, written set-based at the end."""

    def __init__(self, conn: Connection, orders: Sequence[OrderIn]):
        self.conn = conn
        self.organizers = self._load_keyed(organizer_t, {o.organizer.id for o in orders}, ("name", "email"))
        self.venues = self._load_keyed(venue_t, {o.venue.id for o in orders}, ("name", "timezone", "region"))
        self.events = self._load_events({o.event.id for o in orders})
        self.orders = self._load_orders({o.number for o in orders})
        self.tickets = self._load_tickets({t.barcode for o in orders for t in o.tickets})

    def _load_keyed(self, table, keys: set[str], columns: tuple[str, ...]) -> dict[str, _Rec]:
        rows = self.conn.execute(select(table.c.id, table.c.external_id, *(table.c[c] for c in columns))
                                 .where(id_in(self.conn, table.c.external_id, sorted(keys)))).mappings()
        return {r["external_id"]: _Rec(r["id"], {c: r[c] for c in columns}) for r in rows}

    def _load_events(self, keys: set[str]) -> dict[str, _Rec]:
        rows = self.conn.execute(
            select(event_t.c.id, event_t.c.external_id, event_t.c.title, event_t.c.starts_at, event_t.c.status, event_t.c.new_starts_at,
                   event_t.c.claims_until, organizer_t.c.external_id.label("organizer"), venue_t.c.external_id.label("venue"))
            .join(organizer_t, organizer_t.c.id == event_t.c.organizer_id)
            .join(venue_t, venue_t.c.id == event_t.c.venue_id)
            .where(id_in(self.conn, event_t.c.external_id, sorted(keys)))
        ).mappings()
        return {r["external_id"]: _Rec(r["id"], {k: v for k, v in r.items() if k not in ("id", "external_id")}) for r in rows}

    def _load_orders(self, numbers: set[str]) -> dict[str, _Rec]:
        columns = ("buyer_name", "buyer_email", "buyer_phone", "channel", "payment_method", "acquirer_payment_id", "payment_amount",
                   "created_at", "status")
        rows = self.conn.execute(select(order_t.c.id, order_t.c.number, *(order_t.c[c] for c in columns))
                                 .where(id_in(self.conn, order_t.c.number, sorted(numbers)))).mappings()
        return {r["number"]: _Rec(r["id"], {c: r[c] for c in columns}) for r in rows}

    def _load_tickets(self, barcodes: set[str]) -> dict[str, _Rec]:
        rows = self.conn.execute(
            select(ticket_t.c.id, ticket_t.c.barcode, ticket_t.c.price_paid, ticket_t.c.nominal, ticket_t.c.service_fee,
                   ticket_t.c.delivery_fee, ticket_t.c.promo, ticket_t.c.barcode_status, order_t.c.number.label("order"),
                   event_t.c.external_id.label("event"), ticket_t.c.event_id)
            .join(order_t, order_t.c.id == ticket_t.c.order_id)
            .join(event_t, event_t.c.id == ticket_t.c.event_id)
            .where(id_in(self.conn, ticket_t.c.barcode, sorted(barcodes)))
        ).mappings()
        out = {}
        for r in rows:
            values = {k: v for k, v in r.items() if k not in ("id", "barcode", "event_id")}
            out[r["barcode"]] = _Rec(r["id"], values, extra={"event_id": r["event_id"]})
        if out:
            by_id = {rec.id: rec for rec in out.values()}
            claims = self.conn.execute(
                select(claim_t.c.ticket_id, claim_t.c.number, claim_t.c.state, claim_t.c.refund_granted)
                .where(id_in(self.conn, claim_t.c.ticket_id, list(by_id)))
            )
            for c in claims:
                rec = by_id[c.ticket_id]
                if c.refund_granted or c.state in REFUND_STATES:
                    rec.extra["refund_claim"] = (c.number, c.state)
        return out


# A claim whose money has left (or is leaving) cannot be closed: the feed may not refund that ticket again.
_MONEY_GONE = {s.value for s in (ClaimState.PAYOUT_PENDING, ClaimState.PAYOUT_FAILED, ClaimState.PAID, ClaimState.VOUCHER_ISSUED)}


def _refusals(batch: _Batch, order: OrderIn) -> list[dict[str, Any]]:
    """Why this order cannot be taken as it is, against the rows as they stand now (field-level, Russian)."""
    errors: list[dict[str, Any]] = []
    event = batch.events.get(order.event.id)
    if event is not None and event.values["organizer"] != order.organizer.id:
        errors.append({"loc": ["event", "id"], "type": "event_organizer",
                       "msg": f"Мероприятие {order.event.id} принадлежит другому организатору ({event.values['organizer']})."})
    for i, t in enumerate(order.tickets):
        rec = batch.tickets.get(t.barcode)
        if rec is None:
            continue
        loc = ["tickets", i]
        if rec.values["order"] != order.number:
            errors.append({"loc": [*loc, "barcode"], "type": "barcode_taken",
                           "msg": f"Штрихкод {t.barcode} уже принадлежит заказу {rec.values['order']}."})
            continue
        if rec.values["event"] != order.event.id:
            errors.append({"loc": [*loc, "barcode"], "type": "ticket_event",
                           "msg": f"Билет {t.barcode} относится к другому мероприятию; обмен оформляется новым билетом."})
            continue
        wanted = barcode_status(order, t)
        held = rec.extra.get("refund_claim")
        if rec.values["barcode_status"] == "void" and wanted != "void":
            why = (f"Билет {t.barcode} уже возвращён через сервис возвратов (заявка {held[0]}): его нельзя сделать снова действительным."
                   if held else f"Билет {t.barcode} аннулирован (возвращён): его нельзя сделать снова действительным.")
            errors.append({"loc": [*loc, "status"] if order.status != "refunded" else ["status"], "type": "ticket_void", "msg": why})
        elif wanted == "void" and held and held[1] in _MONEY_GONE:
            errors.append({"loc": [*loc, "status"] if t.status == "refunded" else ["status"], "type": "ticket_refunded_by_us",
                           "msg": f"Билет {t.barcode} уже возвращается или возвращён через сервис возвратов (заявка {held[0]}): "
                                  f"второй возврат в другом месте невозможен."})
    return errors


def _apply(batch: _Batch, order: OrderIn) -> tuple[bool, list[str]]:
    """Bring the in-memory rows to what the order says; (the order is new, what changed)."""
    changed: list[str] = []

    def put(store: dict[str, _Rec], key: str, values: dict[str, Any], label: str) -> None:
        rec = store.get(key)
        diff = _diff(rec, values)
        if rec is None:
            store[key] = _Rec(None, dict(values), dirty=True)
        elif diff:
            rec.values.update(values)
            rec.dirty = True
            changed.extend(f"{label}.{k}" for k in diff)

    put(batch.organizers, order.organizer.id, _organizer_values(order.organizer), "organizer")
    put(batch.venues, order.venue.id, _venue_values(order.venue), "venue")
    put(batch.events, order.event.id, _event_values(order.event, order.organizer.id, order.venue.id), "event")
    created = order.number not in batch.orders
    put(batch.orders, order.number, _order_values(order), "order")
    for t in order.tickets:
        known = t.barcode in batch.tickets
        put(batch.tickets, t.barcode, _ticket_values(order, t), f"tickets[{t.barcode}]")
        if not known and not created:
            changed.append(f"tickets[{t.barcode}]")
    return created, changed


def _write_keyed(conn: Connection, table, store: dict[str, _Rec], to_row, key: str = "external_id") -> None:
    """Insert the new rows (then read their ids back by their key) and update the changed ones, each in bulk."""
    new = {k: r for k, r in store.items() if r.id is None}
    if new:
        conn.execute(insert(table), [{key: k, **to_row(r)} for k, r in new.items()])
        ids: dict[str, int] = dict(conn.execute(select(table.c[key], table.c.id).where(id_in(conn, table.c[key], list(new)))).all())
        for k, r in new.items():
            r.id, r.dirty = ids[k], False
    _update_dirty(conn, table, store, to_row)


def _update_dirty(conn: Connection, table, store: dict[str, _Rec], to_row) -> None:
    dirty = [r for r in store.values() if r.dirty and r.id is not None]
    if not dirty:
        return
    rows = [{"_id": r.id, **to_row(r)} for r in dirty]
    columns = [c for c in rows[0] if c != "_id"]
    stmt = update(table).where(table.c.id == bindparam("_id")).values({c: bindparam(c) for c in columns})
    conn.execute(stmt.execution_options(synchronize_session=False), rows)
    for r in dirty:
        r.dirty = False


def _write(batch: _Batch) -> None:
    conn = batch.conn
    _write_keyed(conn, organizer_t, batch.organizers, lambda r: {**r.values, "policy": {}} if r.id is None else dict(r.values))
    _write_keyed(conn, venue_t, batch.venues, lambda r: dict(r.values))

    def event_row(r: _Rec) -> dict[str, Any]:
        v = dict(r.values)
        return {**{k: v[k] for k in ("title", "starts_at", "status", "new_starts_at", "claims_until")},
                "organizer_id": batch.organizers[v["organizer"]].id, "venue_id": batch.venues[v["venue"]].id}

    _write_keyed(conn, event_t, batch.events, event_row)
    _write_keyed(conn, order_t, batch.orders, lambda r: dict(r.values), key="number")

    def ticket_row(r: _Rec) -> dict[str, Any]:
        v = r.values
        return {"order_id": batch.orders[v["order"]].id, "event_id": batch.events[v["event"]].id,
                **{k: v[k] for k in ("price_paid", "nominal", "service_fee", "delivery_fee", "promo", "barcode_status")}}

    _write_keyed(conn, ticket_t, batch.tickets, ticket_row, key="barcode")


# Claims the feed's news reaches: not yet paid out (a claim whose money is on its way keeps it).
def _claims_to_move(conn: Connection, ticket_ids: Iterable[int], trigger: str) -> dict[int, tuple[int, str]]:
    """claim id -> (ticket id, claim number) of the tickets' claims that `trigger` has a step from."""
    ids = list(ticket_ids)
    if not ids:
        return {}
    rows = conn.execute(select(claim_t.c.id, claim_t.c.ticket_id, claim_t.c.number, claim_t.c.state)
                        .where(id_in(conn, claim_t.c.ticket_id, ids)))
    return {r.id: (r.ticket_id, r.number) for r in rows if has_step(trigger, r.state)}


def upsert_orders(conn: Connection, orders: Sequence[tuple[int | None, OrderIn]], *, actor: str, now: datetime) -> list[OrderResult]:
    """Upsert validated orders, in order, in the caller's transaction; one result per order.

    `orders` pairs each order with its line number (None for the API). An order seen twice in one
    batch is applied twice, in order, like two requests. A refused order changes nothing.
    """
    batch = _Batch(conn, [o for _, o in orders])
    before = {k: r.values["barcode_status"] for k, r in batch.tickets.items()}
    results: list[OrderResult] = []
    last_line_of_ticket: dict[str, int] = {}
    for line, order in orders:
        errors = _refusals(batch, order)
        if errors:
            results.append(refused(order.number, line, errors))
            continue
        created, changed = _apply(batch, order)
        results.append(OrderResult(number=order.number, line=line, outcome="created" if created else "updated" if changed else "unchanged",
                                   changed=[] if created else changed))
        for t in order.tickets:
            last_line_of_ticket[t.barcode] = len(results) - 1
    _write(batch)

    # The lifecycle hears of barcodes that became scanned or void in this batch.
    news: dict[str, list[int]] = defaultdict(list)
    result_of_ticket: dict[int, int] = {}
    for barcode, rec in batch.tickets.items():
        status = rec.values["barcode_status"]
        if status != before.get(barcode) and status in ("scanned", "void") and rec.id is not None:
            news[Trigger.REFUSE_SCANNED.value if status == "scanned" else Trigger.CLOSE_REFUNDED_ELSEWHERE.value].append(rec.id)
            result_of_ticket[rec.id] = last_line_of_ticket[barcode]
    moved_claims: list[int] = []
    for trigger, ticket_ids in news.items():
        claims = _claims_to_move(conn, ticket_ids, trigger)
        if not claims:
            continue
        outcome = apply_batch_in(conn, claim_ids=sorted(claims), trigger=trigger, actor=actor, now=now, note="sales feed")
        for ids in outcome.moved.values():
            for claim_id in ids:
                ticket_id, number = claims[claim_id]
                result = results[result_of_ticket[ticket_id]]
                (result.claims_refused if trigger == Trigger.REFUSE_SCANNED.value else result.claims_closed).append(number)
                moved_claims.append(claim_id)
    # Claims' runs waiting for a person read the claim again and finish (tasks/run_actions.py).
    step = ClaimInput(decision="recheck", decided_by=actor, note="sales feed", at=now).model_dump(mode="json")
    queue_resume(conn, claim_ids=moved_claims, step=step, now=now)
    return results


def parse_order(payload: Any) -> OrderIn:
    """Validate one order; raises pydantic.ValidationError (see `error_details`)."""
    return OrderIn.model_validate(payload)


# --- a file of orders (JSON Lines) ----------------------------------------------------------------

class MalformedFile(ValueError):
    """The file cannot be read as JSON Lines (not a file, not UTF-8, a line that is not JSON): nothing is written."""


@dataclass
class ImportSummary:
    lines: int = 0
    results: list[OrderResult] = field(default_factory=list)
    validate_s: float = 0.0
    write_s: float = 0.0

    def count(self, outcome: Outcome) -> int:
        return sum(1 for r in self.results if r.outcome == outcome)

    @property
    def refused(self) -> list[OrderResult]:
        return [r for r in self.results if r.outcome == "refused"]

    def to_json(self) -> dict[str, Any]:
        return {
            "orders": len(self.results),
            "created": self.count("created"), "updated": self.count("updated"), "unchanged": self.count("unchanged"),
            "refused": self.count("refused"),
            "claims_refused": sum(len(r.claims_refused) for r in self.results),
            "claims_closed": sum(len(r.claims_closed) for r in self.results),
            "refused_lines": [{"line": r.line, "order_number": r.number, "errors": r.errors} for r in self.refused],
        }


@dataclass
class FileCheck:
    """What the first pass over a file found: how many orders are valid, the refused lines, the file's digest."""

    valid: int
    refusals: list[OrderResult]
    sha256: str


def _lines(path: Path) -> Iterator[tuple[int, str | None, bytes]]:
    """(line number, text or None for a blank line, raw bytes) of a JSON Lines file, read line by line."""
    if not path.is_file():
        raise MalformedFile(f"{path}: not a file")
    try:
        with path.open("rb") as fh:  # never the whole file in memory: a feed may hold millions of orders
            for number, raw in enumerate(fh, start=1):
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise MalformedFile(f"{path}, line {number}: not UTF-8 text (byte {exc.start})") from None
                yield number, (text if text.strip() else None), raw
    except OSError as exc:
        raise MalformedFile(f"{path}: {exc.strerror or exc}") from None


def _validate_line(path: Path, number: int, text: str) -> OrderIn | OrderResult:
    try:
        return OrderIn.model_validate_json(text)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        if any(e["type"] == "json_invalid" for e in errors):
            raise MalformedFile(f"{path}, line {number}: not JSON ({errors[0]['msg']})") from None
        payload = json.loads(text)
        label = str(payload.get("number", "")) if isinstance(payload, dict) else ""
        return refused(label, number, error_details(exc))


def check_file(path: Path, progress: Callable[[int], None] | None = None) -> FileCheck:
    """The first pass: every line validated, nothing kept but the refusals. Raises MalformedFile when
    the file is not JSON Lines at all (not a file, not UTF-8, a line that is not JSON)."""
    digest = hashlib.sha256()
    valid, refusals = 0, []
    for number, text, raw in _lines(path):
        digest.update(raw)
        if progress is not None and number % 1000 == 0:
            progress(1000)
        if text is None:
            continue
        checked = _validate_line(path, number, text)
        if isinstance(checked, OrderResult):
            refusals.append(checked)
        else:
            valid += 1
    return FileCheck(valid, refusals, digest.hexdigest())


def valid_orders(path: Path, check: FileCheck) -> Iterator[tuple[int, OrderIn]]:
    """The second pass: the valid orders again, one at a time; raises MalformedFile at the end if the file
    changed since `check` (the caller's transaction then rolls back: nothing is written)."""
    digest = hashlib.sha256()
    refused_lines = {r.line for r in check.refusals}
    for number, text, raw in _lines(path):
        digest.update(raw)
        if text is None or number in refused_lines:
            continue
        checked = _validate_line(path, number, text)
        if isinstance(checked, OrderResult):
            raise MalformedFile(f"{path} changed while it was being imported (line {number})")
        yield number, checked
    if digest.hexdigest() != check.sha256:
        raise MalformedFile(f"{path} changed while it was being imported")


def import_orders(engine: Engine, orders: Iterable[tuple[int, OrderIn]], *, actor: str, now: datetime, chunk_size: int = 2000,
                  progress: Callable[[int], None] | None = None) -> list[OrderResult]:
    """Upsert validated orders in chunks, all in ONE transaction: an import that fails leaves nothing."""
    results: list[OrderResult] = []
    it = iter(orders)
    with engine.begin() as conn:
        while chunk := list(islice(it, chunk_size)):
            results.extend(upsert_orders(conn, chunk, actor=actor, now=now))
            if progress is not None:
                progress(len(chunk))
    return results


def import_file(engine: Engine, path: Path, *, actor: str, now: datetime, chunk_size: int = 2000,
                on_read: Callable[[int], None] | None = None, on_write: Callable[[int], None] | None = None) -> ImportSummary:
    """`vozvrat sales import`: validate the whole file, then write it in one transaction (reading it again,
    a chunk at a time, so memory stays flat whatever the file's size)."""
    t0 = time.perf_counter()
    check = check_file(path, on_read)
    t1 = time.perf_counter()
    written = import_orders(engine, valid_orders(path, check), actor=actor, now=now, chunk_size=chunk_size, progress=on_write)
    t2 = time.perf_counter()
    results = sorted(written + check.refusals, key=lambda r: r.line or 0)
    return ImportSummary(lines=check.valid + len(check.refusals), results=results, validate_s=t1 - t0, write_s=t2 - t1)


__all__ = ["FileCheck", "ImportSummary", "MalformedFile", "OrderIn", "OrderResult", "ValidationError", "check_file", "error_details",
           "import_file", "import_orders", "parse_order", "upsert_orders", "valid_orders"]
