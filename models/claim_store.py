"""The lifecycle laid over the stored rows: filing claims and applying triggers, one or many at a time.

A step is written in one transaction: the new state (only if the claim is still in the state it was
read in), the audit row, the ticket's barcode when the step voids it, and the outbox rows.
`apply_trigger` serves one claim through the `transitions` machine; `apply_batch` serves thousands
with one UPDATE per (source, target, effects) group and bulk inserts for audit and outbox.
"""
from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import ARRAY, Integer, String, any_, bindparam, case, cast, func, insert, literal, literal_column, select, text, update
from sqlalchemy.engine import Connection, Engine

from models.db import UtcDateTime
from models.tables import (
    REFUND_HELD_SQL,
    REFUND_STATES,
    Claim,
    ClaimTransition,
    Document,
    Event,
    MassCancellation,
    Order,
    Organizer,
    OutboxMessage,
    Regime,
    Ticket,
    Venue,
    Voucher,
)
from states.lifecycle import (
    FACTLESS_TRIGGERS,
    NOTIFICATIONS,
    OPEN_STATES,
    SUPERSEDES,
    ClaimFacts,
    ClaimState,
    InvalidTrigger,
    Judge,
    Outcome,
    cached_quote,
    effects,
    fire,
)
from states.policy import EVENT_REASONS, DocumentEvidence, OrganizerPolicy, Reason, TicketPrice, check_reason_for_event, documents_last_day
from states.regimes import RegimeRuling, RegimeSpan, rule_for

claim_t = Claim.__table__
ticket_t = Ticket.__table__
order_t = Order.__table__
event_t = Event.__table__
mass_cancellation_t = MassCancellation.__table__
venue_t = Venue.__table__
organizer_t = Organizer.__table__
regime_t = Regime.__table__
document_t = Document.__table__
audit_t = ClaimTransition.__table__
outbox_t = OutboxMessage.__table__
voucher_t = Voucher.__table__

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


class TicketNotClaimable(ValueError):
    """A ticket takes no new claim: `refusals` maps ticket id -> (code, Russian message for the buyer)."""

    def __init__(self, refusals: Mapping[int, tuple[str, str]]):
        self.refusals = dict(refusals)
        shown = ", ".join(f"{t}: {code}" for t, (code, _) in sorted(self.refusals.items())[:10])
        super().__init__(f"tickets take no new claim ({shown})")


@dataclass
class BatchResult:
    moved: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))  # target state -> claim ids
    refused: dict[int, tuple[tuple[str, str], ...]] = field(default_factory=dict)
    conflicts: list[int] = field(default_factory=list)
    invalid: dict[int, str] = field(default_factory=dict)  # trigger not allowed from the claim's state

    @property
    def moved_count(self) -> int:
        return sum(len(v) for v in self.moved.values())

    def merge(self, other: BatchResult) -> None:
        for k, v in other.moved.items():
            self.moved[k].extend(v)
        self.refused.update(other.refused)
        self.conflicts.extend(other.conflicts)
        self.invalid.update(other.invalid)


def id_in(conn: Connection, column, values: Iterable[Any]):
    """`column IN (values)` as ONE bound parameter (a JSON array on SQLite, an array on PostgreSQL).

    An expanding IN of 5,000 ids costs SQLAlchemy a fresh compile and 5,000 named parameters per
    statement; this keeps one cached statement for any list size.
    """
    values = list(values)
    is_text = bool(values) and isinstance(values[0], str)
    if conn.dialect.name == "postgresql":
        return column == any_(bindparam(None, values, type_=ARRAY(String if is_text else Integer), unique=True))
    each = func.json_each(bindparam(None, json.dumps(values), type_=String, unique=True)).table_valued("value")
    return column.in_(select(each.c.value))


# --- facts: one query for any number of claims ---------------------------------------------------

@lru_cache(maxsize=256)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


@lru_cache(maxsize=1024)
def _policy(items: tuple) -> OrganizerPolicy:
    return OrganizerPolicy.from_mapping(dict(items))


@lru_cache(maxsize=4096)
def _ticket_price(price_paid: int, nominal: int | None, service_fee: int, delivery_fee: int, promo: bool) -> TicketPrice:
    # A hall has a handful of price categories: validate each once, not once per seat.
    return TicketPrice(price_paid, nominal, service_fee, delivery_fee, promo)


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
    claim_t.c.extended, claim_t.c.decidable_on, claim_t.c.decision_due, claim_t.c.payout_due, claim_t.c.bank_details.is_not(None).label("has_bank_details"),
    claim_t.c.name_mismatch_explanation, claim_t.c.ticket_id, claim_t.c.event_id,
    ticket_t.c.price_paid, ticket_t.c.nominal, ticket_t.c.service_fee, ticket_t.c.delivery_fee, ticket_t.c.promo,
    ticket_t.c.barcode_status,
    order_t.c.buyer_name, order_t.c.payment_method, order_t.c.acquirer_payment_id,
)
# Read once per event, not once per seat.
_EVENT_COLUMNS = (event_t.c.id, event_t.c.starts_at, event_t.c.status, event_t.c.regime_id, event_t.c.organizer_id, venue_t.c.timezone,
                  event_t.c.original_starts_at, event_t.c.new_starts_at)
_REASONS = {r.value: r for r in Reason}
_STATES = {s.value: s for s in ClaimState}


def _facts_query():
    return (
        select(*_FACTS_COLUMNS)
        .select_from(claim_t)
        .join(ticket_t, ticket_t.c.id == claim_t.c.ticket_id)
        .join(order_t, order_t.c.id == ticket_t.c.order_id)
    )


def _events(conn: Connection, event_ids: set[int]) -> dict[int, Any]:
    rows = conn.execute(select(*_EVENT_COLUMNS).join(venue_t, venue_t.c.id == event_t.c.venue_id).where(event_t.c.id.in_(event_ids)))
    return {r.id: r for r in rows}


def _order_dates(conn: Connection, claim_ids: Sequence[int]) -> dict[int, datetime]:
    if not claim_ids:
        return {}
    rows = conn.execute(
        select(claim_t.c.id, order_t.c.created_at)
        .join(ticket_t, ticket_t.c.id == claim_t.c.ticket_id)
        .join(order_t, order_t.c.id == ticket_t.c.order_id)
        .where(id_in(conn, claim_t.c.id, claim_ids))
    )
    return dict(rows.all())


def _policies(conn: Connection, organizer_ids: set[int]) -> dict[int, OrganizerPolicy]:
    rows = conn.execute(select(organizer_t.c.id, organizer_t.c.policy).where(organizer_t.c.id.in_(organizer_ids)))
    return {r.id: _thaw_policy(r.policy) for r in rows}


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


def regime_rulings(conn: Connection, events: Iterable[Any], now: datetime) -> dict[int, RegimeRuling | None]:
    """Decree 442 (states/regimes.py): which rule applies to each event (rows with id, regime_id, status,
    starts_at, original_starts_at, new_starts_at, timezone), judged on `now`'s day in the venue's zone."""
    events = list(events)
    regime_ids = {e.regime_id for e in events if e.regime_id}
    spans: dict[int, RegimeSpan] = {}
    if regime_ids:
        for r in conn.execute(select(regime_t.c.id, regime_t.c.region, regime_t.c.starts_on, regime_t.c.ends_on).where(regime_t.c.id.in_(regime_ids))):
            spans[r.id] = RegimeSpan(r.id, r.region, r.starts_on, r.ends_on)
    out: dict[int, RegimeRuling | None] = {}
    for e in events:
        span = spans.get(e.regime_id) if e.regime_id else None
        if span is None:
            out[e.id] = None
            continue
        zone = _zone(e.timezone)
        original = (e.original_starts_at or e.starts_at).astimezone(zone).date()
        new_day = e.new_starts_at.astimezone(zone).date() if e.status == "postponed" and e.new_starts_at else None
        out[e.id] = rule_for(regime=span, event_status=e.status, original_day=original, new_day=new_day, today=now.astimezone(zone).date())
    return out


def _vouchers_valid_until(conn: Connection, claim_ids: Sequence[int]) -> dict[int, Any]:
    if not claim_ids:
        return {}
    return dict(conn.execute(select(voucher_t.c.claim_id, voucher_t.c.valid_until).where(id_in(conn, voucher_t.c.claim_id, claim_ids))).all())


def load_facts(conn: Connection, claim_ids: Sequence[int], now: datetime, *, for_update: bool = False) -> dict[int, tuple[Any, ClaimFacts]]:
    """Read claims with everything their guards look at: one query, plus documents when any are documented."""
    query = _facts_query().where(id_in(conn, claim_t.c.id, claim_ids))
    if for_update and conn.dialect.name == "postgresql":
        # Lock in id order so two overlapping batches cannot deadlock. (SQLite needs no lock: its
        # write transactions begin IMMEDIATE, so nobody writes between this read and our update.)
        query = query.order_by(claim_t.c.id).with_for_update(of=claim_t)
    rows = conn.execute(query).all()
    documented = [r.id for r in rows if r.reason in (Reason.ILLNESS.value, Reason.DEATH.value)]
    docs = _documents_for(conn, documented)
    bought = _order_dates(conn, documented)  # Decree 1491: only documented claims ask when the order was made
    events = _events(conn, {r.event_id for r in rows})
    rulings = regime_rulings(conn, events.values(), now)
    vouchers = _vouchers_valid_until(conn, [r.id for r in rows if r.state == ClaimState.VOUCHER_ISSUED.value])
    policies = _policies(conn, {e.organizer_id for e in events.values()})
    starts = {e.id: e.starts_at.astimezone(_zone(e.timezone)) for e in events.values()}
    out: dict[int, tuple[Any, ClaimFacts]] = {}
    for r in rows:
        event = events[r.event_id]
        out[r.id] = (
            r,
            ClaimFacts(
                reason=_REASONS[r.reason],
                state=_STATES[r.state],
                filed_at=r.filed_at,
                event_start=starts[r.event_id],
                ticket=_ticket_price(r.price_paid, r.nominal, r.service_fee, r.delivery_fee, r.promo),
                barcode_status=r.barcode_status,
                payment_method=r.payment_method,
                acquirer_payment_id=r.acquirer_payment_id,
                has_bank_details=bool(r.has_bank_details),
                event_status=event.status,
                high_alert_regime=rulings[r.event_id] is not None,
                regime=rulings[r.event_id],
                voucher_valid_until=vouchers.get(r.id),
                policy=policies[event.organizer_id],
                order_created_at=bought.get(r.id),
                buyer_name=r.buyer_name,
                name_mismatch_explanation=r.name_mismatch_explanation,
                documents=docs.get(r.id, ()),
                extended=r.extended,
                decidable_on=r.decidable_on,
                decision_due=r.decision_due,
                payout_due=r.payout_due,
            ),
        )
    return out


# --- audit and outbox, set-based -----------------------------------------------------------------
#
# Both paths (one claim, a batch of thousands) write the audit trail and the buyer emails with
# INSERT ... SELECT over the claims just moved: one statement per group, no per-row Python.

def _json_object(dialect: str, pairs: Sequence[tuple[str, Any]]):
    args: list[Any] = []
    for key, value in pairs:
        args.extend([literal_column(f"'{key}'"), value])
    return (func.json_build_object if dialect == "postgresql" else func.json_object)(*args)


def _text(value: Any):
    return cast(literal(value, String), String)


def _int(value: Any):
    return cast(literal(value, Integer), Integer)


def _date_text(column):
    return cast(column, String)


def insert_audit(conn: Connection, ids: Sequence[int], *, trigger: str, source: str, dest: str, actor: str, now: datetime, note: str | None) -> None:
    if not ids:
        return
    conn.execute(
        insert(audit_t).from_select(
            ["claim_id", "trigger", "from_state", "to_state", "actor", "at", "note"],
            select(claim_t.c.id, _text(trigger), _text(source), _text(dest), _text(actor), literal(now, UtcDateTime), _text(note))
            .where(id_in(conn, claim_t.c.id, ids)),
        )
    )


@dataclass(frozen=True)
class EventDates:
    """Per-event facts for emails that SQL cannot compute portably (SQLite has no time zones)."""

    event_date: str
    documents_deadline: str


def event_dates(facts: ClaimFacts) -> EventDates:
    return EventDates(facts.event_start.date().isoformat(), documents_last_day(facts.event_start).isoformat())


def insert_notifications(
    conn: Connection,
    ids: Sequence[int],
    *,
    template: str,
    dates: EventDates,
    now: datetime,
    status: str,
    note: str | None,
    data: Mapping[str, Any],
) -> None:
    """Queue one buyer email per claim (claims just moved, version already bumped), keyed by claim and step.

    A refusal's voluntary fallback offer is per claim (`data["fallback_offers"]`: claim id -> percent
    and amount, from tasks.intake.fallback_offers), for one claim and a bulk refusal alike: the rows
    are written with one INSERT ... SELECT per distinct offer (a hall has a handful of prices).
    """
    if not ids:
        return
    offers: Mapping[Any, Mapping[str, Any]] = data.get("fallback_offers") or {}
    replaced = supersede_held(conn, ids, template=template) if status == "held" else {}
    groups: dict[tuple, list[int]] = defaultdict(list)
    for claim_id in ids:
        offer = offers.get(claim_id) or offers.get(str(claim_id)) or {}
        groups[(offer.get("percent"), offer.get("amount"), replaced.get(claim_id))].append(claim_id)
    for (percent, amount, includes), group in groups.items():
        _insert_notifications(conn, group, template=template, dates=dates, now=now, status=status, note=note,
                              fallback_percent=percent, fallback_kopecks=amount, includes=includes)


def supersede_held(conn: Connection, ids: Sequence[int], *, template: str) -> dict[int, str]:
    """Mark the claims' held letters that ``template`` replaces (states.lifecycle.SUPERSEDES) as
    `superseded`, before the new letter is queued; returns claim id -> the replaced template.

    Only loose held rows: not yet gathered under a mass send (whose recipient count a second person
    may be reviewing), never leased, so never possibly on the wire.
    """
    replaceable = SUPERSEDES.get(template)
    if not replaceable:
        return {}
    rows = conn.execute(
        update(outbox_t)
        .where(id_in(conn, outbox_t.c.claim_id, ids), outbox_t.c.status == "held", outbox_t.c.mass_send_id.is_(None),
               outbox_t.c.message_id.is_(None), outbox_t.c.template.in_(sorted(replaceable)))
        .values(status="superseded", last_error=f"superseded by {template}")
        .returning(outbox_t.c.claim_id, outbox_t.c.template)
    ).all()
    return {claim_id: replaced for claim_id, replaced in rows}


def _insert_notifications(conn: Connection, ids: Sequence[int], *, template: str, dates: EventDates, now: datetime, status: str,
                          note: str | None, fallback_percent: int | None, fallback_kopecks: int | None,
                          includes: str | None = None) -> None:
    dialect = conn.dialect.name
    payload = _json_object(dialect, [
        ("claim_number", claim_t.c.number),
        ("buyer_name", order_t.c.buyer_name),
        ("event_title", event_t.c.title),
        ("event_date", _text(dates.event_date)),
        ("documents_deadline", _text(dates.documents_deadline)),
        ("reason", claim_t.c.reason),
        ("decided_by", claim_t.c.decided_by),  # None: decided by the rules, no person (the emails say so)
        ("refund_kopecks", func.coalesce(claim_t.c.approved_amount, claim_t.c.amount)),
        ("payout_deadline", _date_text(claim_t.c.payout_due)),
        ("regime_refund_due", _date_text(claim_t.c.regime_refund_due)),  # Decree 442: the email cites it
        ("new_deadline", _date_text(claim_t.c.decision_due)),
        ("extension_reason", claim_t.c.extension_reason),
        ("rejection_reason", func.coalesce(claim_t.c.refusal_message, claim_t.c.decision_note, _text("Организатор отказал в возврате."))),
        # Who refused: the organizer, or the rules themselves (intake, expired documents, a used ticket).
        ("refusal_code", claim_t.c.refusal_code),
        ("channel", case((order_t.c.payment_method == "card", _text("card")), else_=_text("bank_transfer"))),
        ("fallback_percent", _int(fallback_percent)),
        ("fallback_kopecks", _int(fallback_kopecks)),
        ("note", _text(note)),
        ("includes", _text(includes)),  # a held letter this one replaced (supersede_held): say what it said
        # Why the event was cancelled or replaced, as its organizer or staff gave it (shown to buyers; a claim
        # of another reason gets none).
        ("event_change_note", case((claim_t.c.reason.in_(("cancelled", "replaced")), mass_cancellation_t.c.reason), else_=None)),
    ])
    dedup = (
        _text("claim:") + cast(claim_t.c.id, String) + _text(":v") + cast(claim_t.c.version - 1, String) + _text(f":{template}")
    )
    conn.execute(
        insert(outbox_t).from_select(
            ["kind", "dedup_key", "claim_id", "template", "recipient", "payload", "status", "attempts", "next_attempt_at", "created_at"],
            select(
                _text("email"), dedup, claim_t.c.id, _text(template), order_t.c.buyer_email, payload, _text(status), _int(0),
                literal(now, UtcDateTime), literal(now, UtcDateTime),
            )
            .select_from(claim_t)
            .join(ticket_t, ticket_t.c.id == claim_t.c.ticket_id)
            .join(order_t, order_t.c.id == ticket_t.c.order_id)
            .join(event_t, event_t.c.id == claim_t.c.event_id)
            .outerjoin(mass_cancellation_t, mass_cancellation_t.c.event_id == claim_t.c.event_id)
            .where(id_in(conn, claim_t.c.id, ids)),
        )
    )


# --- a ticket is refunded once --------------------------------------------------------------------
#
# The database holds the rule (uq_claim_ticket_refund over claim.refund_granted): the step that moves
# a claim into a money state sets the flag in the same UPDATE. The checks below only turn what the
# index would refuse into a refusal with a reason, before the UPDATE, so a batch is not aborted by one
# claim; two concurrent writers still meet the index.

TICKET_ALREADY_REFUNDED = (
    "TICKET_ALREADY_REFUNDED",
    "Возврат за этот билет уже одобрен или выплачен: билет возвращается только один раз.",
)


def refund_flag(dest: str) -> dict[str, Any]:
    return {"refund_granted": True} if dest in REFUND_STATES else {}


def refund_holders(conn: Connection, ticket_of_claim: Mapping[int, int]) -> set[int]:
    """Tickets among `ticket_of_claim`'s whose refund is held by another claim than the one given."""
    if not ticket_of_claim:
        return set()
    rows = conn.execute(
        select(claim_t.c.id, claim_t.c.ticket_id)
        .where(id_in(conn, claim_t.c.ticket_id, set(ticket_of_claim.values())), text(REFUND_HELD_SQL))
    ).all()
    return {r.ticket_id for r in rows if ticket_of_claim.get(r.id) != r.ticket_id}


def _without_refunded_tickets(conn: Connection, members: list, result: BatchResult) -> list:
    held = refund_holders(conn, {row.id: row.ticket_id for row, _ in members})
    if not held:
        return members
    keep = []
    for row, facts in members:
        if row.ticket_id in held:
            result.refused[row.id] = (TICKET_ALREADY_REFUNDED,)
        else:
            keep.append((row, facts))
    return keep


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
    entering = outcome.dest in REFUND_STATES and row.state not in REFUND_STATES
    if entering and row.ticket_id in refund_holders(conn, {claim_id: row.ticket_id}):
        raise TransitionRefused(claim_id, Outcome(trigger, row.state, None, (TICKET_ALREADY_REFUNDED,)))
    eff = effects(trigger, outcome.dest, facts, now, data)
    claim_values = {k: v for k, v in eff.items() if k not in TICKET_EFFECTS} | refund_flag(outcome.dest)
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
    insert_audit(conn, [claim_id], trigger=trigger, source=row.state, dest=outcome.dest, actor=actor, now=now, note=note)
    template = NOTIFICATIONS.get((trigger, outcome.dest))
    if template:
        insert_notifications(conn, [claim_id], template=template, dates=event_dates(facts), now=now, status="pending", note=note, data=data)
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
    after_chunk: Callable[[Connection, BatchResult], None] | None = None,
) -> BatchResult:
    """One trigger for many claims: per chunk, one transaction; per (source, target, effects) group,
    one UPDATE ... WHERE id IN (...) AND state = source RETURNING id; audit and outbox in bulk.

    Claims whose guard fails come back in `refused` with their reasons; claims moved by someone else
    between the read and the update come back in `conflicts`. `hold_notifications` stores the emails
    as `held` so a second person approves a mass send before anything leaves. `after_chunk` writes
    what goes with each chunk's steps (the runs to resume) in that chunk's transaction.
    """
    data = dict(data or {})
    ids = list(claim_ids)
    total = BatchResult()
    for start in range(0, len(ids), chunk_size):
        with engine.begin() as conn:
            chunk = _apply_chunk(conn, ids[start : start + chunk_size], trigger, actor, now, note, data, hold_notifications)
            if after_chunk is not None:
                after_chunk(conn, chunk)
            total.merge(chunk)
    return total


def apply_batch_in(conn: Connection, *, claim_ids: Sequence[int], trigger: str, actor: str, now: datetime, note: str | None = None,
                   data: Mapping[str, Any] | None = None, hold_notifications: bool = False) -> BatchResult:
    """`apply_batch` for one chunk inside the caller's transaction (`engine.begin()`), for a step that
    writes other rows with it (a claim filed and its voucher issued, atomically; the sales feed voids a
    ticket and closes its claims in one transaction; a mass cancellation files, assesses and starts the
    payouts of a chunk in ONE transaction, so a chunk is all done or not at all)."""
    if not claim_ids:
        return BatchResult()
    return _apply_chunk(conn, list(claim_ids), trigger, actor, now, note, dict(data or {}), hold_notifications)


@dataclass(slots=True)
class StateOnly:
    """What a factless trigger (no guard, effects from the clock only) needs of a claim."""

    state: ClaimState
    event_start: datetime


def load_states(conn: Connection, claim_ids: Sequence[int], *, for_update: bool = False) -> dict[int, tuple[Any, StateOnly]]:
    query = (
        select(claim_t.c.id, claim_t.c.state, claim_t.c.version, claim_t.c.ticket_id, claim_t.c.event_id, event_t.c.starts_at, venue_t.c.timezone)
        .select_from(claim_t)
        .join(event_t, event_t.c.id == claim_t.c.event_id)
        .join(venue_t, venue_t.c.id == event_t.c.venue_id)
        .where(id_in(conn, claim_t.c.id, claim_ids))
    )
    if for_update and conn.dialect.name == "postgresql":
        query = query.order_by(claim_t.c.id).with_for_update(of=claim_t)
    rows = conn.execute(query).all()
    starts: dict[tuple, datetime] = {}
    out = {}
    for r in rows:
        key = (r.starts_at, r.timezone)
        if key not in starts:
            starts[key] = r.starts_at.astimezone(_zone(r.timezone))
        out[r.id] = (r, StateOnly(_STATES[r.state], starts[key]))
    return out


def _apply_chunk(conn: Connection, ids: list[int], trigger: str, actor: str, now: datetime, note: str | None, data: dict, hold: bool) -> BatchResult:
    result = BatchResult()
    # Rows are locked for the chunk's transaction: a step committed by someone else between our read
    # and our write (even one that keeps the state, like an extension) cannot be overwritten.
    found = load_states(conn, ids, for_update=True) if trigger in FACTLESS_TRIGGERS else load_facts(conn, ids, now, for_update=True)
    groups: dict[tuple, list[tuple[Any, ClaimFacts]]] = defaultdict(list)
    judge = Judge(trigger, now)  # the machine's transitions and conditions, checked per claim
    for claim_id in ids:
        if claim_id not in found:
            result.invalid[claim_id] = "not found"
            continue
        row, facts = found[claim_id]
        try:
            outcome = judge(facts)
        except InvalidTrigger as exc:
            result.invalid[claim_id] = str(exc)
            continue
        if not outcome.allowed:
            result.refused[claim_id] = outcome.refusals
            continue
        eff = effects(trigger, outcome.dest, facts, now, data)
        groups[(row.state, outcome.dest, _effects_key(eff))].append((row, facts))

    status = "held" if hold else "pending"
    for (source, dest, eff_key), members in groups.items():
        if dest in REFUND_STATES and source not in REFUND_STATES:
            members = _without_refunded_tickets(conn, members, result)
            if not members:
                continue
        eff = dict(eff_key)
        claim_values = {k: v for k, v in eff.items() if k not in TICKET_EFFECTS} | refund_flag(dest)
        stmt = (
            update(claim_t)
            .where(id_in(conn, claim_t.c.id, [m[0].id for m in members]), claim_t.c.state == source)
            .values(state=dest, version=claim_t.c.version + 1, updated_at=now, **claim_values)
            .returning(claim_t.c.id)
        )
        moved = {r[0] for r in conn.execute(stmt)}
        by_event: dict[int, list[int]] = defaultdict(list)
        dates: dict[int, EventDates] = {}
        void_tickets: list[int] = []
        for row, facts in members:
            if row.id not in moved:
                result.conflicts.append(row.id)
                continue
            result.moved[dest].append(row.id)
            by_event[row.event_id].append(row.id)
            if row.event_id not in dates:
                dates[row.event_id] = event_dates(facts)
            void_tickets.append(row.ticket_id)
        moved_ids = [i for event_ids in by_event.values() for i in event_ids]
        if "ticket_barcode_status" in eff and void_tickets:
            conn.execute(update(ticket_t).where(id_in(conn, ticket_t.c.id, void_tickets)).values(barcode_status=eff["ticket_barcode_status"]))
        insert_audit(conn, moved_ids, trigger=trigger, source=source, dest=dest, actor=actor, now=now, note=note)
        template = NOTIFICATIONS.get((trigger, dest))
        if template:
            for event_id, event_ids in by_event.items():
                insert_notifications(conn, event_ids, template=template, dates=dates[event_id], now=now, status=status, note=note, data=data)
    return result


# --- filing --------------------------------------------------------------------------------------

def claim_number(ticket_id: int, seq: int) -> str:
    """The number shown to the buyer: the ticket and how many claims it has had."""
    return f"VZ-{ticket_id:07d}-{seq}"


@dataclass(frozen=True)
class _EventForRuling:
    id: int
    regime_id: int | None
    status: str
    starts_at: datetime
    original_starts_at: datetime | None
    new_starts_at: datetime | None
    timezone: str


def _quote_with_json(reason: Reason, event_start: datetime, filed_at: datetime, ticket: TicketPrice, policy: OrganizerPolicy,
                     regime: RegimeRuling | None = None):
    # Keyed by the venue's zone too (see states.lifecycle.cached_quote).
    return _quote_json_cached(reason, event_start, str(event_start.tzinfo), filed_at, ticket, policy, regime)


@lru_cache(maxsize=4096)
def _quote_json_cached(reason, event_start, zone, filed_at, ticket, policy, regime):
    quote = cached_quote(reason, event_start, filed_at, ticket, policy, regime)
    return quote, quote.to_json()  # shared dict, only ever serialised


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
    """The rows of new claims for these tickets, each with its quote (states.policy): built, not written.

    Raises ReasonNotAllowed (states.policy, a PolicyError with a Russian message and a field) when an
    event reason does not match the event's status, or a postponed event no longer takes claims.
    """
    reason = Reason(reason)
    tickets = conn.execute(
        select(
            ticket_t.c.id, ticket_t.c.event_id, ticket_t.c.price_paid, ticket_t.c.nominal, ticket_t.c.service_fee,
            ticket_t.c.delivery_fee, ticket_t.c.promo, event_t.c.starts_at, event_t.c.status.label("event_status"), event_t.c.claims_until,
            venue_t.c.timezone, organizer_t.c.policy, event_t.c.regime_id, event_t.c.original_starts_at, event_t.c.new_starts_at,
        )
        .select_from(ticket_t)
        .join(event_t, event_t.c.id == ticket_t.c.event_id)
        .join(venue_t, venue_t.c.id == event_t.c.venue_id)
        .join(organizer_t, organizer_t.c.id == event_t.c.organizer_id)
        .where(id_in(conn, ticket_t.c.id, ticket_ids))
    ).all()
    if len(tickets) != len(set(ticket_ids)):
        missing = set(ticket_ids) - {t.id for t in tickets}
        raise ClaimNotFound(f"unknown tickets: {sorted(missing)[:10]}")
    previous = dict(
        conn.execute(
            select(claim_t.c.ticket_id, func.count())
            .where(id_in(conn, claim_t.c.ticket_id, ticket_ids))
            .group_by(claim_t.c.ticket_id)
        ).all()
    )
    rows = []
    checked: set[int] = set()
    event_rows = {t.event_id: _EventForRuling(t.event_id, t.regime_id, t.event_status, t.starts_at, t.original_starts_at, t.new_starts_at, t.timezone)
                  for t in tickets}
    rulings = regime_rulings(conn, event_rows.values(), now)
    for t in tickets:
        event_start = t.starts_at.astimezone(_zone(t.timezone))
        if t.event_id not in checked:  # once per event: status and last day are the event's
            check_reason_for_event(reason=reason, event_status=t.event_status, filed_at=now, event_start=event_start,
                                   claims_until=t.claims_until)
            checked.add(t.event_id)
        quote, quote_json = _quote_with_json(
            reason, event_start, now,
            _ticket_price(t.price_paid, t.nominal, t.service_fee, t.delivery_fee, t.promo), _thaw_policy(t.policy),
            rulings[t.event_id],
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
                "quote": quote_json,
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
        conn.execute(select(claim_t.c.number, claim_t.c.id).where(id_in(conn, claim_t.c.number, numbers))).all()
    )
    claim_ids = [id_by_number[n] for n in numbers]
    insert_audit(conn, claim_ids, trigger="file", source="", dest=ClaimState.FILED.value, actor=actor, now=now, note=None)
    return claim_ids


def file_claims(conn: Connection, *, ticket_ids: Sequence[int], reason: Reason, actor: str, now: datetime, **kw: Any) -> list[int]:
    """File one claim per ticket (a buyer's one ticket, or a chunk of a mass cancellation).

    Raises TicketNotClaimable (nothing written) when any ticket takes no new claim (`unclaimable_tickets`).
    """
    refused = unclaimable_tickets(conn, ticket_ids=ticket_ids, reason=reason)
    if refused:
        raise TicketNotClaimable(refused)
    return insert_claims(conn, claim_rows(conn, ticket_ids=ticket_ids, reason=reason, actor=actor, now=now, **kw), actor=actor, now=now)


def file_claims_batch(engine: Engine, *, ticket_ids: Sequence[int], reason: Reason, actor: str, now: datetime, chunk_size: int = 5000) -> list[int]:
    """File claims for many tickets, one transaction per chunk; tickets that take no claim are left out."""
    out: list[int] = []
    for start in range(0, len(ticket_ids), chunk_size):
        with engine.begin() as conn:
            chunk = ticket_ids[start : start + chunk_size]
            refused = unclaimable_tickets(conn, ticket_ids=chunk, reason=reason)
            chunk = [t for t in chunk if t not in refused]
            if chunk:
                out.extend(insert_claims(conn, claim_rows(conn, ticket_ids=chunk, reason=reason, actor=actor, now=now), actor=actor, now=now))
    return out


_FALLBACK_REASONS = frozenset({Reason.VOLUNTARY}) | EVENT_REASONS
_REFUSED_TICKET = {
    "refunded": TICKET_ALREADY_REFUNDED,
    "scanned": ("TICKET_SCANNED", "Билет уже прошёл контроль на входе, вернуть его нельзя."),
    "void": ("TICKET_VOID", "Билет аннулирован: по нему уже был возврат."),
    "fallback_only": (
        "FALLBACK_ONLY",
        "По этому билету уже была заявка. Повторно можно подать только заявку на возврат по собственной инициативе.",
    ),
}


def unclaimable_tickets(conn: Connection, *, ticket_ids: Sequence[int], reason: Reason) -> dict[int, tuple[str, str]]:
    """Tickets that take no new claim, each with (code, Russian message). DESIGN "The rules":

    a ticket is refunded at most once (a claim of it holds the refund: uq_claim_ticket_refund); a void
    or scanned ticket takes no claim; one open claim per ticket (uq_claim_open_ticket); after a
    finished claim that paid nothing (refused, withdrawn) only the voluntary fallback is filed, or an
    event claim when the event was cancelled, replaced or postponed since.
    """
    if not ticket_ids:
        return {}
    barcodes = dict(conn.execute(select(ticket_t.c.id, ticket_t.c.barcode_status).where(id_in(conn, ticket_t.c.id, ticket_ids))).all())
    earlier: dict[int, list[Any]] = defaultdict(list)
    for r in conn.execute(
        select(claim_t.c.ticket_id, claim_t.c.state, claim_t.c.refund_granted).where(id_in(conn, claim_t.c.ticket_id, ticket_ids))
    ):
        earlier[r.ticket_id].append(r)
    refused: dict[int, tuple[str, str]] = {}
    for ticket_id in ticket_ids:
        claims = earlier.get(ticket_id, [])
        if any(c.refund_granted or c.state in REFUND_STATES for c in claims):
            why = "refunded"
        elif barcodes.get(ticket_id) in ("scanned", "void"):
            why = barcodes[ticket_id]
        elif any(c.state in OPEN_STATES for c in claims):
            continue  # uq_claim_open_ticket refuses it, also against a concurrent filing
        elif claims and Reason(reason) not in _FALLBACK_REASONS:
            why = "fallback_only"
        else:
            continue
        refused[ticket_id] = _REFUSED_TICKET[why]
    return refused
