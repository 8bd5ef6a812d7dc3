"""Test data, from one place. Every function takes what it needs as keywords and returns ids."""
from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import insert
from sqlalchemy.engine import Connection

from models.tables import Document, Event, Order, Organizer, Regime, Ticket, Venue

_seq = itertools.count(1)
MSK = ZoneInfo("Europe/Moscow")


def organizer(conn: Connection, *, name: str = "Концертное агентство", email: str = "org@example.ru", policy: dict | None = None) -> int:
    return conn.execute(insert(Organizer.__table__).values(name=name, email=email, policy=policy or {})).inserted_primary_key[0]


def venue(conn: Connection, *, name: str = "Крокус Сити Холл", tz: str = "Europe/Moscow", region: str = "77") -> int:
    return conn.execute(insert(Venue.__table__).values(name=name, timezone=tz, region=region)).inserted_primary_key[0]


def regime(conn: Connection, *, region: str = "77", starts_on, ends_on=None) -> int:
    return conn.execute(insert(Regime.__table__).values(region=region, starts_on=starts_on, ends_on=ends_on, note="")).inserted_primary_key[0]


def event(conn: Connection, *, starts_at: datetime, organizer_id: int | None = None, venue_id: int | None = None,
          tz: str = "Europe/Moscow", title: str = "Концерт", status: str = "scheduled", regime_id: int | None = None,
          policy: dict | None = None) -> int:
    organizer_id = organizer_id or organizer(conn, policy=policy)
    venue_id = venue_id or venue(conn, tz=tz)
    return conn.execute(
        insert(Event.__table__).values(organizer_id=organizer_id, venue_id=venue_id, title=title, starts_at=starts_at, status=status, regime_id=regime_id)
    ).inserted_primary_key[0]


def order(conn: Connection, *, created_at: datetime, buyer_name: str = "Иванов Иван Иванович", buyer_email: str = "buyer@example.ru",
          payment_method: str = "card", channel: str = "site", acquirer_payment_id: str | None = "2d1f5a0e-000f-5000-9000-1b2c3d4e5f60") -> int:
    n = next(_seq)
    if payment_method != "card":
        acquirer_payment_id = None
    return conn.execute(
        insert(Order.__table__).values(number=f"ORD-{n:06d}", buyer_name=buyer_name, buyer_email=buyer_email, buyer_phone="+79990000000",
                                       channel=channel, payment_method=payment_method, acquirer_payment_id=acquirer_payment_id, created_at=created_at)
    ).inserted_primary_key[0]


def ticket(conn: Connection, *, event_id: int, order_id: int, price_paid: int = 350000, nominal: int | None = 400000,
           service_fee: int = 35000, promo: bool = False, barcode_status: str = "valid") -> int:
    n = next(_seq)
    return conn.execute(
        insert(Ticket.__table__).values(order_id=order_id, event_id=event_id, price_paid=price_paid, nominal=nominal, service_fee=service_fee,
                                        delivery_fee=0, promo=promo, barcode=f"BC{n:012d}", barcode_status=barcode_status)
    ).inserted_primary_key[0]


def tickets_bulk(conn: Connection, *, event_id: int, count: int, price_paid: int = 350000, payment_method: str = "card") -> list[int]:
    """Many tickets of one event, each in its own order, with two bulk inserts."""
    from sqlalchemy import func, select

    order_t, ticket_t = Order.__table__, Ticket.__table__
    now = datetime(2026, 1, 1, tzinfo=UTC)
    base = next(_seq) * 10_000_000
    last_order = conn.execute(select(func.coalesce(func.max(order_t.c.id), 0))).scalar_one()
    conn.execute(insert(order_t), [
        {"number": f"BULK-{base + i}", "buyer_name": f"Покупатель {i}", "buyer_email": f"b{base + i}@example.ru", "buyer_phone": "",
         "channel": "site", "payment_method": payment_method, "acquirer_payment_id": f"pay-{base + i}" if payment_method == "card" else None,
         "created_at": now} for i in range(count)
    ])
    order_ids = [r[0] for r in conn.execute(select(order_t.c.id).where(order_t.c.id > last_order).order_by(order_t.c.id))]
    last_ticket = conn.execute(select(func.coalesce(func.max(ticket_t.c.id), 0))).scalar_one()
    conn.execute(insert(ticket_t), [
        {"order_id": oid, "event_id": event_id, "price_paid": price_paid, "nominal": price_paid, "service_fee": 0, "delivery_fee": 0,
         "promo": False, "barcode": f"BB{base + i}", "barcode_status": "valid"} for i, oid in enumerate(order_ids)
    ])
    return [r[0] for r in conn.execute(select(ticket_t.c.id).where(ticket_t.c.id > last_ticket).order_by(ticket_t.c.id))]


def document(conn: Connection, *, claim_id: int, received_at: datetime, kind: str = "sick_leave_gosuslugi", sick_from=None, sick_to=None,
             person_name: str | None = "Иванов Иван Иванович", relation: str | None = None, judged_false: bool = False) -> int:
    return conn.execute(
        insert(Document.__table__).values(claim_id=claim_id, kind=kind, received_at=received_at, sick_from=sick_from, sick_to=sick_to,
                                          person_name=person_name, relation=relation, judged_false=judged_false)
    ).inserted_primary_key[0]


def ticket_for_event(conn: Connection, *, event_start: datetime, bought_at: datetime | None = None, tz: str = "Europe/Moscow",
                     payment_method: str = "card", barcode_status: str = "valid", policy: dict | None = None, **ticket_kw) -> int:
    """One event, one order, one ticket: the usual start of a single-claim test."""
    event_id = event(conn, starts_at=event_start, tz=tz, policy=policy)
    order_id = order(conn, created_at=bought_at or event_start - timedelta(days=60), payment_method=payment_method)
    return ticket(conn, event_id=event_id, order_id=order_id, barcode_status=barcode_status, **ticket_kw)


def claim_in_payout(conn: Connection, *, payment_method: str = "card", acquirer_payment_id: str | None = None, price_paid: int = 350000,
                    approved_amount: int | None = None, bank_details: str | None = None, now: datetime | None = None,
                    event_id: int | None = None) -> int:
    """A voluntary claim filed 18 days before its event, approved and moved to payout (payout_pending,
    or needs_bank_details for cash/BSO without details). Returns the claim id."""
    from sqlalchemy import update as sa_update

    from models.claim_store import apply_trigger, file_claims
    from models.tables import Claim
    from states.policy import Reason

    now = now or datetime(2026, 3, 1, 12, 0, tzinfo=MSK)
    event_id = event_id or event(conn, starts_at=now + timedelta(days=19))
    order_id = order(conn, created_at=now - timedelta(days=30), payment_method=payment_method,
                     acquirer_payment_id=acquirer_payment_id)
    ticket_id = ticket(conn, event_id=event_id, order_id=order_id, price_paid=price_paid, nominal=price_paid)
    (claim_id,) = file_claims(conn, ticket_ids=[ticket_id], reason=Reason.VOLUNTARY, actor="buyer", now=now)
    apply_trigger(conn, claim_id=claim_id, trigger="assess", actor="system", now=now)
    values = {}
    if approved_amount is not None:
        values["approved_amount"] = approved_amount
    if bank_details is not None:
        values["bank_details"] = bank_details
    if values:
        conn.execute(sa_update(Claim.__table__).where(Claim.__table__.c.id == claim_id).values(**values))
    apply_trigger(conn, claim_id=claim_id, trigger="start_payout", actor="system", now=now)
    return claim_id


def sales_order(number: str = "K-1000001", *, barcodes: tuple[str, ...] = ("BC-1000001-1",), event_id: str = "ev-1",
                starts_at: str = "2026-12-20T19:00:00+03:00", event_status: str = "scheduled", organizer_id: str = "org-1",
                venue_id: str = "ven-1", timezone: str = "Europe/Moscow", method: str = "card", price: int = 350000,
                service_fee: int = 35000, ticket_status: str = "valid", order_status: str = "paid",
                email: str = "anna@example.ru", created_at: str = "2026-10-01T12:00:00+03:00") -> dict:
    """One order in the sales feed's JSON shape (docs/sales-feed.md), as the operator's system sends it."""
    tickets = [{"barcode": b, "price_paid": price, "nominal": price, "service_fee": service_fee, "delivery_fee": 0, "promo": False,
                "status": ticket_status} for b in barcodes]
    return {
        "number": number, "created_at": created_at, "status": order_status, "channel": "site" if method == "card" else "box_office",
        "organizer": {"id": organizer_id, "name": "Концертное агентство «Север»", "email": "org@example.ru"},
        "venue": {"id": venue_id, "name": "Крокус Сити Холл", "timezone": timezone, "region": "50"},
        "event": {"id": event_id, "title": "Симфонический оркестр", "starts_at": starts_at, "status": event_status},
        "buyer": {"name": "Петрова Анна Сергеевна", "email": email, "phone": "+7 999 000-00-00"},
        "payment": {"method": method, "acquirer_payment_id": f"pay-{number}" if method == "card" else None,
                    "amount": (price + service_fee) * len(barcodes)},
        "tickets": tickets,
    }

def mass_event(conn: Connection, *, starts_at: datetime, card: int, cash: int = 0, bso: int = 0, scanned: int = 0, **kw) -> dict:
    """An event with many tickets of mixed payment channels (cli.bench_seed.seed_mass_event, shared with
    the benchmark and the demo). Returns {"event_id", "tickets", "payments": {payment id: kopecks paid}}."""
    from cli.bench_seed import seed_mass_event

    if "seed" not in kw:
        kw["seed"] = next(_seq)
    return seed_mass_event(conn, starts_at=starts_at, card=card, cash=cash, bso=bso, scanned=scanned, **kw)
