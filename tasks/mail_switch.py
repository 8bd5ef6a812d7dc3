"""The outbound-mail kill switch ops throw live: one row in the database (`mail_switch`), so every
dispatcher on every host sees it without a restart (tasks/outbox.py reads it at the start of each leased
batch and at most once a second while sending).

Only a staff supervisor holds or releases it (`vozvrat mail hold/release`, `POST /mail/switch`); every
change leaves a `mail_switch_change` row naming the principal (Principal.audit), when and why. The
environment switch (VOZVRAT_OUTBOUND_EMAIL_ENABLED=false) keeps working beside it: either one off holds
the mail. No row means not held.
"""
from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection, Engine

from models.tables import MailSwitch, MailSwitchChange
from tasks.auth import Principal

switch_t = MailSwitch.__table__
change_t = MailSwitchChange.__table__
REASON_MAX = 500
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
#: How long a dispatcher trusts the row it last read (tasks/outbox.py).
RECHECK_S = 1.0


class MailSwitchRefused(Exception):
    """A change the caller may not make, or bad input: `field` names what is wrong (None: the caller)."""

    def __init__(self, message_ru: str, *, field: str | None = None, forbidden: bool = False):
        super().__init__(message_ru)
        self.message_ru, self.field, self.forbidden = message_ru, field, forbidden


@dataclass(frozen=True)
class SwitchState:
    held: bool = False
    reason: str | None = None
    changed_by: str | None = None
    changed_at: datetime | None = None

    def to_json(self) -> dict:
        return {"held": self.held, "reason": self.reason, "changed_by": self.changed_by,
                "changed_at": self.changed_at.isoformat() if self.changed_at else None}


def read_switch(conn: Connection) -> SwitchState:
    """The switch as the database says it now (one primary-key look-up)."""
    row = conn.execute(select(switch_t.c.held, switch_t.c.reason, switch_t.c.changed_by, switch_t.c.changed_at)
                       .where(switch_t.c.id == 1)).first()
    if row is None:
        return SwitchState()
    return SwitchState(bool(row.held), row.reason, row.changed_by, row.changed_at)


def mail_switch_state(engine: Engine) -> SwitchState:
    """The switch as the database says it now, outside any transaction: a raw DBAPI connection, so on
    SQLite no BEGIN IMMEDIATE (models.db) makes a dispatcher or /health wait behind a long batch write."""
    conn = engine.raw_connection()
    try:
        cursor = conn.cursor()
        cursor.execute("SELECT held, reason, changed_by, changed_at FROM mail_switch WHERE id = 1")
        row = cursor.fetchone()
        cursor.close()
    finally:
        conn.close()
    if row is None:
        return SwitchState()
    held, reason, changed_by, changed_at = row
    if isinstance(changed_at, str):  # SQLite keeps the text
        changed_at = datetime.fromisoformat(changed_at)
    if changed_at is not None and changed_at.tzinfo is None:
        changed_at = changed_at.replace(tzinfo=UTC)
    return SwitchState(bool(held), reason, changed_by, changed_at)


def clean_reason(reason: str | None, *, required: bool) -> str | None:
    """The reason as kept on the record (stripped), or MailSwitchRefused naming the field."""
    text = (reason or "").strip()
    if not text:
        if required:
            raise MailSwitchRefused("укажите причину остановки почты", field="reason")
        return None
    if len(text) > REASON_MAX:
        raise MailSwitchRefused(f"причина длиннее {REASON_MAX} символов", field="reason")
    if _CONTROL.search(text):
        raise MailSwitchRefused("в причине есть управляющие символы", field="reason")
    return text


def set_mail_switch(engine: Engine, *, held: bool, principal: Principal, now: datetime,
                    reason: str | None = None) -> tuple[SwitchState, bool]:
    """Hold (``held=True``, a reason required) or release the mail, as a staff supervisor. Returns the
    switch after it and whether it changed; a change writes its audit row in the same transaction.
    Holding what is held (or releasing what is not) changes nothing: the first holder stays on record."""
    if not principal.is_staff("supervisor"):
        raise MailSwitchRefused("останавливать и возобновлять почту может только старший смены (supervisor)", forbidden=True)
    reason = clean_reason(reason, required=held)
    if now.tzinfo is None:
        raise ValueError(f"naive datetime {now!r}: time must be tz-aware")
    now = now.astimezone(UTC)
    values = dict(held=held, reason=reason, changed_by=principal.audit, changed_at=now)
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as upsert
        else:
            from sqlalchemy.dialects.sqlite import insert as upsert
        # One statement decides: the row is written only if it says the opposite, so of two supervisors
        # throwing it at once exactly one changes it (and is audited).
        if held:
            changed = conn.execute(upsert(switch_t).values(id=1, **values)
                                   .on_conflict_do_update(index_elements=["id"], set_=values, where=switch_t.c.held.is_(False))
                                   .returning(switch_t.c.id)).first() is not None
        else:  # no row: never held, nothing to release
            changed = conn.execute(update(switch_t).where(switch_t.c.id == 1, switch_t.c.held.is_(True)).values(**values)
                                   .returning(switch_t.c.id)).first() is not None
        if not changed:
            return read_switch(conn), False
        conn.execute(insert(change_t).values(at=now, principal=principal.audit, held=held, reason=reason))
    return SwitchState(held, reason, principal.audit, now), True


def switch_history(engine: Engine, *, limit: int = 20) -> list[dict]:
    """The latest changes, newest first."""
    with engine.connect() as conn:
        rows = conn.execute(select(change_t).order_by(change_t.c.id.desc()).limit(limit)).all()
    return [{"at": r.at, "principal": r.principal, "held": bool(r.held), "reason": r.reason} for r in rows]


class LiveMailSwitch:
    """The dispatchers' view of the database switch without a query per message: the row is read again
    when ``expire`` was called (the start of each leased batch) or ``every`` seconds after the last read,
    on a monotonic clock (injected in tests)."""

    def __init__(self, engine: Engine, *, every: float = RECHECK_S, clock: Callable[[], float] = time.monotonic):
        self.engine, self.every, self.clock = engine, every, clock
        self.read_at: float | None = None
        self.state = SwitchState()
        self.reads = 0  # how many times the row was read (what the cache saves is visible)

    def expire(self) -> None:
        self.read_at = None

    def held(self) -> bool:
        now = self.clock()
        if self.read_at is None or now - self.read_at >= self.every:
            self.state = mail_switch_state(self.engine)
            self.read_at = now
            self.reads += 1
        return self.state.held
