"""The lifecycle laid over the stored rows: filing claims and applying triggers, one or many at a time.

A step is written in one transaction: the new state (only if the claim is still in the state it was
read in), the audit row, the ticket's barcode when the step voids it, and the outbox rows.
`apply_trigger` serves one claim through the `transitions` machine; `apply_batch` serves thousands
with one UPDATE per (source, target, effects) group and bulk inserts for audit and outbox.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import bindparam, func, insert, select, update
from sqlalchemy.engine import Connection, Engine

from models.tables import Claim, ClaimTransition, Document, Event, Order, Organizer, OutboxMessage, Regime, Ticket, Venue
from states.lifecycle import (
    NOTIFICATIONS,
    ClaimFacts,
    ClaimState,
    InvalidTrigger,
    Outcome,
    decide,
    effects,
    fire,
)
from states.policy import DocumentEvidence, OrganizerPolicy, Reason, TicketPrice, quote_refund

claim_t = Claim.__table__
ticket_t = Ticket.__table__
order_t = Order.__table__
event_t = Event.__table__
venue_t = Venue.__table__
organizer_t = Organizer.__table__
regime_t = Regime.__table__
document_t = Document.__table__
audit_t = ClaimTransition.__table__
outbox_t = OutboxMessage.__table__

TICKET_EFFECTS = {"ticket_barcode_status"}


class ConflictError(RuntimeError):
    """The claim changed since it was read: the step was not applied (no lost update)."""


class TransitionRefused(ValueError):
    """A guard said no. `refusals` holds (code, Russian message) pairs for the buyer or organizer."""

    def __init__(self, claim_id: int, outcome: Outcome):
        self.claim_id = claim_id
        self.outcome = outcome
        self.refusals = outcome.refusals
        codes = ", ".join(code for code, _ in outcome.refusals)
        super().__init__(f"claim {claim_id}: {outcome.trigger} refused from {outcome.source} ({codes})")


class ClaimNotFound(LookupError):
    pass


@dataclass
class BatchResult:
    moved: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))  # target state -> claim ids
    refused: dict[int, tuple[tuple[str, str], ...]] = field(default_factory=dict)
    conflicts: list[int] = field(default_factory=list)
    invalid: dict[int, str] = field(default_factory=dict)  # trigger not allowed from the claim's state

    @property
    def moved_count(self) -> int:
        return sum(len(v) for v in self.moved.values())

    def merge(self, other: "BatchResult") -> None:
        for k, v in other.moved.items():
            self.moved[k].extend(v)
        self.refused.update(other.refused)
        self.conflicts.extend(other.conflicts)
        self.invalid.update(other.invalid)


# --- facts: one query for any number of claims ---------------------------------------------------

@lru_cache(maxsize=256)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


@lru_cache(maxsize=1024)
def _policy(items: tuple) -> OrganizerPolicy:
    return OrganizerPolicy.from_mapping(dict(items))


def _freeze(value: Any) -> Any:
    if isinstance(value, dict):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


def _thaw_policy(policy: Mapping) -> OrganizerPolicy:
    return _policy(_freeze(dict(policy or {})))


_FACTS_COLUMNS = (
    claim_t.c.id, claim_t.c.number, claim_t.c.state, claim_t.c.version, claim_t.c.reason, claim_t.c.filed_at,
    claim_t.c.extended, claim_t.c.decision_due, claim_t.c.payout_due, claim_t.c.bank_details,
    claim_t.c.name_mismatch_explanation, claim_t.c.amount, claim_t.c.approved_amount, claim_t.c.ticket_id,
    ticket_t.c.price_paid, ticket_t.c.nominal, ticket_t.c.service_fee, ticket_t.c.delivery_fee, ticket_t.c.promo,
    ticket_t.c.barcode_status,
    order_t.c.buyer_name, order_t.c.buyer_email, order_t.c.payment_method, order_t.c.acquirer_payment_id,
    order_t.c.created_at.label("order_created_at"),
    event_t.c.id.label("event_id"), event_t.c.title.label("event_title"), event_t.c.starts_at,
    event_t.c.status.label("event_status"), event_t.c.regime_id,
    venue_t.c.timezone, organizer_t.c.policy, organizer_t.c.id.label("organizer_id"),
    organizer_t.c.email.label("organizer_email"),
)


def _facts_query():
    return (
        select(*_FACTS_COLUMNS)
        .select_from(claim_t)
        .join(ticket_t, ticket_t.c.id == claim_t.c.ticket_id)
        .join(order_t, order_t.c.id == ticket_t.c.order_id)
        .join(event_t, event_t.c.id == claim_t.c.event_id)
        .join(venue_t, venue_t.c.id == event_t.c.venue_id)
        .join(organizer_t, organizer_t.c.id == event_t.c.organizer_id)
    )


def _documents_for(conn: Connection, claim_ids: Sequence[int]) -> dict[int, tuple[DocumentEvidence, ...]]:
    if not claim_ids:
        return {}
    out: dict[int, list[DocumentEvidence]] = defaultdict(list)
    rows = conn.execute(select(document_t).where(document_t.c.claim_id.in_(claim_ids)).order_by(document_t.c.id))
    for d in rows.mappings():
        out[d["claim_id"]].append(
            DocumentEvidence(
                kind=d["kind"], received_at=d["received_at"], sick_from=d["sick_from"], sick_to=d["sick_to"],
                person_name=d["person_name"], relation=d["relation"], judged_false=d["judged_false"],
            )
        )
    return {k: tuple(v) for k, v in out.items()}


def _regime_active(conn: Connection, regime_ids: set[int], now: datetime) -> dict[int, bool]:
    if not regime_ids:
        return {}
    today = now.date()
    rows = conn.execute(select(regime_t.c.id, regime_t.c.starts_on, regime_t.c.ends_on).where(regime_t.c.id.in_(regime_ids)))
    # Decree 442 applies to events cancelled during the regime or after it (the 180-day rule counts from its end).
    return {r.id: r.starts_on <= today for r in rows}


def load_facts(conn: Connection, claim_ids: Sequence[int], now: datetime, *, for_update: bool = False) -> dict[int, tuple[Any, ClaimFacts]]:
    """Read claims with everything their guards look at: one query, plus documents when any are documented."""
    query = _facts_query().where(claim_t.c.id.in_(list(claim_ids)))
    if for_update and conn.dialect.name == "postgresql":
        query = query.with_for_update(of=claim_t)
    rows = conn.execute(query).all()
    documented = [r.id for r in rows if r.reason in (Reason.ILLNESS.value, Reason.DEATH.value)]
    docs = _documents_for(conn, documented)
    regimes = _regime_active(conn, {r.regime_id for r in rows if r.regime_id}, now)
    out: dict[int, tuple[Any, ClaimFacts]] = {}
    for r in rows:
        tz = _zone(r.timezone)
        out[r.id] = (
            r,
            ClaimFacts(
                reason=Reason(r.reason),
                state=ClaimState(r.state),
                filed_at=r.filed_at,
                event_start=r.starts_at.astimezone(tz),
                ticket=TicketPrice(r.price_paid, r.nominal, r.service_fee, r.delivery_fee, r.promo),
                barcode_status=r.barcode_status,
                payment_method=r.payment_method,
                acquirer_payment_id=r.acquirer_payment_id,
                has_bank_details=bool(r.bank_details),
                event_status=r.event_status,
                high_alert_regime=bool(r.regime_id and regimes.get(r.regime_id)),
                policy=_thaw_policy(r.policy),
                order_created_at=r.order_created_at,
                buyer_name=r.buyer_name,
                name_mismatch_explanation=r.name_mismatch_explanation,
                documents=docs.get(r.id, ()),
                extended=r.extended,
                decision_due=r.decision_due,
                payout_due=r.payout_due,
            ),
        )
    return out


# --- payloads for the outbox ---------------------------------------------------------------------

def _iso(value: date | datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def notification_payload(row: Any, facts: ClaimFacts, eff: Mapping[str, Any], note: str | None, data: Mapping[str, Any]) -> dict[str, Any]:
    """The template context of a buyer email: plain JSON, rendered later by the dispatcher."""
    amount = eff.get("approved_amount", row.approved_amount) or row.amount
    payload = {
        "claim_number": row.number,
        "buyer_name": row.buyer_name,
        "reason": row.reason,
        "event_title": row.event_title,
        "event_start": facts.event_start.isoformat(),
        "amount_kopecks": amount,
        "payment_method": row.payment_method,
        "decision_due": _iso(eff.get("decision_due", row.decision_due)),
        "payout_due": _iso(eff.get("payout_due", row.payout_due)),
        "refusal_code": eff.get("refusal_code"),
        "refusal_message": eff.get("refusal_message"),
        "note": note,
    }
    if data.get("fallback_offer") is not None:
        payload["fallback_offer"] = data["fallback_offer"]
    if data.get("extension_reason"):
        payload["extension_reason"] = data["extension_reason"]
    return payload


def _outbox_row(claim_id: int, template: str, recipient: str, payload: dict, now: datetime, status: str, step_key: str) -> dict[str, Any]:
    return {
        "kind": "email",
        "dedup_key": f"claim:{claim_id}:{step_key}:{template}",
        "claim_id": claim_id,
        "template": template,
        "recipient": recipient,
        "payload": payload,
        "status": status,
        "attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
    }


# --- one claim -----------------------------------------------------------------------------------

def apply_trigger(
    conn: Connection,
    *,
    claim_id: int,
    trigger: str,
    actor: str,
    now: datetime,
    note: str | None = None,
    data: Mapping[str, Any] | None = None,
    expected_version: int | None = None,
) -> Outcome:
    """Apply one trigger to one claim inside the caller's transaction (`engine.begin()`).

    Raises TransitionRefused (a guard said no, with reasons), InvalidTrigger (no such step from the
    current state) or ConflictError (someone else moved the claim first; nothing was written).
    """
    data = dict(data or {})
    found = load_facts(conn, [claim_id], now)
    if claim_id not in found:
        raise ClaimNotFound(f"claim {claim_id} not found")
    row, facts = found[claim_id]
    if expected_version is not None and row.version != expected_version:
        raise ConflictError(f"claim {row.number} is at version {row.version}, not {expected_version}")
    outcome = fire(trigger, facts, now)
    if not outcome.allowed:
        raise TransitionRefused(claim_id, outcome)
    eff = effects(trigger, outcome.dest, facts, now, data)
    claim_values = {k: v for k, v in eff.items() if k not in TICKET_EFFECTS}
    if "extension_reason" in data:
        claim_values["extension_reason"] = data["extension_reason"]
    result = conn.execute(
        update(claim_t)
        .where(claim_t.c.id == claim_id, claim_t.c.state == row.state, claim_t.c.version == row.version)
        .values(state=outcome.dest, version=claim_t.c.version + 1, updated_at=now, **claim_values)
    )
    if result.rowcount != 1:
        raise ConflictError(f"claim {row.number} changed while {trigger} was being applied")
    if "ticket_barcode_status" in eff:
        conn.execute(update(ticket_t).where(ticket_t.c.id == row.ticket_id).values(barcode_status=eff["ticket_barcode_status"]))
    conn.execute(
        insert(audit_t).values(claim_id=claim_id, trigger=trigger, from_state=row.state, to_state=outcome.dest, actor=actor, at=now, note=note)
    )
    template = NOTIFICATIONS.get((trigger, outcome.dest))
    if template:
        payload = notification_payload(row, facts, eff, note, data)
        conn.execute(insert(outbox_t).values(**_outbox_row(claim_id, template, row.buyer_email, payload, now, "pending", f"v{row.version}")))
    return outcome


# --- many claims ---------------------------------------------------------------------------------

def _effects_key(eff: Mapping[str, Any]) -> tuple:
    return tuple(sorted((k, v) for k, v in eff.items()))


def apply_batch(
    engine: Engine,
    *,
    claim_ids: Iterable[int],
    trigger: str,
    actor: str,
    now: datetime,
    note: str | None = None,
    data: Mapping[str, Any] | None = None,
    hold_notifications: bool = False,
    chunk_size: int = 5000,
) -> BatchResult:
    """One trigger for many claims: per chunk, one transaction; per (source, target, effects) group,
    one UPDATE ... WHERE id IN (...) AND state = source RETURNING id; audit and outbox in bulk.

    Claims whose guard fails come back in `refused` with their reasons; claims moved by someone else
    between the read and the update come back in `conflicts`. `hold_notifications` stores the emails
    as `held` so a second person approves a mass send before anything leaves.
    """
    data = dict(data or {})
    ids = list(claim_ids)
    total = BatchResult()
    for start in range(0, len(ids), chunk_size):
        with engine.begin() as conn:
            total.merge(_apply_chunk(conn, ids[start : start + chunk_size], trigger, actor, now, note, data, hold_notifications))
    return total


def _apply_chunk(conn: Connection, ids: list[int], trigger: str, actor: str, now: datetime, note: str | None, data: dict, hold: bool) -> BatchResult:
    result = BatchResult()
    found = load_facts(conn, ids, now)
    groups: dict[tuple, list[tuple[Any, ClaimFacts, dict]]] = defaultdict(list)
    for claim_id in ids:
        if claim_id not in found:
            result.invalid[claim_id] = "not found"
            continue
        row, facts = found[claim_id]
        try:
            outcome = decide(trigger, facts, now)
        except InvalidTrigger as exc:
            result.invalid[claim_id] = str(exc)
            continue
        if not outcome.allowed:
            result.refused[claim_id] = outcome.refusals
            continue
        eff = effects(trigger, outcome.dest, facts, now, data)
        groups[(row.state, outcome.dest, _effects_key(eff))].append((row, facts, eff))

    audit_rows: list[dict[str, Any]] = []
    outbox_rows: list[dict[str, Any]] = []
    void_tickets: list[int] = []
    status = "held" if hold else "pending"
    for (source, dest, eff_key), members in groups.items():
        eff = dict(eff_key)
        claim_values = {k: v for k, v in eff.items() if k not in TICKET_EFFECTS}
        member_ids = [m[0].id for m in members]
        stmt = (
            update(claim_t)
            .where(claim_t.c.id.in_(bindparam("ids", expanding=True)), claim_t.c.state == source)
            .values(state=dest, version=claim_t.c.version + 1, updated_at=now, **claim_values)
            .returning(claim_t.c.id)
        )
        moved = {r[0] for r in conn.execute(stmt, {"ids": member_ids})}
        template = NOTIFICATIONS.get((trigger, dest))
        for row, facts, _ in members:
            if row.id not in moved:
                result.conflicts.append(row.id)
                continue
            result.moved[dest].append(row.id)
            audit_rows.append({"claim_id": row.id, "trigger": trigger, "from_state": source, "to_state": dest, "actor": actor, "at": now, "note": note})
            if "ticket_barcode_status" in eff:
                void_tickets.append(row.ticket_id)
            if template:
                payload = notification_payload(row, facts, eff, note, data)
                outbox_rows.append(_outbox_row(row.id, template, row.buyer_email, payload, now, status, f"v{row.version}"))
    if void_tickets:
        conn.execute(update(ticket_t).where(ticket_t.c.id.in_(bindparam("ids", expanding=True))).values(barcode_status="void"), {"ids": void_tickets})
    if audit_rows:
        conn.execute(insert(audit_t), audit_rows)
    if outbox_rows:
        conn.execute(insert(outbox_t), outbox_rows)
    return result


# --- filing --------------------------------------------------------------------------------------

def claim_number(ticket_id: int, seq: int) -> str:
    """The number shown to the buyer: the ticket and how many claims it has had."""
    return f"VZ-{ticket_id:07d}-{seq}"


def claim_rows(
    conn: Connection,
    *,
    ticket_ids: Sequence[int],
    reason: Reason,
    actor: str,
    now: datetime,
    description: str = "",
    name_mismatch_explanation: str | None = None,
) -> list[dict[str, Any]]:
    """The rows of new claims for these tickets, each with its quote (states.policy): built, not written."""
    reason = Reason(reason)
    params = {"ids": list(ticket_ids)}
    tickets = conn.execute(
        select(
            ticket_t.c.id, ticket_t.c.event_id, ticket_t.c.price_paid, ticket_t.c.nominal, ticket_t.c.service_fee,
            ticket_t.c.delivery_fee, ticket_t.c.promo, event_t.c.starts_at, venue_t.c.timezone, organizer_t.c.policy,
        )
        .select_from(ticket_t)
        .join(event_t, event_t.c.id == ticket_t.c.event_id)
        .join(venue_t, venue_t.c.id == event_t.c.venue_id)
        .join(organizer_t, organizer_t.c.id == event_t.c.organizer_id)
        .where(ticket_t.c.id.in_(bindparam("ids", expanding=True))),
        params,
    ).all()
    if len(tickets) != len(set(ticket_ids)):
        missing = set(ticket_ids) - {t.id for t in tickets}
        raise ClaimNotFound(f"unknown tickets: {sorted(missing)[:10]}")
    previous = dict(
        conn.execute(
            select(claim_t.c.ticket_id, func.count())
            .where(claim_t.c.ticket_id.in_(bindparam("ids", expanding=True)))
            .group_by(claim_t.c.ticket_id),
            params,
        ).all()
    )
    rows = []
    for t in tickets:
        quote = quote_refund(
            reason=reason,
            event_start=t.starts_at.astimezone(_zone(t.timezone)),
            filed_at=now,
            ticket=TicketPrice(t.price_paid, t.nominal, t.service_fee, t.delivery_fee, t.promo),
            policy=_thaw_policy(t.policy),
        )
        rows.append(
            {
                "number": claim_number(t.id, previous.get(t.id, 0) + 1),
                "ticket_id": t.id,
                "event_id": t.event_id,
                "reason": reason.value,
                "state": ClaimState.FILED.value,
                "version": 1,
                "filed_at": now,
                "updated_at": now,
                "filed_by": actor,
                "description": description,
                "name_mismatch_explanation": name_mismatch_explanation,
                "quote": quote.to_json(),
                "amount": quote.amount,
                "deadline_provisional": False,
                "extended": False,
            }
        )
    return rows


def insert_claims(conn: Connection, rows: list[dict[str, Any]], *, actor: str, now: datetime) -> list[int]:
    """Write new claims and the audit row of each filing; returns their ids in the rows' order.

    A ticket that already has an open claim makes the database refuse (uq_claim_open_ticket).
    """
    if not rows:
        return []
    conn.execute(insert(claim_t), rows)
    numbers = [r["number"] for r in rows]
    id_by_number = dict(
        conn.execute(select(claim_t.c.number, claim_t.c.id).where(claim_t.c.number.in_(bindparam("n", expanding=True))), {"n": numbers}).all()
    )
    claim_ids = [id_by_number[n] for n in numbers]
    conn.execute(
        insert(audit_t),
        [{"claim_id": cid, "trigger": "file", "from_state": "", "to_state": ClaimState.FILED.value, "actor": actor, "at": now, "note": None} for cid in claim_ids],
    )
    return claim_ids


def file_claims(conn: Connection, *, ticket_ids: Sequence[int], reason: Reason, actor: str, now: datetime, **kw: Any) -> list[int]:
    """File one claim per ticket (a buyer's one ticket, or a chunk of a mass cancellation)."""
    return insert_claims(conn, claim_rows(conn, ticket_ids=ticket_ids, reason=reason, actor=actor, now=now, **kw), actor=actor, now=now)


def file_claims_batch(engine: Engine, *, ticket_ids: Sequence[int], reason: Reason, actor: str, now: datetime, chunk_size: int = 5000) -> list[int]:
    """File claims for many tickets, one transaction per chunk."""
    out: list[int] = []
    for start in range(0, len(ticket_ids), chunk_size):
        with engine.begin() as conn:
            out.extend(file_claims(conn, ticket_ids=ticket_ids[start : start + chunk_size], reason=reason, actor=actor, now=now))
    return out
