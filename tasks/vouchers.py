"""Vouchers (Decree 442): instead of money, a voucher for the price paid; used against another event
of the same organizer, or, not used by its expiry, turned back into the refund.

Every voucher is issued by its claim's `issue_voucher` step (states/lifecycle.py), in the same
transaction as the voucher row and the email with its number. Set-based over a list of tickets or
claims, one transaction per chunk, so a stadium's tens of thousands go in a few statements per
chunk; a chunk repeated after a crash issues nothing twice (a ticket holding a voucher takes no claim).
"""
from __future__ import annotations

import secrets
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from prefect import task
from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from models.claim_store import (
    BatchResult,
    ClaimNotFound,
    TransitionRefused,
    apply_batch,
    apply_batch_in,
    apply_trigger,
    claim_rows,
    claim_t,
    event_t,
    id_in,
    insert_claims,
    order_t,
    organizer_t,
    regime_rulings,
    ticket_t,
    unclaimable_tickets,
    venue_t,
    voucher_t,
)
from models.db import get_engine
from states.lifecycle import OPEN_STATES, ClaimState, Trigger
from states.policy import OrganizerPolicy, Reason, ReasonNotAllowed
from tasks.regimes import RegimeInputError, send_to_buyers
from tasks.run_actions import next_generation, queue_create

VOUCHER_CLAIM = "Ваучер вместо возврата (постановление № 442)"
_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: read aloud over the phone
_REASON_FOR_STATUS = {"cancelled": Reason.CANCELLED, "postponed": Reason.POSTPONED}


def new_voucher_number() -> str:
    """VCH-XXXX-XXXX-XXXX: 60 random bits, never derived from the claim (a number is worth money)."""
    bits = int.from_bytes(secrets.token_bytes(8), "big")  # 12 symbols of 5 bits from one call: a stadium issues 60,000 at once
    body = "".join(_ALPHABET[(bits >> (5 * i)) & 31] for i in range(12))
    return f"VCH-{body[:4]}-{body[4:8]}-{body[8:]}"


@dataclass(frozen=True)
class VoucherView:
    number: str
    claim_id: int
    ticket_id: int
    event_id: int
    organizer_id: int
    holder_email: str
    holder_name: str
    value: int
    issued_on: date
    valid_until: date
    status: str
    redeemed_event_id: int | None
    rule: str

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["issued_on"], out["valid_until"] = self.issued_on.isoformat(), self.valid_until.isoformat()
        return out


_VIEW = (voucher_t.c.number, voucher_t.c.claim_id, voucher_t.c.ticket_id, voucher_t.c.event_id, voucher_t.c.organizer_id,
         voucher_t.c.holder_email, voucher_t.c.holder_name, voucher_t.c.value, voucher_t.c.issued_on, voucher_t.c.valid_until,
         voucher_t.c.status, voucher_t.c.redeemed_event_id, voucher_t.c.rule)


def read_voucher(engine: Engine, number: str) -> VoucherView:
    with engine.connect() as conn:
        row = conn.execute(select(*_VIEW).where(voucher_t.c.number == number.strip().upper())).one_or_none()
    if row is None:
        raise RegimeInputError("number", "Ваучер не найден.", code="not_found", status=404)
    return VoucherView(*row)


def _event_facts(conn: Connection, event_ids: set[int]) -> dict[int, Any]:
    return {r.id: r for r in conn.execute(
        select(event_t.c.id, event_t.c.title, event_t.c.status, event_t.c.starts_at, event_t.c.original_starts_at, event_t.c.new_starts_at,
               event_t.c.regime_id, event_t.c.organizer_id, venue_t.c.timezone, organizer_t.c.policy)
        .join(venue_t, venue_t.c.id == event_t.c.venue_id).join(organizer_t, organizer_t.c.id == event_t.c.organizer_id)
        .where(event_t.c.id.in_(event_ids))
    )}


def write_vouchers(conn: Connection, claim_ids: list[int], *, now: datetime, actor: str, recipients_total: int | None = None) -> list[tuple[int, str]]:
    """The voucher rows of claims just moved to voucher_issued, and the email with each number, in the
    caller's transaction. Value: the price paid; validity: the organizer's policy (`voucher_valid_days`).
    The claim's approved amount becomes the voucher's value: what is owed if it expires unused."""
    if not claim_ids:
        return []
    rows = conn.execute(
        select(claim_t.c.id, claim_t.c.number, claim_t.c.ticket_id, claim_t.c.event_id, ticket_t.c.price_paid, order_t.c.buyer_email,
               order_t.c.buyer_name)
        .join(ticket_t, ticket_t.c.id == claim_t.c.ticket_id).join(order_t, order_t.c.id == ticket_t.c.order_id)
        .where(id_in(conn, claim_t.c.id, claim_ids))
        .order_by(claim_t.c.id)
    ).all()
    events = _event_facts(conn, {r.event_id for r in rows})
    rulings = regime_rulings(conn, events.values(), now)
    terms: dict[int, tuple[date, date, str]] = {}  # per event: issued on, valid until, the rule
    for ev in events.values():
        issued_on = now.astimezone(ZoneInfo(ev.timezone)).date()
        ruling = rulings[ev.id]
        terms[ev.id] = (issued_on, issued_on + timedelta(days=OrganizerPolicy.from_mapping(ev.policy or {}).voucher_valid_days),
                        ruling.text_ru if ruling else "")
    vouchers, messages, issued = [], [], []
    for r in rows:
        ev = events[r.event_id]
        issued_on, valid_until, rule = terms[r.event_id]
        number = new_voucher_number()
        vouchers.append({"number": number, "claim_id": r.id, "ticket_id": r.ticket_id, "event_id": r.event_id, "organizer_id": ev.organizer_id,
                         "holder_email": r.buyer_email, "holder_name": r.buyer_name, "value": r.price_paid, "issued_on": issued_on,
                         "valid_until": valid_until, "status": "issued", "rule": rule})
        messages.append((r.id, r.buyer_email, {
            "claim_number": r.number, "buyer_name": r.buyer_name, "event_title": ev.title, "voucher_number": number,
            "value_kopecks": r.price_paid, "valid_until": valid_until.isoformat(), "rule_ru": rule,
        }, f"voucher:claim:{r.id}:issued"))
        issued.append((r.id, number))
    conn.execute(insert(voucher_t), vouchers)
    paid = select(ticket_t.c.price_paid).where(ticket_t.c.id == claim_t.c.ticket_id).scalar_subquery()
    conn.execute(update(claim_t).where(id_in(conn, claim_t.c.id, [r.id for r in rows])).values(approved_amount=paid))
    send_to_buyers(conn, template="voucher_issued", messages=messages, started_by=actor, now=now, recipients_total=recipients_total)
    return issued


def _refusal(result: BatchResult) -> RegimeInputError | None:
    if result.refused:
        code, message = next(iter(result.refused.values()))[0]
        return RegimeInputError("ticket_id", message, code=code, status=409)
    if result.invalid or result.conflicts:
        return RegimeInputError("ticket_id", "Заявка по билету изменилась, попробуйте ещё раз.", code="conflict", status=409)
    return None


def take_voucher(engine: Engine, *, ticket_id: int, actor: str, now: datetime, order_number: str | None = None) -> VoucherView:
    """A buyer takes a voucher instead of money for one ticket: the claim is filed (or the ticket's
    claim still waiting for its money is used) and moved by `issue_voucher`, atomically with the
    voucher and its email. `order_number` scopes a buyer's call to their own order (404 otherwise)."""
    with engine.begin() as conn:
        row = conn.execute(
            select(ticket_t.c.id, event_t.c.status, order_t.c.number)
            .join(event_t, event_t.c.id == ticket_t.c.event_id).join(order_t, order_t.c.id == ticket_t.c.order_id)
            .where(ticket_t.c.id == ticket_id)
        ).one_or_none()
        if row is None or (order_number is not None and row.number != order_number):
            raise RegimeInputError("ticket_id", "Билет не найден.", code="not_found", status=404)
        reason = _REASON_FOR_STATUS.get(row.status)
        if reason is None:
            raise RegimeInputError("ticket_id", "Ваучер выдаётся только по отменённому или перенесённому мероприятию.", code="not_eligible", status=409)
        refused = unclaimable_tickets(conn, ticket_ids=[ticket_id], reason=reason)
        if refused:
            code, message = refused[ticket_id]
            raise RegimeInputError("ticket_id", message, code=code, status=409)
        open_claim = conn.execute(select(claim_t.c.id, claim_t.c.state).where(
            claim_t.c.ticket_id == ticket_id, claim_t.c.state.in_([s.value for s in OPEN_STATES]))).one_or_none()
        if open_claim is not None and open_claim.state not in (ClaimState.FILED.value, ClaimState.APPROVED.value):
            raise RegimeInputError("ticket_id", "По билету уже идёт возврат денег: обменять его на ваучер нельзя.", code="claim_open", status=409)
        try:
            claim_ids = [open_claim.id] if open_claim is not None else insert_claims(
                conn, claim_rows(conn, ticket_ids=[ticket_id], reason=reason, actor=actor, now=now, description=VOUCHER_CLAIM), actor=actor, now=now)
        except ReasonNotAllowed as exc:
            raise RegimeInputError("ticket_id", exc.message_ru, code=exc.code) from None
        except IntegrityError:
            raise RegimeInputError("ticket_id", "По этому билету уже есть заявка в работе.", code="claim_open", status=409) from None
        result = apply_batch_in(conn, claim_ids=claim_ids, trigger=Trigger.ISSUE_VOUCHER.value, actor=actor, now=now, note=VOUCHER_CLAIM)
        error = _refusal(result)
        if error is not None:
            raise error  # the transaction rolls back: no claim is left filed without its voucher
        ((_, number),) = write_vouchers(conn, claim_ids, now=now, actor=actor)
    return read_voucher(engine, number)


# --- many tickets: an event's holders all get vouchers ---------------------------------------------

@dataclass
class VoucherChunk:
    issued: int = 0
    skipped: dict[int, str] | None = None  # ticket id -> why no voucher (refunded, open claim, …)


def check_event_takes_vouchers(engine: Engine, *, event_id: int, now: datetime, organizer_id: int | None = None) -> Reason:
    """The event's change falls under a regime and its organizer offers vouchers; else RegimeInputError."""
    with engine.connect() as conn:
        events = _event_facts(conn, {event_id})
        ev = events.get(event_id)
        if ev is None or (organizer_id is not None and ev.organizer_id != organizer_id):
            raise RegimeInputError("event_id", "Мероприятие не найдено.", code="not_found", status=404)
        reason = _REASON_FOR_STATUS.get(ev.status)
        if reason is None or regime_rulings(conn, [ev], now)[event_id] is None:
            raise RegimeInputError("event_id", "Ваучеры выдаются по мероприятиям, отменённым или перенесённым в период режима повышенной готовности.",
                                   code="not_eligible", status=409)
        if not OrganizerPolicy.from_mapping(ev.policy or {}).vouchers_offered:
            raise RegimeInputError("event_id", "Организатор не предлагает ваучеры.", code="VOUCHER_NOT_OFFERED", status=409)
    return reason


def ticket_chunks(engine: Engine, *, event_id: int, size: int) -> list[list[int]]:
    with engine.connect() as conn:
        ids = list(conn.execute(select(ticket_t.c.id).where(ticket_t.c.event_id == event_id, ticket_t.c.barcode_status == "valid")
                                .order_by(ticket_t.c.id)).scalars())
    return [ids[i : i + size] for i in range(0, len(ids), size)]


def issue_vouchers_chunk(engine: Engine, *, event_id: int, ticket_ids: list[int], actor: str, now: datetime,
                         recipients_total: int | None = None) -> VoucherChunk:
    """One transaction: claims filed for the chunk's tickets that take one, moved by `issue_voucher`,
    vouchers and emails written. Tickets already refunded or holding a voucher, or with a claim in
    progress, are skipped with the reason; repeating a chunk issues nothing twice."""
    with engine.begin() as conn:
        status = conn.execute(select(event_t.c.status).where(event_t.c.id == event_id)).scalar_one()
        reason = _REASON_FOR_STATUS[status]
        skipped = {t: code for t, (code, _) in unclaimable_tickets(conn, ticket_ids=ticket_ids, reason=reason).items()}
        busy = set(conn.execute(select(claim_t.c.ticket_id).where(
            id_in(conn, claim_t.c.ticket_id, ticket_ids), claim_t.c.state.in_([s.value for s in OPEN_STATES]))).scalars())
        skipped |= {t: "claim_open" for t in busy if t not in skipped}
        fresh = [t for t in ticket_ids if t not in skipped]
        if not fresh:
            return VoucherChunk(0, skipped)
        try:
            claim_ids = insert_claims(conn, claim_rows(conn, ticket_ids=fresh, reason=reason, actor=actor, now=now, description=VOUCHER_CLAIM),
                                      actor=actor, now=now)
        except ClaimNotFound:
            raise RegimeInputError("ticket_ids", "Билет не найден.", code="not_found", status=404) from None
        result = apply_batch_in(conn, claim_ids=claim_ids, trigger=Trigger.ISSUE_VOUCHER.value, actor=actor, now=now, note=VOUCHER_CLAIM)
        error = _refusal(result)
        if error is not None:
            raise error
        write_vouchers(conn, result.moved[ClaimState.VOUCHER_ISSUED.value], now=now, actor=actor, recipients_total=recipients_total)
        return VoucherChunk(len(result.moved[ClaimState.VOUCHER_ISSUED.value]), skipped)


def issue_event_vouchers(engine: Engine, *, event_id: int, actor: str, now: datetime, chunk_size: int = 1000,
                         organizer_id: int | None = None) -> dict[str, Any]:
    """Every valid ticket of a regime event without a refund gets a voucher, chunk after chunk (the flow
    event-postponement does the same with progress artifacts)."""
    check_event_takes_vouchers(engine, event_id=event_id, now=now, organizer_id=organizer_id)
    chunks = ticket_chunks(engine, event_id=event_id, size=chunk_size)
    total = sum(len(c) for c in chunks)
    issued, skipped = 0, 0
    for chunk in chunks:
        done = issue_vouchers_chunk(engine, event_id=event_id, ticket_ids=chunk, actor=actor, now=now, recipients_total=total)
        issued += done.issued
        skipped += len(done.skipped or {})
    return {"event_id": event_id, "tickets": total, "issued": issued, "skipped": skipped, "chunks": len(chunks)}


# --- redeemed, or expired into the refund ----------------------------------------------------------

def redeem_voucher(engine: Engine, *, number: str, event_id: int, actor: str, now: datetime) -> VoucherView:
    """The holder uses the voucher for another event of the same organizer (`redeem_voucher`: the claim
    is closed); the voucher is marked redeemed, «Ваучер использован» is sent, all in one transaction."""
    number = number.strip().upper()
    with engine.begin() as conn:
        query = select(voucher_t).where(voucher_t.c.number == number)
        if conn.dialect.name == "postgresql":
            query = query.with_for_update()
        v = conn.execute(query).one_or_none()
        if v is None:
            raise RegimeInputError("number", "Ваучер не найден.", code="not_found", status=404)
        if v.status != "issued":
            message = "Ваучер уже использован." if v.status == "redeemed" else "Срок действия ваучера истёк."
            raise RegimeInputError("number", message, code=f"voucher_{v.status}", status=409)
        target = conn.execute(select(event_t.c.id, event_t.c.title, event_t.c.status, event_t.c.organizer_id).where(event_t.c.id == event_id)).one_or_none()
        if target is None:
            raise RegimeInputError("event_id", "Мероприятие не найдено.", code="not_found", status=404)
        if target.organizer_id != v.organizer_id:
            raise RegimeInputError("event_id", "Ваучер принимается только на мероприятия того же организатора.", code="other_organizer", status=409)
        if target.id == v.event_id:
            raise RegimeInputError("event_id", "Ваучер выдан взамен билета на это мероприятие: выберите другое мероприятие.", code="same_event", status=409)
        if target.status in ("cancelled", "replaced"):
            raise RegimeInputError("event_id", "Мероприятие отменено: ваучер на него использовать нельзя.", code="event_cancelled", status=409)
        try:
            apply_trigger(conn, claim_id=v.claim_id, trigger=Trigger.REDEEM_VOUCHER.value, actor=actor, now=now, note=f"voucher {number} -> event {event_id}")
        except TransitionRefused as exc:
            code, message = exc.refusals[0]
            raise RegimeInputError("number", message, code=code, status=409) from None
        conn.execute(update(voucher_t).where(voucher_t.c.id == v.id).values(status="redeemed", redeemed_event_id=event_id, redeemed_at=now,
                                                                           redeemed_by=actor))
        claim_number = conn.execute(select(claim_t.c.number).where(claim_t.c.id == v.claim_id)).scalar_one()
        send_to_buyers(conn, template="voucher_redeemed", started_by=actor, now=now, messages=[(v.claim_id, v.holder_email, {
            "claim_number": claim_number, "buyer_name": v.holder_name, "voucher_number": number, "value_kopecks": v.value,
            "event_title": target.title,
        }, f"voucher:{v.id}:redeemed")])
    return read_voucher(engine, number)


def _expired_vouchers_due(conn: Connection, now: datetime) -> list[int]:
    # `valid_until < tomorrow (UTC)` over-selects by at most a day across zones; the guard, in the venue's zone, decides.
    horizon = (now + timedelta(days=1)).date()
    return list(conn.execute(select(voucher_t.c.claim_id).where(voucher_t.c.status == "issued", voucher_t.c.valid_until < horizon)
                             .order_by(voucher_t.c.claim_id)).scalars())


def expire_vouchers(engine: Engine, *, now: datetime, actor: str = "sla-watch") -> list[int]:
    """Decree 442: a voucher not used by its expiry becomes the refund (`expire_voucher`: voucher_issued
    -> approved, under the regime's deadline when it still runs); the voucher is marked expired, the
    buyer told, and the claim's run created again to pay, in each chunk's transaction."""
    with engine.connect() as conn:
        ids = _expired_vouchers_due(conn, now)
    if not ids:
        return []

    def after_chunk(conn: Connection, chunk: BatchResult) -> None:
        moved = chunk.moved.get(ClaimState.APPROVED.value, [])
        if not moved:
            return
        conn.execute(update(voucher_t).where(id_in(conn, voucher_t.c.claim_id, moved)).values(status="expired"))
        rows = conn.execute(
            select(claim_t.c.id, claim_t.c.number, claim_t.c.approved_amount, claim_t.c.amount, claim_t.c.payout_due, voucher_t.c.number.label("voucher"),
                   voucher_t.c.holder_email, voucher_t.c.holder_name, voucher_t.c.rule, event_t.c.title)
            .join(voucher_t, voucher_t.c.claim_id == claim_t.c.id).join(event_t, event_t.c.id == claim_t.c.event_id)
            .where(id_in(conn, claim_t.c.id, moved))
        ).all()
        send_to_buyers(conn, template="voucher_expired", started_by=actor, now=now, recipients_total=len(ids), messages=[(r.id, r.holder_email, {
            "claim_number": r.number, "buyer_name": r.holder_name, "event_title": r.title, "voucher_number": r.voucher,
            "refund_kopecks": r.approved_amount if r.approved_amount is not None else r.amount,
            "payout_deadline": r.payout_due.isoformat() if r.payout_due else None, "rule_ru": r.rule,
        }, f"voucher:claim:{r.id}:expired") for r in rows])
        for claim_id in moved:
            queue_create(conn, claim_id=claim_id, now=now, generation=next_generation(conn, claim_id))

    result = apply_batch(engine, claim_ids=ids, trigger=Trigger.EXPIRE_VOUCHER.value, actor=actor, now=now, note="voucher expired unused",
                         after_chunk=after_chunk)
    return sorted(result.moved.get(ClaimState.APPROVED.value, []))


# --- the flow's and sla-watch's steps --------------------------------------------------------------

@task(name="voucher-chunks", retries=2, retry_delay_seconds=5)
def voucher_chunks(event_id: int, chunk_size: int) -> list[list[int]]:
    return ticket_chunks(get_engine(), event_id=event_id, size=chunk_size)


@task(name="issue-vouchers-chunk", retries=3, retry_delay_seconds=5)
def issue_chunk(event_id: int, ticket_ids: list[int], actor: str, now: datetime, recipients_total: int) -> int:
    return issue_vouchers_chunk(get_engine(), event_id=event_id, ticket_ids=ticket_ids, actor=actor, now=now,
                                recipients_total=recipients_total).issued


@task(name="expire-unused-vouchers", retries=2, retry_delay_seconds=5)
def expire_unused_vouchers(now: datetime) -> list[int]:
    """sla-watch: vouchers not used by their expiry become refunds (see `expire_vouchers`)."""
    return expire_vouchers(get_engine(), now=now)


@task(name="check-event-takes-vouchers")
def event_takes_vouchers(event_id: int, now: datetime) -> bool:
    """The flow's first step when it exchanges tickets: refuse at once (no retries) if the rules or the policy say no."""
    check_event_takes_vouchers(get_engine(), event_id=event_id, now=now)
    return True
