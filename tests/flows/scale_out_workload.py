"""The workload the two-worker test (tests/flows/test_scale_out.py) runs and checks.

One cancelled event of a few thousand tickets (card, cash and BSO), whose mass-cancellation run
submits its chunks as runs of the `mass-cancellation-chunk` deployment, which both workers take.
Seeded here: the event, its card payments registered with the acquirer stand-in, two staff
supervisors (one starts the cancellation, the other approves the held mass sends). Started and
approved by the test through the CLI, as docs/deploy.md's last step does. What must hold once every
run is done: every ticket has exactly one claim; every card ticket is refunded once at the acquirer
(its ledger) and its claim paid; every cash or BSO ticket's buyer is asked for bank details; every
email is sent.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from models.payouts import Payout
from models.tables import Claim, MassCancellation, MassSend, OutboxMessage, Ticket
from tasks.accounts import create_user
from tests import factories as f

PASSWORD = "scale out password 1"
STARTER, APPROVER = "anna.scale@example.ru", "boris.scale@example.ru"
CARD_STATE, OTHER_STATE = "paid", "needs_bank_details"


@dataclass(frozen=True)
class Workload:
    name: str
    event_id: int
    tickets: list[int]
    payment_ids: dict[str, int]  # card payment at the acquirer -> kopecks owed back
    card_tickets: int
    other_tickets: int  # cash and BSO: bank details asked

    def claims(self, engine: Engine) -> dict[int, int]:
        """ticket -> number of claims for it."""
        with engine.connect() as conn:
            return dict(conn.execute(select(Claim.ticket_id, func.count()).where(Claim.event_id == self.event_id)
                                     .group_by(Claim.ticket_id)).all())

    def states(self, engine: Engine) -> dict[str, int]:
        with engine.connect() as conn:
            return dict(conn.execute(select(Claim.state, func.count()).where(Claim.event_id == self.event_id).group_by(Claim.state)).all())

    def mass_status(self, engine: Engine) -> str | None:
        with engine.connect() as conn:
            return conn.execute(select(MassCancellation.status).where(MassCancellation.event_id == self.event_id)).scalar_one_or_none()

    def held_mass_sends(self, engine: Engine) -> list[int]:
        with engine.connect() as conn:
            return list(conn.execute(select(MassSend.id).where(MassSend.event_id == self.event_id, MassSend.status == "held")
                                     .order_by(MassSend.id)).scalars())

    def _claim_ids(self):
        return select(Claim.id).where(Claim.event_id == self.event_id).scalar_subquery()

    def unsent(self, engine: Engine) -> int:
        with engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(OutboxMessage).where(
                OutboxMessage.claim_id.in_(self._claim_ids()), OutboxMessage.status.not_in(("sent", "superseded")))).scalar_one()

    def finished(self, engine: Engine) -> bool:
        """Every ticket's claim where it ends (card: paid; cash, BSO: bank details asked), the mass
        record done, and every message of theirs sent: nothing left to do."""
        return (self.mass_status(engine) == "done"
                and self.states(engine) == {CARD_STATE: self.card_tickets, OTHER_STATE: self.other_tickets}
                and self.unsent(engine) == 0)

    def progress(self, engine: Engine) -> dict[str, int]:
        return self.states(engine)

    def payouts(self, engine: Engine) -> dict[str, int]:
        """payment channel -> payouts opened for the event's claims; and claims with more than one."""
        with engine.connect() as conn:
            per_claim = conn.execute(select(Payout.claim_id, func.count()).where(Payout.claim_id.in_(self._claim_ids()))
                                     .group_by(Payout.claim_id)).all()
        return {"claims_with_payout": len(per_claim), "claims_with_more": sum(1 for _, n in per_claim if n > 1)}

    def sent(self, engine: Engine) -> list[tuple[str, str]]:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(select(OutboxMessage.message_id, OutboxMessage.status).where(
                OutboxMessage.claim_id.in_(self._claim_ids()), OutboxMessage.kind == "email",
                OutboxMessage.status != "superseded")).all()]  # an approval replaced by the claim's later letter never leaves


def mass_cancellation_workload(engine: Engine, register_payments: Callable[[dict[str, int]], None], size: int, now: datetime) -> Workload:
    """An event of `size` tickets 20 days away, each in its own order: 80 % card (payments registered
    with the stand-in), 12 % cash, 8 % BSO; and the two staff supervisors."""
    cash, bso = size * 12 // 100, size * 8 // 100
    card = size - cash - bso
    with engine.begin() as conn:
        data = f.mass_event(conn, starts_at=now + timedelta(days=20), card=card, cash=cash, bso=bso, title="Стадион: масштаб")
    register_payments(data["payments"])
    for login in (STARTER, APPROVER):
        create_user(engine, login=login, password=PASSWORD, kind="staff", role="supervisor", now=now)
    with engine.connect() as conn:
        tickets = list(conn.execute(select(Ticket.id).where(Ticket.event_id == data["event_id"]).order_by(Ticket.id)).scalars())
    return Workload(name=f"mass-cancellation x{size}", event_id=data["event_id"], tickets=tickets, payment_ids=data["payments"],
                    card_tickets=card, other_tickets=cash + bso)
