"""A mass cancellation's steps (flows/mass_cancellation.py puts them in order).

DESIGN, "Two paths, one machine": an event cancelled or replaced gets ONE flow run that moves its
tickets' claims in chunks (`VOZVRAT_MASS_CHUNK_SIZE`, default 2,000 tickets). A chunk is a task run:

1. in ONE transaction: a claim for every ticket of the chunk that takes one (100 % of the price paid,
   fees per the organizer's policy: states.policy), `assess` and `start_payout` for the chunk's
   claims through the machine's Judge (claim_store.apply_batch_in), audit and outbox rows in bulk, the
   buyers' emails `held` for the mass send;
2. the chunk's payouts opened, and its card refunds sent to the acquirer concurrently
   (`VOZVRAT_ACQUIRER_CONCURRENCY`, default 16), each with its own key, retried on 429/5xx;
3. a `mass_chunk` row: the chunk committed. A resumed or repeated run skips it.

Everything is idempotent by ticket: a ticket with a claim of this event's reason is moved on, never
filed again; a claim is moved only from the state it is in. Claims that leave the batch (a declined
card, a cash or BSO ticket without bank details, a scanned ticket, a claim already open for another
reason) are listed as follow-ups, each with its reason: the buyer is asked for bank details through
the claim's own `needs_bank_details` path, and ops see them in the summary and with
`vozvrat events follow-ups EVENT`.

`move_chunk(..., reason=...)` takes the claim reason as a parameter: a postponement or a regime's
cancellation (issue 13) moves its chunks the same way.
"""
from __future__ import annotations

import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from models.claim_store import apply_batch_in, claim_rows, id_in, insert_claims, unclaimable_tickets
from models.payouts import Payout
from models.tables import Claim, Event, MassCancellation, MassChunk, MassSend, Order, Ticket, Venue
from states.event_status import MASS_ACTIONS, EventDate, action_ru, mass_status_step
from states.lifecycle import OPEN_STATES, ClaimState
from states.policy import Reason
from tasks.acquirer import AcquirerPort
from tasks.auth import Principal
from tasks.mass_sends import hold_event_mail
from tasks.payouts import export_bank_transfers, open_payouts, submit_card_refunds_concurrently
from tasks.regimes import attach_regime, regime_for_event

event_t = Event.__table__
ticket_t = Ticket.__table__
order_t = Order.__table__
claim_t = Claim.__table__
payout_t = Payout.__table__
mass_t = MassCancellation.__table__
chunk_t = MassChunk.__table__
mass_send_t = MassSend.__table__
venue_t = Venue.__table__

S = ClaimState
# Claims that left the batch and what follows for each (the summary's failures, with reasons).
FOLLOW_UP_STATES = {
    S.NEEDS_BANK_DETAILS.value: ("BANK_DETAILS_MISSING", "Покупателю отправлен запрос банковских реквизитов."),
    S.PAYOUT_FAILED.value: ("PAYOUT_FAILED", "Возврат на карту не прошёл: повтор по расписанию или `vozvrat payouts retry`."),
    S.REJECTED.value: ("REJECTED", "Заявка отклонена правилами (см. причину в заявке)."),
}
EXAMPLES = 20  # claim numbers or barcodes kept per failure reason in a chunk's record


class MassRefused(ValueError):
    """The event cannot be cancelled or replaced now: `code` and a Russian message for ops and organizers."""

    def __init__(self, code: str, message_ru: str, status: int = 409):
        super().__init__(message_ru)
        self.code, self.message_ru, self.status = code, message_ru, status


@dataclass(frozen=True)
class MassRun:
    id: int
    event_id: int
    action: str
    reason_text: str
    started_by: str

    @property
    def claim_reason(self) -> Reason:
        return MASS_ACTIONS[self.action]


def _utc(now: datetime) -> datetime:
    if now.tzinfo is None:
        raise ValueError(f"naive datetime {now!r}: time must be tz-aware")
    return now.astimezone(UTC)


def _upsert(conn: Connection, table):
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)


def event_date(conn: Connection, event_id: int) -> EventDate | None:
    """When the event takes place, for states.event_status (None: no such event): the date its
    tickets are valid for in the venue's zone, whether a postponed event has a new date, and whether a
    regime of its region was in force on that day (Decree 442: it could not take place)."""
    from zoneinfo import ZoneInfo

    ev = conn.execute(
        select(event_t.c.status, event_t.c.starts_at, event_t.c.new_starts_at, venue_t.c.timezone)
        .join(venue_t, venue_t.c.id == event_t.c.venue_id).where(event_t.c.id == event_id)
    ).one_or_none()
    if ev is None:
        return None
    starts_at = ev.starts_at.astimezone(ZoneInfo(ev.timezone))
    day = starts_at.date()
    return EventDate(starts_at, dated=not (ev.status == "postponed" and ev.new_starts_at is None),
                     regime_on_the_day=regime_for_event(conn, event_id=event_id, original_day=day, changed_on=day) is not None)


def begin(engine: Engine, *, event_id: int, action: str, reason: str, started_by: str, now: datetime,
          flow_run_id: str | None = None) -> MassRun:
    """Set the event's status (guarded: states.event_status) and open, or find, its mass record."""
    now = _utc(now)
    reason = " ".join((reason or "").split())
    if not reason:
        raise MassRefused("REASON_MISSING", "Укажите причину отмены или замены мероприятия.", 422)
    with engine.begin() as conn:
        status = conn.execute(select(event_t.c.status).where(event_t.c.id == event_id)).scalar_one_or_none()
        if status is None:
            raise MassRefused("EVENT_NOT_FOUND", f"Мероприятие № {event_id} не найдено.", 404)
        existing = conn.execute(select(mass_t).where(mass_t.c.event_id == event_id)).mappings().first()
        if existing is not None and existing["action"] != action:
            raise MassRefused("OTHER_ACTION", f"Для мероприятия уже запущено действие «{action_ru(existing['action'])}».")
        when = event_date(conn, event_id)
        assert when is not None  # the event's row was read above, in this transaction
        step = mass_status_step(status, action, when=when, now=now)
        if step.refusal:
            code, message = step.refusal
            raise MassRefused(code, message, 422 if code == "UNKNOWN_ACTION" else 409)
        if step.new_status:
            moved = conn.execute(update(event_t).where(event_t.c.id == event_id, event_t.c.status == status).values(status=step.new_status)).rowcount
            if moved != 1:
                raise MassRefused("EVENT_CHANGED", "Статус мероприятия изменился, повторите запуск.")
        if action == "cancelled":
            # Decree 442: cancelled while its region's regime is in force -> every claim under the regime's rules.
            attach_regime(conn, event_id=event_id, now=now)
        if existing is None:
            conn.execute(
                _upsert(conn, mass_t).values(event_id=event_id, action=action, reason=reason, started_by=started_by, status="running",
                                             flow_run_id=flow_run_id, chunks_total=0, chunks_done=0, summary={}, created_at=now,
                                             updated_at=now).on_conflict_do_nothing(index_elements=["event_id"])
            )
        else:
            values: dict[str, Any] = {"status": "running", "updated_at": now}
            if flow_run_id:
                values["flow_run_id"] = flow_run_id
            conn.execute(update(mass_t).where(mass_t.c.event_id == event_id).values(**values))
        row = conn.execute(select(mass_t).where(mass_t.c.event_id == event_id)).mappings().one()
    return MassRun(row["id"], event_id, row["action"], row["reason"], row["started_by"])


def check_start(engine: Engine, *, event_id: int, action: str, reason: str, principal: Principal, now: datetime) -> None:
    """Before a run is created (API, CLI): the event exists, the caller may act on it (its organizer,
    or a staff supervisor), the action applies to its status and date (states.event_status: not an
    event that has already taken place), its mass cancellation is not done already, and a reason is
    given. Raises MassRefused."""
    now = _utc(now)
    if not " ".join((reason or "").split()):
        raise MassRefused("REASON_MISSING", "Укажите причину отмены или замены мероприятия.", 422)
    with engine.connect() as conn:
        event = conn.execute(select(event_t.c.status, event_t.c.organizer_id).where(event_t.c.id == event_id)).first()
        existing_row = conn.execute(select(mass_t.c.action, mass_t.c.status).where(mass_t.c.event_id == event_id)).first()
        when = event_date(conn, event_id)
    existing = existing_row.action if existing_row is not None else None
    allowed = principal.is_staff("supervisor") or (principal.kind == "organizer" and event is not None and principal.organizer_id == event.organizer_id)
    if event is None or not (allowed or principal.kind == "staff"):
        raise MassRefused("EVENT_NOT_FOUND", f"Мероприятие № {event_id} не найдено.", 404)
    if not allowed:
        raise MassRefused("FORBIDDEN", "Отменить или заменить мероприятие может его организатор или старший смены (supervisor).", 403)
    if existing is not None and existing != action:
        raise MassRefused("OTHER_ACTION", f"Для мероприятия уже запущено действие «{action_ru(existing)}».")
    assert when is not None  # the event exists (checked above)
    step = mass_status_step(event.status, action, when=when, now=now,
                            run_done=existing_row is not None and existing_row.action == action and existing_row.status == "done")
    if step.refusal:
        code, message = step.refusal
        raise MassRefused(code, message, 422 if code == "UNKNOWN_ACTION" else 409)


def plan_chunks(engine: Engine, *, mass_id: int, event_id: int, chunk_size: int) -> list[tuple[int, int]]:
    """The event's tickets in id order, cut into (first ticket id, last ticket id) ranges. A chunk's
    key is its first ticket, so a resumed run with the same tickets and size finds its done chunks."""
    if chunk_size < 1:
        raise ValueError("a chunk has at least one ticket")
    with engine.connect() as conn:
        ids = list(conn.execute(select(ticket_t.c.id).where(ticket_t.c.event_id == event_id).order_by(ticket_t.c.id)).scalars())
    chunks = [(ids[i], ids[min(i + chunk_size, len(ids)) - 1]) for i in range(0, len(ids), chunk_size)]
    with engine.begin() as conn:
        conn.execute(update(mass_t).where(mass_t.c.id == mass_id).values(chunks_total=len(chunks)))
    return chunks


@dataclass
class ChunkResult:
    first_ticket_id: int
    last_ticket_id: int
    skipped: bool = False  # committed by an earlier run
    tickets: int = 0
    claims: int = 0  # this event's claims of the chunk (filed now or earlier)
    filed: int = 0
    states: dict[str, int] = field(default_factory=dict)
    amounts: dict[str, int] = field(default_factory=dict)  # kopecks approved, by payment channel
    refunds: dict[str, int] = field(default_factory=dict)  # card refund calls: asked, succeeded, failed ...
    failures: dict[str, dict[str, Any]] = field(default_factory=dict)  # code -> {count, message_ru, examples}

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _note_failure(failures: dict[str, dict[str, Any]], code: str, message: str, example: str) -> None:
    entry = failures.setdefault(code, {"count": 0, "message_ru": message, "examples": []})
    entry["count"] += 1
    if len(entry["examples"]) < EXAMPLES:
        entry["examples"].append(example)


def _chunk_claims(conn: Connection, event_id: int, reason: Reason, first: int, last: int) -> list[Any]:
    return conn.execute(
        select(claim_t.c.id, claim_t.c.state, claim_t.c.number, claim_t.c.ticket_id)
        .where(claim_t.c.event_id == event_id, claim_t.c.reason == reason.value, claim_t.c.ticket_id.between(first, last))
        .order_by(claim_t.c.id)
    ).all()


def move_chunk(
    engine: Engine,
    acquirer: AcquirerPort,
    *,
    run: MassRun,
    first_ticket_id: int,
    last_ticket_id: int,
    now: datetime,
    reason: Reason | None = None,
    concurrency: int = 16,
    hold_notifications: bool = True,
    timings: dict[str, float] | None = None,
    **refund_options: Any,
) -> ChunkResult:
    """One chunk of tickets: claims filed, approved and paid (see the module docstring). `reason` is
    the claim reason (default: the run's action's, cancelled or replaced); `refund_options` go to
    tasks.payouts.submit_card_refunds_concurrently (attempts, backoff_base, sleep); `timings`, when
    given, adds the seconds spent on the claims ("claims") and on the card refunds ("refunds")."""
    now = _utc(now)
    started = time.perf_counter()
    reason = Reason(reason or run.claim_reason)
    result = ChunkResult(first_ticket_id, last_ticket_id)
    with engine.connect() as conn:
        done = conn.execute(select(chunk_t.c.counts).where(chunk_t.c.mass_cancellation_id == run.id,
                                                           chunk_t.c.first_ticket_id == first_ticket_id)).scalar_one_or_none()
    if done is not None:
        return ChunkResult(**(done | {"skipped": True}))

    with engine.begin() as conn:
        tickets = conn.execute(
            select(ticket_t.c.id, ticket_t.c.barcode)
            .where(ticket_t.c.event_id == run.event_id, ticket_t.c.id.between(first_ticket_id, last_ticket_id))
            .order_by(ticket_t.c.id)
        ).all()
        ticket_ids = [t.id for t in tickets]
        barcode = {t.id: t.barcode for t in tickets}
        # Tickets that already have a claim of this reason (an earlier run's): moved on, never filed again.
        ours = {c.ticket_id for c in _chunk_claims(conn, run.event_id, reason, first_ticket_id, last_ticket_id)}
        refused = unclaimable_tickets(conn, ticket_ids=ticket_ids, reason=reason)
        open_other = {
            r.ticket_id: r.number for r in conn.execute(
                select(claim_t.c.ticket_id, claim_t.c.number).where(
                    id_in(conn, claim_t.c.ticket_id, ticket_ids), claim_t.c.state.in_([s.value for s in OPEN_STATES]),
                    claim_t.c.reason != reason.value)
            )
        }
        to_file = [t for t in ticket_ids if t not in refused and t not in ours and t not in open_other]
        if to_file:
            insert_claims(conn, claim_rows(conn, ticket_ids=to_file, reason=reason, actor=run.started_by, now=now,
                                           description=run.reason_text), actor=run.started_by, now=now)
        result.filed = len(to_file)
        for ticket_id, (code, message) in refused.items():
            if ticket_id in ours:
                continue
            _note_failure(result.failures, code, message, barcode[ticket_id])
        for number in open_other.values():
            _note_failure(result.failures, "OPEN_CLAIM", "По билету уже есть открытая заявка по другой причине: её ведут отдельно.", number)
        claims = _chunk_claims(conn, run.event_id, reason, first_ticket_id, last_ticket_id)
        filed = [c.id for c in claims if c.state == S.FILED.value]
        if filed:
            apply_batch_in(conn, claim_ids=filed, trigger="assess", actor=run.started_by, now=now, note=run.reason_text,
                        hold_notifications=hold_notifications)
        approved = [c.id for c in _chunk_claims(conn, run.event_id, reason, first_ticket_id, last_ticket_id) if c.state == S.APPROVED.value]
        if approved:
            apply_batch_in(conn, claim_ids=approved, trigger="start_payout", actor="system", now=now, note=run.reason_text,
                        hold_notifications=hold_notifications)

    claim_ids = [c.id for c in _chunk_claims_engine(engine, run.event_id, reason, first_ticket_id, last_ticket_id)]
    open_payouts(engine, now=now, claim_ids=claim_ids)
    paying = time.perf_counter()
    refunds = submit_card_refunds_concurrently(engine, acquirer, now=now, claim_ids=claim_ids, concurrency=concurrency,
                                               hold_notifications=hold_notifications, **refund_options)
    result.refunds = {k: getattr(refunds, k) for k in refunds._COUNTS}
    if timings is not None:
        timings["claims"] = timings.get("claims", 0.0) + paying - started
        timings["refunds"] = timings.get("refunds", 0.0) + time.perf_counter() - paying
    _summarise_claims(engine, run, reason, result, now=now)
    result.tickets = len(ticket_ids)
    with engine.begin() as conn:
        stored = conn.execute(
            _upsert(conn, chunk_t).values(mass_cancellation_id=run.id, first_ticket_id=first_ticket_id, last_ticket_id=last_ticket_id,
                                          done_at=now, counts=result.to_json())
            .on_conflict_do_nothing(index_elements=["mass_cancellation_id", "first_ticket_id"]).returning(chunk_t.c.id)
        ).first()
        if stored is not None:
            conn.execute(update(mass_t).where(mass_t.c.id == run.id).values(chunks_done=mass_t.c.chunks_done + 1, updated_at=now))
    return result


def _chunk_claims_engine(engine: Engine, event_id: int, reason: Reason, first: int, last: int) -> list[Any]:
    with engine.connect() as conn:
        return _chunk_claims(conn, event_id, reason, first, last)


def _summarise_claims(engine: Engine, run: MassRun, reason: Reason, result: ChunkResult, *, now: datetime) -> None:
    """States, amounts by payment channel and the follow-ups of the chunk's claims, as they stand."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(claim_t.c.number, claim_t.c.state, func.coalesce(claim_t.c.approved_amount, claim_t.c.amount).label("amount"),
                   order_t.c.payment_method, claim_t.c.refusal_code, claim_t.c.refusal_message)
            .select_from(claim_t)
            .join(ticket_t, ticket_t.c.id == claim_t.c.ticket_id)
            .join(order_t, order_t.c.id == ticket_t.c.order_id)
            .where(claim_t.c.event_id == run.event_id, claim_t.c.reason == reason.value,
                   claim_t.c.ticket_id.between(result.first_ticket_id, result.last_ticket_id))
        ).all()
        errors = dict(conn.execute(
            select(claim_t.c.number, payout_t.c.last_error).join(claim_t, claim_t.c.id == payout_t.c.claim_id)
            .where(claim_t.c.event_id == run.event_id, claim_t.c.state == S.PAYOUT_FAILED.value,
                   claim_t.c.ticket_id.between(result.first_ticket_id, result.last_ticket_id))
        ).all())
    states: Counter[str] = Counter()
    amounts: dict[str, int] = defaultdict(int)
    for r in rows:
        states[r.state] += 1
        if r.state != S.REJECTED.value:
            amounts[r.payment_method] += int(r.amount or 0)
        if r.state in FOLLOW_UP_STATES:
            code, message = FOLLOW_UP_STATES[r.state]
            if r.state == S.REJECTED.value and r.refusal_code:
                code, message = r.refusal_code, r.refusal_message or message
            if r.state == S.PAYOUT_FAILED.value and errors.get(r.number):
                message = f"{message} Ответ эквайера: {errors[r.number][:200]}"
            _note_failure(result.failures, code, message, r.number)
    result.claims = len(rows)
    result.states = dict(states)
    result.amounts = dict(amounts)


@dataclass
class MassSummary:
    event_id: int
    action: str
    reason: str
    started_by: str
    tickets: int = 0
    claims: int = 0
    filed: int = 0
    chunks: int = 0
    states: dict[str, int] = field(default_factory=dict)
    amounts: dict[str, int] = field(default_factory=dict)
    refunds: dict[str, int] = field(default_factory=dict)
    failures: dict[str, dict[str, Any]] = field(default_factory=dict)
    mass_sends: list[int] = field(default_factory=list)
    export_batch_file: str | None = None
    exported: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def finish(engine: Engine, *, run: MassRun, now: datetime, export_dir: Path | None = None) -> MassSummary:
    """After the chunks: the event's held emails gathered under mass sends for a second person, its
    ready bank transfers exported as one 1C batch, and the summary stored on the mass record."""
    now = _utc(now)
    with engine.begin() as conn:
        made = hold_event_mail(conn, event_id=run.event_id, started_by=run.started_by, now=now)
    summary = MassSummary(run.event_id, run.action, run.reason_text, run.started_by)
    if export_dir is not None:
        out = Path(export_dir) / f"1c-event-{run.event_id}-{now:%Y%m%dT%H%M%SZ}.txt"
        summary.exported = export_bank_transfers(engine, out=out, now=now, event_id=run.event_id)
        summary.export_batch_file = str(out) if summary.exported else None
    with engine.connect() as conn:
        chunks = [r[0] for r in conn.execute(select(chunk_t.c.counts).where(chunk_t.c.mass_cancellation_id == run.id))]
        # This run's records and any an earlier (interrupted) run made.
        summary.mass_sends = sorted(set(made) | set(conn.execute(select(mass_send_t.c.id).where(mass_send_t.c.event_id == run.event_id)).scalars()))
    states: Counter[str] = Counter()
    amounts: Counter[str] = Counter()
    refunds: Counter[str] = Counter()
    for c in chunks:
        summary.tickets += c["tickets"]
        summary.claims += c["claims"]
        summary.filed += c["filed"]
        states.update(c["states"])
        amounts.update(c["amounts"])
        refunds.update(c["refunds"])
        for code, entry in c["failures"].items():
            into = summary.failures.setdefault(code, {"count": 0, "message_ru": entry["message_ru"], "examples": []})
            into["count"] += entry["count"]
            into["examples"] = (into["examples"] + entry["examples"])[:EXAMPLES]
    summary.chunks = len(chunks)
    summary.states, summary.amounts, summary.refunds = dict(states), dict(amounts), dict(refunds)
    with engine.begin() as conn:
        conn.execute(update(mass_t).where(mass_t.c.id == run.id).values(status="done", summary=summary.to_json(), finished_at=now,
                                                                        updated_at=now))
    return summary


def progress(engine: Engine, event_id: int) -> dict[str, Any] | None:
    """The mass record of an event as it stands (the CLI's progress bar reads it)."""
    with engine.connect() as conn:
        row = conn.execute(select(mass_t).where(mass_t.c.event_id == event_id)).mappings().first()
    return dict(row) if row else None


def follow_ups(engine: Engine, event_id: int) -> list[dict[str, Any]]:
    """The event's claims that left the batch, one by one: number, state, buyer email, why."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(claim_t.c.number, claim_t.c.state, order_t.c.buyer_email, order_t.c.payment_method, claim_t.c.refusal_message)
            .select_from(claim_t)
            .join(ticket_t, ticket_t.c.id == claim_t.c.ticket_id)
            .join(order_t, order_t.c.id == ticket_t.c.order_id)
            .where(claim_t.c.event_id == event_id, claim_t.c.state.in_(list(FOLLOW_UP_STATES)))
            .order_by(claim_t.c.id)
        ).all()
    return [
        {"number": r.number, "state": r.state, "buyer_email": r.buyer_email, "payment_method": r.payment_method,
         "why": r.refusal_message or FOLLOW_UP_STATES[r.state][1]}
        for r in rows
    ]


def ticket_count(engine: Engine, event_id: int) -> int:
    """Tickets of the event (for the API's answer and the CLI's progress)."""
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(ticket_t).where(ticket_t.c.event_id == event_id)).scalar_one()


__all__ = ["MassRefused", "MassRun", "check_start", "ChunkResult", "MassSummary", "begin", "plan_chunks", "move_chunk", "finish", "progress",
           "follow_ups", "ticket_count"]
