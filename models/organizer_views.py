"""What organizers and staff read: the claims waiting on a decision (filtered, paged) and one claim in full.

Reads only. The scope is an argument: `organizer_id` limits every query to that organizer's events
(another organizer's claim is simply not found); None reads any organizer's (staff).
Deadlines in working days are counted by states/calendar from `today`, the caller's day.
"""
from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import and_, func, or_, select
from sqlalchemy.engine import Connection

from models.claim_store import audit_t, claim_t, document_t, event_t, id_in, order_t, organizer_t, ticket_t
from models.tables import Venue
from states.calendar import add_working_days, working_days_left
from states.lifecycle import ClaimState

venue_t = Venue.__table__

#: What "waiting for a decision" means: the organizer can decide these now.
WAITING_STATES = (ClaimState.AWAITING_ORGANIZER.value, ClaimState.ESCALATED.value)
MAX_PAGE = 500


class BadCursor(ValueError):
    """A cursor that this service did not hand out."""


@dataclass(frozen=True)
class ClaimFilter:
    states: tuple[str, ...] = WAITING_STATES
    event_id: int | None = None
    reason: str | None = None
    overdue: bool | None = None  # True: decision deadline passed; False: not passed
    due_within_days: int | None = None  # decision due within N working days from today (overdue ones included)


class ClaimRow(BaseModel):
    """One claim in a list; also the API's `ClaimSummary` (api/organizer.py), field for field."""

    model_config = ConfigDict(frozen=True)

    id: int
    number: str
    state: str
    reason: str
    event_id: int
    event_title: str
    event_starts_at: datetime
    event_timezone: str = Field(description="Часовой пояс площадки (IANA), в нём показывается время мероприятия")
    organizer_id: int
    organizer_name: str
    buyer_name: str
    amount_kopecks: int
    decision_due: date | None
    working_days_left: int | None = Field(description="Рабочих дней до срока решения; отрицательное — просрочено на столько дней")
    overdue: bool
    extended: bool
    version: int


@dataclass(frozen=True)
class ClaimPage:
    items: list[ClaimRow]
    next_cursor: str | None
    total: int


class DocumentFacts(BaseModel):
    """What is known of a claim's document; the API adds its download address (`DocumentOut`)."""

    model_config = ConfigDict(frozen=True)

    id: int
    kind: str
    received_at: datetime
    filename: str | None
    content_type: str | None
    size: int | None
    sick_from: date | None
    sick_to: date | None
    person_name: str | None
    relation: str | None
    judged_false: bool


class DocumentInfo(DocumentFacts):
    has_file: bool


class ClaimRecord(BaseModel):
    """A claim's own facts beyond its list row: shared by `ClaimDetail` and the API's `ClaimOut`."""

    model_config = ConfigDict(frozen=True)

    description: str
    name_mismatch_explanation: str | None
    filed_at: datetime
    decidable_on: date | None
    deadline_provisional: bool
    extension_reason: str | None
    decided_at: datetime | None
    decided_by: str | None
    decision_note: str | None
    refusal_code: str | None
    refusal_message: str | None


class ClaimDetail(ClaimRecord):
    row: ClaimRow
    quote: dict[str, Any]
    approved_amount: int | None
    documents: list[DocumentInfo] = Field(default_factory=list)
    history: list[dict[str, Any]] = Field(default_factory=list)


def _columns():
    return (
        claim_t.c.id, claim_t.c.number, claim_t.c.state, claim_t.c.reason, claim_t.c.event_id, event_t.c.title, event_t.c.starts_at,
        venue_t.c.timezone.label("event_timezone"), event_t.c.organizer_id, organizer_t.c.name.label("organizer_name"), order_t.c.buyer_name,
        func.coalesce(claim_t.c.approved_amount, claim_t.c.amount).label("amount"), claim_t.c.decision_due, claim_t.c.extended,
        claim_t.c.version,
    )


def _joined(*columns):
    return (
        select(*columns)
        .select_from(claim_t)
        .join(event_t, event_t.c.id == claim_t.c.event_id)
        .join(organizer_t, organizer_t.c.id == event_t.c.organizer_id)
        .join(venue_t, venue_t.c.id == event_t.c.venue_id)
        .join(ticket_t, ticket_t.c.id == claim_t.c.ticket_id)
        .join(order_t, order_t.c.id == ticket_t.c.order_id)
    )


def _row(r, today: date) -> ClaimRow:
    left = working_days_left(today, r.decision_due) if r.decision_due is not None else None
    return ClaimRow(
        id=r.id, number=r.number, state=r.state, reason=r.reason, event_id=r.event_id, event_title=r.title, event_starts_at=r.starts_at, event_timezone=r.event_timezone,
        organizer_id=r.organizer_id, organizer_name=r.organizer_name, buyer_name=r.buyer_name, amount_kopecks=int(r.amount or 0),
        decision_due=r.decision_due, working_days_left=left, overdue=left is not None and left < 0, extended=bool(r.extended),
        version=r.version,
    )


def _encode(due: date | None, claim_id: int) -> str:
    raw = json.dumps([due.isoformat() if due else None, claim_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(cursor: str) -> tuple[date | None, int]:
    try:
        due, claim_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        parsed = (date.fromisoformat(due) if due else None), int(claim_id)
    except (ValueError, TypeError) as exc:
        raise BadCursor(cursor) from exc
    if not 0 < parsed[1] < 2**31:  # an id column is a 32-bit integer on PostgreSQL
        raise BadCursor(cursor)
    return parsed


def list_claims(conn: Connection, *, organizer_id: int | None, today: date, where: ClaimFilter = ClaimFilter(), limit: int = 50,
                cursor: str | None = None) -> ClaimPage:
    """Claims in `where.states` (waiting for a decision by default), newest deadline first, then newest claim.

    Paged by keyset: `cursor` is the last row's (deadline, id) of the previous page. Claims without a
    deadline come last.
    """
    conditions = [claim_t.c.state.in_(where.states)]
    if organizer_id is not None:
        conditions.append(event_t.c.organizer_id == organizer_id)
    if where.event_id is not None:
        conditions.append(claim_t.c.event_id == where.event_id)
    if where.reason is not None:
        conditions.append(claim_t.c.reason == where.reason)
    if where.overdue is True:
        conditions.append(claim_t.c.decision_due < today)
    elif where.overdue is False:
        conditions.append(or_(claim_t.c.decision_due.is_(None), claim_t.c.decision_due >= today))
    if where.due_within_days is not None:
        horizon = add_working_days(today, where.due_within_days).due if where.due_within_days > 0 else today
        conditions.append(claim_t.c.decision_due <= horizon)
    total = conn.execute(_joined(func.count()).where(*conditions)).scalar_one()
    query = _joined(*_columns()).where(*conditions)
    if cursor:
        due, last_id = _decode(cursor)
        if due is None:  # past the dated claims already
            query = query.where(claim_t.c.decision_due.is_(None), claim_t.c.id < last_id)
        else:
            query = query.where(or_(
                claim_t.c.decision_due < due,
                and_(claim_t.c.decision_due == due, claim_t.c.id < last_id),
                claim_t.c.decision_due.is_(None),
            ))
    # NULLS LAST written out: the same order on SQLite and PostgreSQL.
    query = query.order_by(claim_t.c.decision_due.is_(None), claim_t.c.decision_due.desc(), claim_t.c.id.desc())
    rows = conn.execute(query.limit(min(limit, MAX_PAGE) + 1)).all()
    more = len(rows) > limit
    rows = rows[:limit]
    items = [_row(r, today) for r in rows]
    next_cursor = _encode(rows[-1].decision_due, rows[-1].id) if more and rows else None
    return ClaimPage(items=items, next_cursor=next_cursor, total=total)


def claim_ref_condition(ref: str):
    """A claim named by its number (VZ-…) or, for older clients, by its id (a 32-bit integer; longer digits match nothing)."""
    return claim_t.c.id == int(ref) if ref.isdigit() and 0 < int(ref) < 2**31 else claim_t.c.number == ref


def read_claim_detail(conn: Connection, *, ref: str, organizer_id: int | None, today: date) -> ClaimDetail | None:
    """One claim in full, or None when it does not exist or belongs to another organizer (the same None)."""
    query = _joined(
        *_columns(), claim_t.c.description, claim_t.c.name_mismatch_explanation, claim_t.c.quote, claim_t.c.approved_amount,
        claim_t.c.filed_at, claim_t.c.decidable_on, claim_t.c.deadline_provisional, claim_t.c.extension_reason, claim_t.c.decided_at,
        claim_t.c.decided_by, claim_t.c.decision_note, claim_t.c.refusal_code, claim_t.c.refusal_message,
    ).where(claim_ref_condition(ref))
    if organizer_id is not None:
        query = query.where(event_t.c.organizer_id == organizer_id)
    r = conn.execute(query).one_or_none()
    if r is None:
        return None
    docs = [
        DocumentInfo(id=d.id, kind=d.kind, received_at=d.received_at, filename=d.filename, content_type=d.content_type, size=d.size,
                     has_file=d.sha256 is not None, sick_from=d.sick_from, sick_to=d.sick_to, person_name=d.person_name,
                     relation=d.relation, judged_false=bool(d.judged_false))
        for d in conn.execute(select(document_t).where(document_t.c.claim_id == r.id).order_by(document_t.c.id))
    ]
    history = [
        {"at": a.at, "trigger": a.trigger, "from": a.from_state, "to": a.to_state, "by": a.actor, "note": a.note}
        for a in conn.execute(select(audit_t).where(audit_t.c.claim_id == r.id).order_by(audit_t.c.at, audit_t.c.id))
    ]
    return ClaimDetail(
        row=_row(r, today), description=r.description or "", name_mismatch_explanation=r.name_mismatch_explanation, quote=r.quote or {},
        approved_amount=r.approved_amount, filed_at=r.filed_at, decidable_on=r.decidable_on, deadline_provisional=bool(r.deadline_provisional),
        extension_reason=r.extension_reason, decided_at=r.decided_at, decided_by=r.decided_by, decision_note=r.decision_note,
        refusal_code=r.refusal_code, refusal_message=r.refusal_message, documents=docs, history=history,
    )


def document_file(conn: Connection, *, ref: str, document_id: int, organizer_id: int | None) -> tuple[str, str, str | None] | None:
    """(sha256, content type, filename) of a claim's stored document file, when the caller may see the claim."""
    query = (select(document_t.c.sha256, document_t.c.content_type, document_t.c.filename)
             .select_from(document_t).join(claim_t, claim_t.c.id == document_t.c.claim_id)
             .join(event_t, event_t.c.id == claim_t.c.event_id)
             .where(document_t.c.id == document_id, claim_ref_condition(ref)))
    if organizer_id is not None:
        query = query.where(event_t.c.organizer_id == organizer_id)
    r = conn.execute(query).one_or_none()
    if r is None or r.sha256 is None:
        return None
    return r.sha256, r.content_type or "application/octet-stream", r.filename


def claims_by_number(conn: Connection, numbers: list[str], *, organizer_id: int | None) -> dict[str, tuple[int, str, int]]:
    """{number: (id, state, amount in kopecks)} of the numbered claims the caller may see; others are left out."""
    out: dict[str, tuple[int, str, int]] = {}
    for start in range(0, len(numbers), 5000):
        chunk = numbers[start:start + 5000]
        query = (select(claim_t.c.number, claim_t.c.id, claim_t.c.state, func.coalesce(claim_t.c.approved_amount, claim_t.c.amount))
                 .select_from(claim_t).join(event_t, event_t.c.id == claim_t.c.event_id)
                 .where(id_in(conn, claim_t.c.number, chunk)))
        if organizer_id is not None:
            query = query.where(event_t.c.organizer_id == organizer_id)
        out |= {r[0]: (r[1], r[2], int(r[3] or 0)) for r in conn.execute(query)}
    return out
