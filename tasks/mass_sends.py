"""Mass mail safety (DESIGN, Security): a send to many recipients waits for a second person.

The operator in the seed was hacked and its own system mailed every customer a fake invitation. So a
send to more than `VOZVRAT_MASS_SEND_THRESHOLD` recipients (default 100) is written to the outbox as
`held` under a `mass_send` record, and nothing of it leaves until a staff supervisor who is NOT the one
who started it approves it, after seeing the template, a rendered sample and the recipient count
(`vozvrat mass-sends …`, `/mass-sends…`). Only a template can be mass-sent: rows name a template that
must exist, and their payload is the template's context, never a free-text body.

Two ways in:
- `queue_mass_send`: the caller hands over its messages (the regimes work mails every buyer of a
  postponed event this way);
- `hold_event_mail`: a mass cancellation's batch steps write their emails `held` (claim_store
  `apply_batch(hold_notifications=True)`); this gathers them per template under a record.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from models.claim_store import id_in
from models.tables import Claim, MassSend, OutboxMessage
from tasks.auth import Principal
from tasks.emails import TEMPLATES, UnknownTemplate, render_parts

mass_send_t = MassSend.__table__
outbox_t = OutboxMessage.__table__
claim_t = Claim.__table__

HELD, APPROVED, REJECTED, SENDING, DONE = "held", "approved", "rejected", "sending", "done"
STATUSES = (HELD, APPROVED, REJECTED, SENDING, DONE)
STATUS_RU = {HELD: "ждёт одобрения", APPROVED: "одобрена", REJECTED: "отклонена", SENDING: "отправляется", DONE: "отправлена"}
APPROVER_ROLES = ("supervisor",)

# (claim id or None, recipient, payload, dedup key)
Message = tuple[int | None, str, dict[str, Any], str]


class MassSendRefused(ValueError):
    """An approval or rejection that cannot be applied: `status` is the HTTP answer, `message_ru` the text."""

    def __init__(self, status: int, code: str, message_ru: str):
        super().__init__(message_ru)
        self.status, self.code, self.message_ru = status, code, message_ru


def threshold() -> int:
    from models.settings import get_settings

    return get_settings().mass_send_threshold


def _utc(now: datetime) -> datetime:
    if now.tzinfo is None:
        raise ValueError(f"naive datetime {now!r}: time must be tz-aware")
    return now.astimezone(UTC)


def _insert(conn: Connection):
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(outbox_t)


def _new_mass_send(conn: Connection, *, template: str, started_by: str, now: datetime, event_id: int | None) -> int:
    return conn.execute(
        insert(mass_send_t).values(template=template, event_id=event_id, started_by=started_by, recipient_count=0, status=HELD,
                                   created_at=now).returning(mass_send_t.c.id)
    ).scalar_one()


def _count(conn: Connection, mass_send_id: int) -> int:
    count = conn.execute(select(func.count()).select_from(outbox_t).where(outbox_t.c.mass_send_id == mass_send_id)).scalar_one()
    conn.execute(update(mass_send_t).where(mass_send_t.c.id == mass_send_id).values(recipient_count=count))
    return count


def queue_mass_send(
    conn: Connection,
    *,
    template: str,
    messages: Sequence[Message],
    started_by: str,
    now: datetime,
    event_id: int | None = None,
) -> int | None:
    """Queue one email per message, in the caller's transaction. At most the threshold: plain
    `pending` rows, returns None. More: `held` rows under a new mass_send record, returns its id.

    A repeated dedup key is skipped (a re-run queues nothing twice). Raises UnknownTemplate: only a
    template is ever mass-sent.
    """
    return queue_messages(conn, template=template, messages=messages, started_by=started_by, now=now, event_id=event_id).mass_send_id


@dataclass(frozen=True)
class Queued:
    written: int  # outbox rows written (a repeated dedup key writes none)
    mass_send_id: int | None  # the record the rows wait under, when they are held


def queue_messages(conn: Connection, *, template: str, messages: Sequence[Message], started_by: str, now: datetime,
                   event_id: int | None = None, recipients_total: int | None = None) -> Queued:
    """`queue_mass_send` for a send written chunk by chunk: `recipients_total` (the whole send's count)
    decides whether it is held, and every chunk of one send joins the same held record (same template,
    event and starter, still held), so the approver sees one send with its full count."""
    if template not in TEMPLATES:
        raise UnknownTemplate(f"no email template {template!r}: only a template can be mass-sent")
    now = _utc(now)
    total = len({m[1] for m in messages if m[1]}) if recipients_total is None else recipients_total
    held = total > threshold()
    mass_send_id = None
    if held:
        if recipients_total is not None:
            mass_send_id = conn.execute(select(mass_send_t.c.id).where(
                mass_send_t.c.template == template, mass_send_t.c.started_by == started_by, mass_send_t.c.status == HELD,
                mass_send_t.c.event_id.is_(None) if event_id is None else mass_send_t.c.event_id == event_id,
            ).order_by(mass_send_t.c.id.desc()).limit(1)).scalar_one_or_none()
        if mass_send_id is None:
            mass_send_id = _new_mass_send(conn, template=template, started_by=started_by, now=now, event_id=event_id)
    rows = [
        dict(kind="email", dedup_key=key, claim_id=claim_id, template=template, recipient=recipient,
             payload=json.loads(json.dumps(payload, default=str, ensure_ascii=False)), status=HELD if held else "pending",
             attempts=0, next_attempt_at=now, created_at=now, mass_send_id=mass_send_id)
        for claim_id, recipient, payload, key in messages
        if recipient
    ]
    written = 0
    for start in range(0, len(rows), 2000):
        stmt = _insert(conn).on_conflict_do_nothing(index_elements=["dedup_key"]).returning(outbox_t.c.id)
        written += len(conn.execute(stmt, rows[start : start + 2000]).all())
    if mass_send_id is not None and _count(conn, mass_send_id) == 0:  # everything was queued before: nothing to approve
        conn.execute(update(mass_send_t).where(mass_send_t.c.id == mass_send_id).values(status=DONE, done_at=now))
    return Queued(written=written, mass_send_id=mass_send_id)


def hold_event_mail(conn: Connection, *, event_id: int, started_by: str, now: datetime, limit: int | None = None) -> list[int]:
    """Gather an event's `held` emails that no record holds yet, one mass_send per template.

    A template with at most `limit` (default: the threshold) such rows is no mass send: its rows are
    released as `pending`. Returns the ids of the records made (a re-run finds nothing new: []).
    """
    now = _utc(now)
    limit = threshold() if limit is None else limit
    loose = (
        (outbox_t.c.status == HELD) & outbox_t.c.mass_send_id.is_(None)
        & outbox_t.c.claim_id.in_(select(claim_t.c.id).where(claim_t.c.event_id == event_id).scalar_subquery())
    )
    made = []
    for template, count in conn.execute(select(outbox_t.c.template, func.count()).where(loose).group_by(outbox_t.c.template)).all():
        rows = loose & (outbox_t.c.template == template)
        if count <= limit:
            conn.execute(update(outbox_t).where(rows).values(status="pending", next_attempt_at=now))
            continue
        mass_send_id = _new_mass_send(conn, template=template, started_by=started_by, now=now, event_id=event_id)
        conn.execute(update(outbox_t).where(rows).values(mass_send_id=mass_send_id))
        _count(conn, mass_send_id)
        made.append(mass_send_id)
    return made


@dataclass(frozen=True)
class MassSendView:
    id: int
    template: str
    event_id: int | None
    started_by: str
    recipient_count: int
    status: str
    approved_by: str | None
    rejected_by: str | None
    created_at: datetime
    approved_at: datetime | None
    rejected_at: datetime | None
    done_at: datetime | None
    note: str | None
    sent: int = 0
    waiting: int = 0
    resend_of: int | None = None
    # A rejected send: the claims whose buyer was never told (no other message of the template holds
    # or left for them); `resent_as` the held or later resends of it.
    buyer_not_told: tuple[str, ...] = ()
    resent_as: tuple[int, ...] = ()

    def to_json(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        for key in ("created_at", "approved_at", "rejected_at", "done_at"):
            out[key] = out[key].isoformat() if out[key] else None
        out["status_ru"] = STATUS_RU.get(self.status, self.status)
        out["buyer_not_told"], out["resent_as"] = list(self.buyer_not_told), list(self.resent_as)
        return out


def _views(conn: Connection, where) -> list[MassSendView]:
    rows = conn.execute(select(mass_send_t).where(where).order_by(mass_send_t.c.id.desc())).mappings().all()
    if not rows:
        return []
    counts: dict[tuple[int, str], int] = {
        (r[0], r[1]): r[2]
        for r in conn.execute(
            select(outbox_t.c.mass_send_id, outbox_t.c.status, func.count())
            .where(id_in(conn, outbox_t.c.mass_send_id, [r["id"] for r in rows]))
            .group_by(outbox_t.c.mass_send_id, outbox_t.c.status)
        )
    }
    rejected = [r["id"] for r in rows if r["status"] == REJECTED]
    untold = _untold(conn, rejected)
    resends: dict[int, list[int]] = {}
    if rejected:
        for new_id, old_id in conn.execute(select(mass_send_t.c.id, mass_send_t.c.resend_of)
                                           .where(id_in(conn, mass_send_t.c.resend_of, rejected)).order_by(mass_send_t.c.id)):
            resends.setdefault(old_id, []).append(new_id)
    return [
        MassSendView(**{k: r[k] for k in MassSendView.__dataclass_fields__ if k in r}, sent=counts.get((r["id"], "sent"), 0),
                     waiting=counts.get((r["id"], HELD), 0) + counts.get((r["id"], "pending"), 0),
                     buyer_not_told=tuple(n for _, n in untold.get(r["id"], [])), resent_as=tuple(resends.get(r["id"], [])))
        for r in rows
    ]


# A message of the template that holds, waits or left: the buyer is told, or will be once approved.
_TOLD = (HELD, "pending", "sent")


def _untold_rows(conn: Connection, mass_send_ids: Sequence[int]):
    """The rejected rows of these sends whose claim has no other message of the same template that is
    held, pending or sent: (mass_send_id, claim id, claim number, outbox row), one per claim."""
    if not mass_send_ids:
        return []
    other = outbox_t.alias("other")
    told = (select(other.c.id).where(other.c.claim_id == outbox_t.c.claim_id, other.c.template == outbox_t.c.template,
                                     other.c.status.in_(_TOLD)).exists())
    return conn.execute(
        select(outbox_t.c.mass_send_id, claim_t.c.id, claim_t.c.number, outbox_t.c.id.label("row_id"), outbox_t.c.recipient,
               outbox_t.c.payload, outbox_t.c.dedup_key, outbox_t.c.template)
        .join(claim_t, claim_t.c.id == outbox_t.c.claim_id)
        .where(id_in(conn, outbox_t.c.mass_send_id, list(mass_send_ids)), outbox_t.c.status == REJECTED, ~told)
        .order_by(outbox_t.c.id)
    ).all()


def _untold(conn: Connection, mass_send_ids: Sequence[int]) -> dict[int, list[tuple[int, str]]]:
    out: dict[int, list[tuple[int, str]]] = {}
    seen: set[int] = set()
    for row in _untold_rows(conn, mass_send_ids):
        if row[1] not in seen:
            seen.add(row[1])
            out.setdefault(row[0], []).append((row[1], row[2]))
    return out


def buyer_not_told(engine: Engine, *, event_id: int | None = None) -> list[tuple[int, str, int]]:
    """Every claim whose buyer a rejected mass send left untold: (claim id, claim number, mass send id),
    oldest send first; `event_id` narrows it to one event's sends."""
    with engine.connect() as conn:
        where = mass_send_t.c.status == REJECTED
        if event_id is not None:
            where = where & (mass_send_t.c.event_id == event_id)
        ids = list(conn.execute(select(mass_send_t.c.id).where(where).order_by(mass_send_t.c.id)).scalars())
        untold = _untold(conn, ids)
    return [(claim_id, number, mass_send_id) for mass_send_id in ids for claim_id, number in untold.get(mass_send_id, [])]


def list_mass_sends(engine: Engine, *, status: str | None = None) -> list[MassSendView]:
    with engine.connect() as conn:
        return _views(conn, mass_send_t.c.status == status if status else mass_send_t.c.id.is_not(None))


def get_mass_send(engine: Engine, mass_send_id: int) -> MassSendView | None:
    with engine.connect() as conn:
        found = _views(conn, mass_send_t.c.id == mass_send_id)
    return found[0] if found else None


@dataclass(frozen=True)
class Sample:
    recipient: str
    subject: str
    text: str


def render_sample(engine: Engine, mass_send_id: int) -> Sample | None:
    """The first message of a mass send, rendered as its recipient will read it."""
    with engine.connect() as conn:
        row = conn.execute(
            select(outbox_t.c.template, outbox_t.c.recipient, outbox_t.c.payload)
            .where(outbox_t.c.mass_send_id == mass_send_id).order_by(outbox_t.c.id).limit(1)
        ).first()
    if row is None:
        return None
    subject, text, _html = render_parts(row.template, row.payload or {})
    return Sample(row.recipient, subject, text)


def same_person(a: str, b: str) -> bool:
    """Two audit names of one person: the same principal, or the same signed-in login under another
    role (`staff:support:anna` started it, `staff:supervisor:anna` may not approve it)."""
    if a == b:
        return True
    login_a, login_b = a.rsplit(":", 1)[-1], b.rsplit(":", 1)[-1]
    people = ("staff:", "organizer:")
    return a.startswith(people) and b.startswith(people) and a.count(":") >= 2 and b.count(":") >= 2 and login_a == login_b


def _decidable(conn: Connection, mass_send_id: int, principal: Principal) -> Any:
    if not principal.is_staff(*APPROVER_ROLES):
        raise MassSendRefused(403, "forbidden", "Одобрять и отклонять массовые рассылки может только старший смены (supervisor).")
    row = conn.execute(select(mass_send_t).where(mass_send_t.c.id == mass_send_id)).mappings().first()
    if row is None:
        raise MassSendRefused(404, "not_found", f"Рассылка № {mass_send_id} не найдена.")
    if row["status"] != HELD:
        raise MassSendRefused(409, "not_held", f"Рассылка № {mass_send_id} уже {STATUS_RU.get(row['status'], row['status'])}.")
    if same_person(row["started_by"], principal.audit):
        raise MassSendRefused(409, "same_person",
                              "Рассылку запустили вы: одобрить или отклонить её должен другой сотрудник (правило двух человек).")
    return row


def approve_mass_send(engine: Engine, mass_send_id: int, *, principal: Principal, now: datetime) -> MassSendView:
    """A second staff supervisor lets the held rows go: they become `pending` for the dispatcher."""
    now = _utc(now)
    with engine.begin() as conn:
        _decidable(conn, mass_send_id, principal)
        conn.execute(update(mass_send_t).where(mass_send_t.c.id == mass_send_id, mass_send_t.c.status == HELD)
                     .values(status=APPROVED, approved_by=principal.audit, approved_at=now))
        conn.execute(update(outbox_t).where(outbox_t.c.mass_send_id == mass_send_id, outbox_t.c.status == HELD)
                     .values(status="pending", next_attempt_at=now))
    view = get_mass_send(engine, mass_send_id)
    assert view is not None
    return view


def reject_mass_send(engine: Engine, mass_send_id: int, *, principal: Principal, now: datetime, note: str | None = None) -> MassSendView:
    """The rows never leave: `rejected` in the outbox, the record says who and why."""
    now = _utc(now)
    with engine.begin() as conn:
        _decidable(conn, mass_send_id, principal)
        conn.execute(update(mass_send_t).where(mass_send_t.c.id == mass_send_id, mass_send_t.c.status == HELD)
                     .values(status=REJECTED, rejected_by=principal.audit, rejected_at=now, note=note))
        conn.execute(update(outbox_t).where(outbox_t.c.mass_send_id == mass_send_id, outbox_t.c.status == HELD)
                     .values(status=REJECTED, last_error=f"mass send rejected by {principal.audit}"))
    view = get_mass_send(engine, mass_send_id)
    assert view is not None
    return view


RESEND_ROLES = ("support", "supervisor")


def resend_mass_send(engine: Engine, mass_send_id: int, *, principal: Principal, now: datetime) -> MassSendView:
    """Queue a rejected send's template again for the recipients it left untold, as a NEW held send
    (`resend_of` names the rejected one) that again waits for a second person: whoever resends it may
    not approve it. Each claim gets the template as it reads now (the payload is the template's context,
    so a corrected wording is what goes). Refused: not staff (403), unknown (404), not rejected or
    nobody left untold (409)."""
    now = _utc(now)
    if not principal.is_staff(*RESEND_ROLES):
        raise MassSendRefused(403, "forbidden", "Повторить рассылку может сотрудник поддержки или старший смены.")
    with engine.begin() as conn:
        row = conn.execute(select(mass_send_t).where(mass_send_t.c.id == mass_send_id).with_for_update()).mappings().first()
        if row is None:
            raise MassSendRefused(404, "not_found", f"Рассылка № {mass_send_id} не найдена.")
        if row["status"] != REJECTED:
            raise MassSendRefused(409, "not_rejected",
                                  f"Повторить можно только отклонённую рассылку; № {mass_send_id} {STATUS_RU.get(row['status'], row['status'])}.")
        rows, seen = [], set()
        for r in _untold_rows(conn, [mass_send_id]):
            if r.id not in seen:
                seen.add(r.id)
                rows.append(r)
        if not rows:
            raise MassSendRefused(409, "nothing_to_resend", f"По рассылке № {mass_send_id} все покупатели уже уведомлены: повторять нечего.")
        new_id = _new_mass_send(conn, template=row["template"], started_by=principal.audit, now=now, event_id=row["event_id"])
        conn.execute(update(mass_send_t).where(mass_send_t.c.id == new_id).values(resend_of=mass_send_id))
        conn.execute(insert(outbox_t), [
            dict(kind="email", dedup_key=f"{r.dedup_key[:160]}:resend:{new_id}", claim_id=r.id, template=r.template, recipient=r.recipient,
                 payload=r.payload or {}, status=HELD, attempts=0, next_attempt_at=now, created_at=now, mass_send_id=new_id)
            for r in rows
        ])
        _count(conn, new_id)
    view = get_mass_send(engine, new_id)
    assert view is not None
    return view


def refresh_progress(conn: Connection, mass_send_ids: Sequence[int], *, now: datetime) -> None:
    """An approved send is `sending` once a row left and `done` once none waits (the dispatcher calls this)."""
    for mass_send_id in set(mass_send_ids):
        waiting = conn.execute(
            select(func.count()).select_from(outbox_t)
            .where(outbox_t.c.mass_send_id == mass_send_id, outbox_t.c.status.in_(("pending", HELD)))
        ).scalar_one()
        conn.execute(
            update(mass_send_t).where(mass_send_t.c.id == mass_send_id, mass_send_t.c.status.in_((APPROVED, SENDING)))
            .values(status=SENDING if waiting else DONE, done_at=None if waiting else now)
        )
