"""sla-watch: every 15 minutes, escalate claims past their decision or payout deadline."""
from __future__ import annotations

from datetime import datetime, timezone

from prefect import flow

from tasks.claims import dispatch_outbox
from tasks.sla import emit_escalation_events, escalate_overdue_claims, notify_escalations, publish_breaches


@flow(name="sla-watch", log_prints=True)
def sla_watch(now: datetime | None = None) -> int:
    now = now or datetime.now(timezone.utc)
    report = escalate_overdue_claims(now)
    notify_escalations(report, now)
    emit_escalation_events(report, now)
    publish_breaches(now)
    dispatch_outbox(now)
    return len(report.escalated)
