"""The email outbox: rows written with the transition that caused them, dispatched here.

Delivery is at-least-once. Each message's status change is committed on its own right after the
send, so a crash between the SMTP "250" and that commit resends at most that one message, and the
resend carries the same deterministic Message-ID (derived from the row's dedup_key), so it is
recognisable as a duplicate. While the SMTP server is down messages stay pending and are retried
with exponential backoff: nothing is lost.

Concurrency: on PostgreSQL each message is taken with ``SELECT ... FOR UPDATE SKIP LOCKED`` and the
lock is held until its status is committed, so several dispatchers can run side by side. SQLite
(the embedded default) has no row locks: run one dispatcher there; the SMTP conversation happens
outside the database transaction so other writers are not blocked meanwhile.
"""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from enum import Enum
from typing import Any

import jinja2
from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from models.tables import OutboxMessage
from tasks.emails import TEMPLATES, MissingContext, UnknownTemplate, render_email
from tasks.smtp import SmtpRejected, SmtpSettings, SmtpUnavailable, send_message

BACKOFF_BASE = timedelta(minutes=1)
BACKOFF_CAP = timedelta(hours=1)


@dataclass
class DispatchReport:
    sent: int = 0
    retried: int = 0
    failed: int = 0
    held: int = 0  # due messages left waiting because the kill switch is off
    held_by_kill_switch: bool = False

    def __str__(self) -> str:
        if self.held_by_kill_switch:
            return f"kill switch on: nothing sent, {self.held} message(s) held"
        return f"sent {self.sent}, retried later {self.retried}, failed {self.failed}"


def backoff(attempts_before: int) -> timedelta:
    """1 min * 2**attempts, capped at 1 h: 1, 2, 4, ... 32, 60, 60 minutes."""
    if attempts_before >= 6:
        return BACKOFF_CAP
    return min(BACKOFF_BASE * 2**attempts_before, BACKOFF_CAP)


def _utc(now: datetime) -> datetime:
    if now.tzinfo is None:
        raise ValueError(f"naive datetime {now!r}: time must be tz-aware")
    return now.astimezone(UTC)


def _due(now: datetime):
    return (
        (OutboxMessage.kind == "email")
        & (OutboxMessage.status == "pending")
        & (OutboxMessage.next_attempt_at <= now)
    )


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable in an outbox payload")


def enqueue_email(
    session: Session,
    *,
    dedup_key: str,
    claim_id: int | None,
    template: str,
    recipient: str,
    payload: Mapping[str, Any],
    now: datetime,
) -> bool:
    """Insert one pending email in the caller's transaction (no commit). A repeated dedup_key is
    ignored. Returns True when a row was inserted."""
    if template not in TEMPLATES:
        raise UnknownTemplate(f"no email template {template!r}")
    if not recipient:
        raise ValueError("an email needs a recipient")
    now = _utc(now)
    values = dict(
        kind="email", dedup_key=dedup_key, claim_id=claim_id, template=template, recipient=recipient,
        payload=json.loads(json.dumps(dict(payload), default=_json_default, ensure_ascii=False)),
        status="pending", attempts=0, next_attempt_at=now, created_at=now,
    )
    table = OutboxMessage.__table__
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:  # pragma: no cover - only the two supported databases use ON CONFLICT
        exists = session.exec(select(OutboxMessage.id).where(OutboxMessage.dedup_key == dedup_key)).first()
        if exists is not None:
            return False
        session.execute(table.insert().values(**values))
        return True
    statement = insert(table).values(**values).on_conflict_do_nothing(index_elements=["dedup_key"])
    return session.execute(statement).rowcount == 1


async def dispatch_emails(
    *,
    engine: Engine,
    smtp: SmtpSettings,
    now: datetime,
    limit: int = 200,
    mail_from: str,
    enabled: bool = True,
) -> DispatchReport:
    """Send due pending emails (oldest first, at most ``limit``), one commit per message."""
    now = _utc(now)
    report = DispatchReport()
    if not enabled:
        with Session(engine) as session:
            report.held = session.exec(select(func.count()).select_from(OutboxMessage).where(_due(now))).one()
        report.held_by_kill_switch = True
        return report

    postgres = engine.dialect.name == "postgresql"
    smtp_down: str | None = None  # once the server is down, the rest of this run is deferred untried
    for _ in range(limit):
        with Session(engine, expire_on_commit=False) as session:
            statement = select(OutboxMessage).where(_due(now)).order_by(OutboxMessage.id).limit(1)
            if postgres:
                statement = statement.with_for_update(skip_locked=True)
            row = session.exec(statement).first()
            if row is None:
                break
            if not postgres:
                session.commit()  # SQLite: do not hold the database while talking to SMTP

            outcome, error = await _deliver(row, smtp=smtp, now=now, mail_from=mail_from, smtp_down=smtp_down)
            if outcome == "sent":
                row.status, row.sent_at, row.last_error = "sent", now, None
                report.sent += 1
            elif outcome == "retry":
                row.next_attempt_at = now + backoff(row.attempts)
                row.attempts += 1
                row.last_error = error
                report.retried += 1
                smtp_down = smtp_down or error
            else:
                row.attempts += 1
                row.status, row.last_error = "failed", error
                report.failed += 1
            session.add(row)
            session.commit()
    return report


async def _deliver(
    row: OutboxMessage, *, smtp: SmtpSettings, now: datetime, mail_from: str, smtp_down: str | None
) -> tuple[str, str | None]:
    """("sent" | "retry" | "failed", error)."""
    try:
        if not row.recipient:
            raise ValueError("no recipient")
        message = render_email(
            row.template or "", to=row.recipient, context=row.payload or {}, mail_from=mail_from,
            message_id_key=row.dedup_key, now=now,
        )
    except (UnknownTemplate, MissingContext, jinja2.TemplateError, ValueError, TypeError, KeyError) as exc:
        return "failed", f"render: {type(exc).__name__}: {exc}"
    if smtp_down is not None:
        return "retry", f"not attempted, SMTP unavailable earlier in this run: {smtp_down}"
    try:
        await send_message(message, smtp)
    except SmtpUnavailable as exc:
        return "retry", str(exc)
    except SmtpRejected as exc:
        return "failed", f"rejected: {exc}"
    return "sent", None
