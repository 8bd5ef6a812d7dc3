"""High-alert regimes as data (Decree 442): declare, end, list; which regime an event's change falls
under; and the one way this area tells buyers anything (`send_to_buyers`).

The rules themselves are pure, in states/regimes.py. Plain functions: the API (api/regimes.py), the
CLI (cli/regime_commands.py) and the tasks of sla-watch and the event-postponement flow call them.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from models.claim_store import claim_t, event_t, load_facts, regime_t, venue_t
from models.tables import OutboxMessage
from states.lifecycle import PAYOUT_STATES, regime_refund_due
from states.regimes import RegimeError, RegimeSpan, applicable_regime
from states.regions import UnknownRegion, subject_code
from tasks.intake import IntakeError
from tasks.mass_sends import queue_messages

outbox_t = OutboxMessage.__table__



class RegimeInputError(IntakeError):
    """Bad input for a regime, a postponement or a voucher: `field`, a Russian message, a code, an HTTP status."""


@dataclass(frozen=True)
class RegimeView:
    id: int
    region: str
    starts_on: date
    ends_on: date | None
    created_by: str | None
    ended_by: str | None

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["starts_on"] = self.starts_on.isoformat()
        out["ends_on"] = self.ends_on.isoformat() if self.ends_on else None
        return out


def _view(row: Any) -> RegimeView:
    return RegimeView(row.id, row.region, row.starts_on, row.ends_on, row.created_by, row.ended_by)


_COLUMNS = (regime_t.c.id, regime_t.c.region, regime_t.c.starts_on, regime_t.c.ends_on, regime_t.c.created_by, regime_t.c.ended_by)


def region_code(region: str) -> str:
    """A region as typed (`77`, `7`, `RU-MOW`, `92`) as venues and regimes store it: the subject's code
    (states/regions.py); RegimeInputError("region") otherwise."""
    region = region.strip()
    if not region:
        raise RegimeInputError("region", "Укажите регион.")
    try:
        return subject_code(region)
    except UnknownRegion as exc:
        raise RegimeInputError("region", str(exc)) from None


def add_regime(engine: Engine, *, region: str, starts_on: date, ends_on: date | None = None, actor: str, now: datetime) -> RegimeView:
    """Declare a regime in a region (Decree 442 applies to events there while it is in force)."""
    region = region_code(region)  # stored as venues store it
    try:
        RegimeSpan(None, region, starts_on, ends_on)
    except RegimeError:
        raise RegimeInputError("ends_on", "Дата окончания режима раньше даты начала.") from None
    with engine.begin() as conn:
        overlapping = [RegimeSpan(r.id, r.region, r.starts_on, r.ends_on)
                       for r in conn.execute(select(*_COLUMNS).where(regime_t.c.region == region))]
        for other in overlapping:
            if other.starts_on <= (ends_on or date.max) and starts_on <= (other.ends_on or date.max):
                raise RegimeInputError("starts_on", f"В регионе {region} уже действует режим № {other.id} в эти даты.", code="overlap", status=409)
        regime_id = conn.execute(insert(regime_t).values(region=region, starts_on=starts_on, ends_on=ends_on, note="", created_by=actor,
                                                         created_at=now)).inserted_primary_key[0]
        row = conn.execute(select(*_COLUMNS).where(regime_t.c.id == regime_id)).one()
    return _view(row)


def end_regime(engine: Engine, *, regime_id: int, ends_on: date, actor: str, now: datetime) -> RegimeView:
    """The regime ends on `ends_on` (inclusive): from here its 14-day publication and 180-day refund
    deadlines are known; each open claim whose event is treated as cancelled gets its refund deadline."""
    with engine.begin() as conn:
        row = conn.execute(select(*_COLUMNS).where(regime_t.c.id == regime_id)).one_or_none()
        if row is None:
            raise RegimeInputError("regime_id", "Режим не найден.", code="not_found", status=404)
        if ends_on < row.starts_on:
            raise RegimeInputError("ends_on", "Дата окончания режима раньше даты начала.")
        conn.execute(update(regime_t).where(regime_t.c.id == regime_id).values(ends_on=ends_on, ended_by=actor))
        claim_ids = list(conn.execute(
            select(claim_t.c.id).join(event_t, event_t.c.id == claim_t.c.event_id)
            .where(event_t.c.regime_id == regime_id, claim_t.c.state.in_([s.value for s in PAYOUT_STATES]))
        ).scalars())
        for claim_id, (_, facts) in load_facts(conn, claim_ids, now).items():
            due = regime_refund_due(facts)
            if due is not None:
                conn.execute(update(claim_t).where(claim_t.c.id == claim_id).values(regime_refund_due=due))
        row = conn.execute(select(*_COLUMNS).where(regime_t.c.id == regime_id)).one()
    return _view(row)


def list_regimes(engine: Engine, *, region: str | None = None) -> list[RegimeView]:
    """Every regime, oldest first; of one region when given, in any form `region_code` accepts
    (`RU-MOW` finds the regimes stored as `77`). An unknown region is RegimeInputError("region")."""
    query = select(*_COLUMNS).order_by(regime_t.c.starts_on, regime_t.c.id)
    if region is not None:
        query = query.where(regime_t.c.region == region_code(region))
    with engine.connect() as conn:
        return [_view(r) for r in conn.execute(query)]


def regime_for_event(conn: Connection, *, event_id: int, original_day: date, changed_on: date) -> RegimeSpan | None:
    """The regime an event's change falls under, through its venue's region (states.regimes.applicable_regime)."""
    region = conn.execute(
        select(venue_t.c.region).join(event_t, event_t.c.venue_id == venue_t.c.id).where(event_t.c.id == event_id)
    ).scalar_one()
    if not region:
        return None
    spans = [RegimeSpan(r.id, r.region, r.starts_on, r.ends_on)
             for r in conn.execute(select(*_COLUMNS[:4]).where(regime_t.c.region == region))]
    return applicable_regime(spans, region=region, original_day=original_day, changed_on=changed_on)


def attach_regime(conn: Connection, *, event_id: int, now: datetime) -> int | None:
    """An event cancelled (the mass-cancellation flow's first step) or postponed: the regime its change
    falls under is attached to it, once (its region's regime in force on the event's original date or
    on today's date in the venue's zone). From here every claim of the event is judged by Decree 442
    (models.claim_store.regime_rulings): the 180-day refund deadline from the regime's end, the rule
    cited, vouchers where the organizer's policy offers them. Returns the regime's id (None: none)."""
    from zoneinfo import ZoneInfo

    ev = conn.execute(
        select(event_t.c.regime_id, event_t.c.starts_at, event_t.c.original_starts_at, venue_t.c.timezone)
        .join(venue_t, venue_t.c.id == event_t.c.venue_id).where(event_t.c.id == event_id)
    ).one_or_none()
    if ev is None or ev.regime_id is not None:
        return ev.regime_id if ev is not None else None
    zone = ZoneInfo(ev.timezone)
    original = (ev.original_starts_at or ev.starts_at).astimezone(zone).date()
    regime = regime_for_event(conn, event_id=event_id, original_day=original, changed_on=now.astimezone(zone).date())
    if regime is None:
        return None
    conn.execute(update(event_t).where(event_t.c.id == event_id, event_t.c.regime_id.is_(None)).values(regime_id=regime.id))
    return regime.id


# --- telling buyers ------------------------------------------------------------------------------

Message = tuple[int | None, str, dict[str, Any], str]  # (claim id | None, recipient, payload, dedup key)


def _insert(conn: Connection):
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(outbox_t)


def send_to_buyers(conn: Connection, *, template: str, messages: Sequence[Message], started_by: str, now: datetime,
                   recipients_total: int | None = None, event_id: int | None = None) -> int:
    """Every buyer notification of this area goes through here, in the caller's transaction: the guarded
    mass send (tasks/mass_sends.queue_messages). Outbox rows, one per message, deduplicated by key (a
    repeated chunk writes nothing twice). A send to more than VOZVRAT_MASS_SEND_THRESHOLD recipients in
    all (`recipients_total`, for a send written chunk by chunk) waits `held` under one mass_send record
    until a second staff member approves it. Returns the number of rows written."""
    return queue_messages(conn, template=template, messages=messages, started_by=started_by, now=now, event_id=event_id,
                          recipients_total=recipients_total).written
