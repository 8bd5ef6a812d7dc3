"""sla-watch: every 15 minutes, escalate claims past their decision or payout deadline, and refuse
claims whose documents window closed without documents (their runs resumed, so they end); warn
before Decree 442 deadlines pass (publication, 180-day refund) and turn expired vouchers into refunds."""
from __future__ import annotations

from datetime import UTC, datetime

from prefect import flow

from tasks.claims import dispatch_outbox
from tasks.sla import (
    emit_escalation_events,
    escalate_overdue_claims,
    expire_overdue_documents,
    notify_escalations,
    publish_breaches,
    resume_expired_claim_runs,
    show_escalations_on_runs,
    warn_regime_deadlines,
)
from tasks.vouchers import expire_unused_vouchers


@flow(name="sla-watch", log_prints=True)
def sla_watch(now: datetime | None = None) -> int:
    now = now or datetime.now(UTC)
    report = escalate_overdue_claims(now)
    notify_escalations(report, now)
    emit_escalation_events(report, now)
    show_escalations_on_runs(report, now)
    publish_breaches(now)
    expired = expire_overdue_documents(now)
    warn_regime_deadlines(now)
    expire_unused_vouchers(now)
    dispatch_outbox(now)
    resume_expired_claim_runs(expired, now)
    return len(report.escalated)
