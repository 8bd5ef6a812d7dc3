"""A claim as the API, the flows and the run starter read it: its state, version and who it belongs to."""
from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from models.claim_store import claim_t, event_t, order_t, organizer_t, ticket_t
from models.db import get_engine

TAG_NAME_MAX = 32


def short_name(name: str, limit: int = TAG_NAME_MAX) -> str:
    """A name fit for a tag: one line, at most `limit` characters."""
    name = " ".join(name.split())
    return name if len(name) <= limit else name[: limit - 1].rstrip() + "…"


@dataclass(frozen=True)
class ClaimView:
    id: int
    number: str
    state: str
    reason: str
    event_id: int
    organizer_id: int
    buyer_email: str
    version: int
    event_title: str = ""
    organizer_name: str = ""

    def tags(self) -> list[str]:
        """The run's tags: the id first (the tag filter's prefix, stable), a readable name after it
        (`organizer:12 Мосфильм-Концерт`), cut short."""
        return [f"event:{self.event_id} {short_name(self.event_title)}".rstrip(),
                f"organizer:{self.organizer_id} {short_name(self.organizer_name)}".rstrip(), f"reason:{self.reason}"]


def claim_with_order_and_event(claim_id: int, *columns):
    return (
        select(*columns)
        .join(ticket_t, ticket_t.c.id == claim_t.c.ticket_id)
        .join(order_t, order_t.c.id == ticket_t.c.order_id)
        .join(event_t, event_t.c.id == claim_t.c.event_id)
        .join(organizer_t, organizer_t.c.id == event_t.c.organizer_id)
        .where(claim_t.c.id == claim_id)
    )


def read_claim(claim_id: int, *, engine=None) -> ClaimView:
    """The claim as stored now: the machine's state is the truth the flow follows."""
    with (engine or get_engine()).connect() as conn:
        row = conn.execute(claim_with_order_and_event(
            claim_id, claim_t.c.id, claim_t.c.number, claim_t.c.state, claim_t.c.reason, claim_t.c.event_id, event_t.c.organizer_id,
            order_t.c.buyer_email, claim_t.c.version, event_t.c.title.label("event_title"), organizer_t.c.name.label("organizer_name"),
        )).one_or_none()
    if row is None:
        raise LookupError(f"claim {claim_id} not found")
    return ClaimView(**row._mapping)
