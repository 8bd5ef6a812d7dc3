"""An event postponed: the change recorded with its history, and every buyer told the new date and
their options, chunk by chunk (set-based over a list of orders; safe to repeat).

Art. 52.1 outside a regime: tickets stay valid for the new date; a buyer who cannot come may claim
100 % until the organizer's last day (`claims_until`, enforced at filing by states.policy). Under a
high-alert regime, Decree 442 (states/regimes.py) decides, and every notice cites the rule.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo

from prefect import task
from prefect.cache_policies import NO_CACHE
from sqlalchemy import func, insert, select, update
from sqlalchemy.engine import Connection, Engine

from models.claim_store import event_t, id_in, order_t, organizer_t, regime_rulings, ticket_t, venue_t
from models.db import get_engine
from models.tables import EventChange
from states.event_status import postponement_refusal
from states.policy import OrganizerPolicy
from states.regimes import RegimeRuling
from tasks import event_artifacts
from tasks.mass import event_date
from tasks.regimes import RegimeInputError, regime_for_event, send_to_buyers

event_change_t = EventChange.__table__
NOTICE_TEMPLATE = "event_postponed"


def artifact_key(change_id: int) -> str:
    """The event-postponement run's artifacts, one key per change (tasks/event_artifacts.py)."""
    return event_artifacts.event_key("event-postponement", change_id)


@dataclass(frozen=True)
class Postponement:
    event_id: int
    change_id: int
    title: str
    original_starts_at: datetime
    previous_starts_at: datetime
    new_starts_at: datetime | None
    claims_until: date | None
    regime_id: int | None
    ruling: RegimeRuling | None

    def to_json(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id, "change_id": self.change_id, "title": self.title,
            "original_starts_at": self.original_starts_at.isoformat(), "previous_starts_at": self.previous_starts_at.isoformat(),
            "new_starts_at": self.new_starts_at.isoformat() if self.new_starts_at else None,
            "claims_until": self.claims_until.isoformat() if self.claims_until else None,
            "regime_id": self.regime_id, "regime_rule": self.ruling.to_json() if self.ruling else None,
        }


_EVENT = (event_t.c.id, event_t.c.title, event_t.c.status, event_t.c.starts_at, event_t.c.original_starts_at, event_t.c.new_starts_at,
          event_t.c.regime_id, event_t.c.organizer_id, venue_t.c.timezone)


def _event(conn: Connection, event_id: int, organizer_id: int | None, *, for_update: bool = False) -> Any:
    query = select(*_EVENT).join(venue_t, venue_t.c.id == event_t.c.venue_id).where(event_t.c.id == event_id)
    if for_update and conn.dialect.name == "postgresql":
        query = query.with_for_update(of=event_t)
    row = conn.execute(query).one_or_none()
    if row is None or (organizer_id is not None and row.organizer_id != organizer_id):
        raise RegimeInputError("event_id", "Мероприятие не найдено.", code="not_found", status=404)
    return row


def record_postponement(engine: Engine, *, event_id: int, new_starts_at: datetime | None, claims_until: date | None, actor: str,
                        now: datetime, organizer_id: int | None = None, note: str = "") -> Postponement:
    """Postpone an event (again, possibly): the event's date moves, its first date is kept, the change
    is written to `event_change` with who made it; the regime its change falls under is attached.

    `new_starts_at` None: postponed, new date to be announced. `organizer_id` scopes an organizer's
    call to their own events (another's answers 404, like a missing one).
    """
    if new_starts_at is not None and (new_starts_at.tzinfo is None or new_starts_at.utcoffset() is None):
        raise RegimeInputError("new_starts_at", "Укажите дату и время с часовым поясом.")
    with engine.begin() as conn:
        ev = _event(conn, event_id, organizer_id, for_update=True)
        zone = ZoneInfo(ev.timezone)
        today = now.astimezone(zone).date()
        if new_starts_at is not None:
            if new_starts_at <= now:
                raise RegimeInputError("new_starts_at", "Новая дата мероприятия должна быть в будущем.")
            if new_starts_at == ev.starts_at:
                raise RegimeInputError("new_starts_at", "Новая дата совпадает с текущей.")
        if claims_until is not None:
            if claims_until < today:
                raise RegimeInputError("claims_until", "Последний день приёма заявок не может быть в прошлом.")
            if new_starts_at is not None and claims_until > new_starts_at.astimezone(zone).date():
                raise RegimeInputError("claims_until", "Последний день приёма заявок не может быть позже новой даты мероприятия.")
        # Bad input first (422, above), then what the event's status and date allow (409).
        when = event_date(conn, event_id)
        assert when is not None  # the event's row was read above, in this transaction
        refusal = postponement_refusal(ev.status, when=when, now=now)
        if refusal is not None:
            code, message = refusal
            raise RegimeInputError("event_id", message, code="wrong_status" if code == "EVENT_STATUS" else code.lower(), status=409)
        original = ev.original_starts_at or ev.starts_at
        regime = regime_for_event(conn, event_id=event_id, original_day=original.astimezone(zone).date(), changed_on=today)
        regime_id = regime.id if regime is not None else ev.regime_id
        values: dict[str, Any] = {"status": "postponed", "original_starts_at": original, "new_starts_at": new_starts_at,
                                  "claims_until": claims_until, "regime_id": regime_id}
        if new_starts_at is not None:
            values["starts_at"] = new_starts_at  # the date the tickets are valid for
        conn.execute(update(event_t).where(event_t.c.id == event_id).values(**values))
        ev_after = _event(conn, event_id, None)
        ruling = regime_rulings(conn, [ev_after], now)[event_id]
        change_id = conn.execute(insert(event_change_t).values(
            event_id=event_id, kind="postponed", original_starts_at=original, previous_starts_at=ev.starts_at, new_starts_at=new_starts_at,
            claims_until=claims_until, regime_id=regime_id, rule=ruling.rule.value if ruling else None, changed_by=actor, changed_at=now,
            note=note.strip(),
        )).inserted_primary_key[0]
    return Postponement(event_id, change_id, ev.title, original, ev.starts_at, new_starts_at, claims_until, regime_id, ruling)


def event_history(engine: Engine, *, event_id: int, organizer_id: int | None = None) -> list[dict[str, Any]]:
    """The event's changes, oldest first (original and new dates, who, when, the rule)."""
    with engine.connect() as conn:
        _event(conn, event_id, organizer_id)
        rows = conn.execute(select(event_change_t).where(event_change_t.c.event_id == event_id).order_by(event_change_t.c.id)).mappings().all()
    return [{k: (v.isoformat() if isinstance(v, datetime | date) else v) for k, v in r.items()} for r in rows]


# --- telling the buyers, chunk by chunk ----------------------------------------------------------

def order_chunks(engine: Engine, *, event_id: int, size: int) -> list[list[int]]:
    """The orders holding valid tickets of the event, in id order, cut in chunks of `size`."""
    with engine.connect() as conn:
        ids = list(conn.execute(
            select(ticket_t.c.order_id).where(ticket_t.c.event_id == event_id, ticket_t.c.barcode_status == "valid")
            .group_by(ticket_t.c.order_id).order_by(ticket_t.c.order_id)
        ).scalars())
    return [ids[i : i + size] for i in range(0, len(ids), size)]


def _change(conn: Connection, change_id: int) -> Any:
    row = conn.execute(select(event_change_t).where(event_change_t.c.id == change_id)).one_or_none()
    if row is None:
        raise RegimeInputError("change_id", "Перенос не найден.", code="not_found", status=404)
    return row


def notice_payload(change: Any, *, title: str, zone: ZoneInfo, policy: OrganizerPolicy, ruling: RegimeRuling | None) -> dict[str, Any]:
    """What every buyer of the event is told (the same for all; each message adds the order): the new
    date, the options the rules and the organizer's policy leave them, and the rule that applies."""
    new = change.new_starts_at.astimezone(zone) if change.new_starts_at else None
    refunds = ruling is None or ruling.treated_as_cancelled or policy.regime_postponed_refunds
    return {
        "event_title": title,
        "original_date": change.original_starts_at.astimezone(zone).date().isoformat(),
        "previous_date": change.previous_starts_at.astimezone(zone).date().isoformat(),
        "new_date": new.date().isoformat() if new else None,
        "new_time": f"{new:%H:%M}" if new else None,
        "claims_until": change.claims_until.isoformat() if change.claims_until else None,
        "refunds_accepted": refunds,
        "vouchers_offered": ruling is not None and policy.vouchers_offered,
        "treated_as_cancelled": bool(ruling and ruling.treated_as_cancelled),
        "refund_due": ruling.refund_due.isoformat() if ruling and ruling.refund_due else None,
        "rule_ru": ruling.text_ru if ruling else
        "ст. 52.1 Основ законодательства РФ о культуре: при переносе мероприятия билеты действительны на новую дату, "
        "а зритель, который не может прийти, вправе вернуть 100 % стоимости билета",
    }


def notify_postponement_chunk(engine: Engine, *, change_id: int, order_ids: list[int], now: datetime, started_by: str,
                              recipients_total: int | None = None) -> int:
    """One transaction: «Мероприятие перенесено» to each order's buyer of this chunk, through
    `send_to_buyers` (keyed by change and order, so a repeated chunk writes nothing twice)."""
    if not order_ids:
        return 0
    with engine.begin() as conn:
        change = _change(conn, change_id)
        ev = _event(conn, change.event_id, None)
        zone = ZoneInfo(ev.timezone)
        policy = OrganizerPolicy.from_mapping(conn.execute(select(organizer_t.c.policy).where(organizer_t.c.id == ev.organizer_id)).scalar_one() or {})
        ruling = regime_rulings(conn, [ev], now)[ev.id]
        common = notice_payload(change, title=ev.title, zone=zone, policy=policy, ruling=ruling)
        orders = conn.execute(
            select(order_t.c.id, order_t.c.number, order_t.c.buyer_name, order_t.c.buyer_email, func.count(ticket_t.c.id).label("tickets"))
            .join(ticket_t, ticket_t.c.order_id == order_t.c.id)
            .where(id_in(conn, order_t.c.id, order_ids), ticket_t.c.event_id == change.event_id, ticket_t.c.barcode_status == "valid")
            .group_by(order_t.c.id, order_t.c.number, order_t.c.buyer_name, order_t.c.buyer_email)
        ).all()
        messages = [
            (None, o.buyer_email, common | {"claim_number": o.number, "order_number": o.number, "buyer_name": o.buyer_name, "tickets": o.tickets},
             f"event_change:{change_id}:order:{o.id}")
            for o in orders
        ]
        return send_to_buyers(conn, template=NOTICE_TEMPLATE, messages=messages, started_by=started_by, now=now,
                              recipients_total=recipients_total, event_id=change.event_id)


def notify_postponement(engine: Engine, *, change_id: int, now: datetime, started_by: str, chunk_size: int = 1000) -> int:
    """Every buyer of the event told, chunk after chunk (the flow event-postponement does the same with
    progress artifacts for a stadium); returns the messages written."""
    with engine.connect() as conn:
        event_id = _change(conn, change_id).event_id
    chunks = order_chunks(engine, event_id=event_id, size=chunk_size)
    total = sum(len(c) for c in chunks)
    return sum(notify_postponement_chunk(engine, change_id=change_id, order_ids=c, now=now, started_by=started_by, recipients_total=total)
               for c in chunks)


# --- the flow's steps ----------------------------------------------------------------------------

@task(name="postponement-chunks", retries=2, retry_delay_seconds=5)
def postponement_chunks(change_id: int, chunk_size: int) -> list[list[int]]:
    engine = get_engine()
    with engine.connect() as conn:
        event_id = _change(conn, change_id).event_id
    return order_chunks(engine, event_id=event_id, size=chunk_size)


@task(name="notify-postponement-chunk", retries=3, retry_delay_seconds=5)
def notify_chunk(change_id: int, order_ids: list[int], now: datetime, started_by: str, recipients_total: int) -> int:
    return notify_postponement_chunk(get_engine(), change_id=change_id, order_ids=order_ids, now=now, started_by=started_by,
                                     recipients_total=recipients_total)


@task(name="event-of-change")
def event_of_change(change_id: int) -> int:
    with get_engine().connect() as conn:
        return _change(conn, change_id).event_id


@task(name="start-progress", cache_policy=NO_CACHE)
def start_progress(change_id: int, description: str) -> UUID:
    """The run's progress bar (tasks/event_artifacts.py, shared with mass-cancellation), keyed by change."""
    return event_artifacts.start_progress(key=artifact_key(change_id), description=description)


@task(name="report-progress", cache_policy=NO_CACHE)
def report_progress(artifact_id: UUID, done: int, total: int) -> float:
    return event_artifacts.report_progress(artifact_id, done, total)


#: The summary's names as ops read them in the run's table (flows/event_postponement.py writes the summary).
SUMMARY_LABELS_RU = {"change_id": "перенос №", "event_id": "мероприятие №", "orders": "заказов", "notices_written": "оповещений записано",
                     "tickets": "билетов", "vouchers_issued": "выдано ваучеров", "chunks": "частей"}


@task(name="publish-postponement-summary", cache_policy=NO_CACHE)
def publish_summary(change_id: int, summary: dict[str, Any]) -> None:
    """The run's summary as a table artifact, one key per change (the newest run of a change replaces it)."""
    event_artifacts.publish_table(event_artifacts.summary_rows(summary, labels=SUMMARY_LABELS_RU), key=artifact_key(change_id),
                                  description=f"Перенос № {change_id}: покупатели оповещены, ваучеры выданы")
