"""The stadium events the benchmarks, the demo and the tests seed: many tickets, one order each.

One seeder for `bench mass-cancel` (cli/bench_mass.py), its `--regime` variant (cli/bench_regime.py,
which bench_mass imports: so neither may hold it for the other), the demo and tests/factories.py.
"""
from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.engine import Connection

from models.tables import Event, Order, Organizer, Ticket, Venue

DEMO_ORGANIZER: Mapping[str, Any] = {"name": "Стадион «Демо»", "email": "stadium@example.ru", "policy": {}}


def seed_mass_event(conn: Connection, *, starts_at: datetime, card: int, cash: int = 0, bso: int = 0, scanned: int = 0,
                    price_paid: int = 350000, service_fee: int = 35000, organizer_id: int | None = None,
                    organizer: Mapping[str, Any] = DEMO_ORGANIZER, region: str = "77", title: str = "Стадионный концерт",
                    seed: int | None = None, prefix: str = "M") -> dict:
    """An event with many tickets, each in its own order: `card` paid by card (payment ids fit for the
    acquirer stand-in), `cash` and `bso` at the box office, the first `scanned` card tickets already
    scanned at the entrance, at a venue of `region`. Without `organizer_id` an organizer is made from
    `organizer` (the organizer row's values). Orders are numbered `<prefix>-<n>`, bought 60 days before
    the event. Returns {"event_id", "tickets", "payments": {payment id: kopecks paid}}."""
    order_t, ticket_t = Order.__table__, Ticket.__table__
    base = (seed if seed is not None else 1) * 10_000_000
    if organizer_id is None:
        organizer_id = conn.execute(insert(Organizer.__table__).values(**organizer)).inserted_primary_key[0]
    venue_id = conn.execute(insert(Venue.__table__).values(name="Стадион", timezone="Europe/Moscow", region=region)).inserted_primary_key[0]
    event_id = conn.execute(insert(Event.__table__).values(organizer_id=organizer_id, venue_id=venue_id, title=title, starts_at=starts_at)
                            ).inserted_primary_key[0]
    methods = ["card"] * card + ["cash"] * cash + ["bso"] * bso
    payments = {}
    orders = []
    for i, method in enumerate(methods):
        payment_id = str(uuid.UUID(int=base + i)) if method == "card" else None
        if payment_id:
            payments[payment_id] = price_paid + service_fee
        orders.append({"number": f"{prefix}-{base + i}", "buyer_name": f"Покупатель {i}", "buyer_email": f"{prefix.lower()}{base + i}@example.ru",
                       "buyer_phone": "", "channel": "site" if method == "card" else "box_office", "payment_method": method,
                       "acquirer_payment_id": payment_id, "created_at": starts_at - timedelta(days=60)})
    last_order = conn.execute(select(func.coalesce(func.max(order_t.c.id), 0))).scalar_one()
    last_ticket = conn.execute(select(func.coalesce(func.max(ticket_t.c.id), 0))).scalar_one()
    for start in range(0, len(orders), 5000):
        conn.execute(insert(order_t), orders[start : start + 5000])
    order_ids = [r[0] for r in conn.execute(select(order_t.c.id).where(order_t.c.id > last_order).order_by(order_t.c.id))]
    tickets = [{"order_id": oid, "event_id": event_id, "price_paid": price_paid, "nominal": price_paid, "service_fee": service_fee,
                "delivery_fee": 0, "promo": False, "barcode": f"{prefix}S{base + i}", "barcode_status": "scanned" if i < scanned else "valid"}
               for i, oid in enumerate(order_ids)]
    for start in range(0, len(tickets), 5000):
        conn.execute(insert(ticket_t), tickets[start : start + 5000])
    ticket_ids = [r[0] for r in conn.execute(select(ticket_t.c.id).where(ticket_t.c.id > last_ticket).order_by(ticket_t.c.id))]
    return {"event_id": event_id, "tickets": ticket_ids, "payments": payments}


__all__ = ["seed_mass_event", "DEMO_ORGANIZER"]
