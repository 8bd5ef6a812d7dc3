"""The workload the two-worker test (tests/flows/test_scale_out.py) runs and checks.

A workload is a function `(engine, register_payment, size, now) -> Workload`: it seeds what it needs,
sets the work going through the product's own entry points (today: buyers' voluntary claims, each a
refund-claim run created by the run starter), and returns what must hold once every run is done.
After the mass-cancellation flow is merged, `mass_cancellation_workload` can take its place: one
cancelled event whose run chunks the tickets across the workers; the checks stay the same.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from models.payouts import Payout
from models.tables import Claim, OutboxMessage
from tasks.intake import file_buyer_claim
from tests import factories as f

PRICE = 250000  # kopecks


@dataclass(frozen=True)
class Workload:
    name: str
    tickets: list[int]  # each must be refunded exactly once
    payment_ids: dict[int, str]  # ticket -> the buyer's card payment at the acquirer
    amounts: dict[int, int]  # ticket -> kopecks owed back
    claims: list[int]

    def finished(self, engine: Engine) -> bool:
        """Every claim paid and every message of theirs sent (or given up on): nothing left to do."""
        with engine.connect() as conn:
            unpaid = conn.execute(select(func.count()).select_from(Claim).where(Claim.id.in_(self.claims), Claim.state != "paid")).scalar_one()
            unsent = conn.execute(select(func.count()).select_from(OutboxMessage).where(
                OutboxMessage.claim_id.in_(self.claims), OutboxMessage.status.not_in(["sent", "failed"]))).scalar_one()
        return unpaid == 0 and unsent == 0

    def progress(self, engine: Engine) -> int:
        with engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(Claim).where(Claim.id.in_(self.claims), Claim.state == "paid")).scalar_one()

    def payouts(self, engine: Engine) -> dict[int, int]:
        """claim -> number of payouts opened for it."""
        with engine.connect() as conn:
            rows = conn.execute(select(Payout.claim_id, func.count()).where(Payout.claim_id.in_(self.claims)).group_by(Payout.claim_id)).all()
        return dict(rows)


def refund_claims_workload(engine: Engine, register_payment: Callable[[str, int], None], size: int, now: datetime) -> Workload:
    """`size` buyers each file a voluntary claim for a card ticket to a concert 30 days away (100 %,
    paid automatically): `size` refund-claim runs, each acknowledging, assessing, paying to the card
    through the acquirer and mailing the buyer."""
    with engine.begin() as conn:
        org = f.organizer(conn, email="scale-out-org@example.ru")
        event = f.event(conn, starts_at=now + timedelta(days=30), organizer_id=org, title="Большой концерт")
        tickets, payments = [], {}
        for i in range(size):
            payment_id = f"5ca1e007-0000-5000-9000-{i:012d}"
            order = f.order(conn, created_at=now - timedelta(days=20), buyer_email=f"buyer{i}@example.ru", payment_method="card",
                            acquirer_payment_id=payment_id)
            ticket = f.ticket(conn, event_id=event, order_id=order, price_paid=PRICE, nominal=PRICE)
            tickets.append(ticket)
            payments[ticket] = payment_id
    for payment_id in payments.values():
        register_payment(payment_id, PRICE)
    claims = [file_buyer_claim(engine, actor="buyer:order:scale-out", ticket_id=t, reason="voluntary", now=now).id for t in tickets]
    return Workload(name=f"refund-claim x{size}", tickets=tickets, payment_ids=payments, amounts=dict.fromkeys(tickets, PRICE), claims=claims)
