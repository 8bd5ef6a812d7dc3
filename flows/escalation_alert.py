"""escalation-alert: the supervisor's notice of one escalated claim, run by the Prefect automation on
`vozvrat.claim.escalated` (tasks/escalation_alert.py); not scheduled."""
from __future__ import annotations

from datetime import UTC, datetime

from prefect import flow

from tasks.claims import dispatch_outbox
from tasks.escalation_alert import alert_supervisor


@flow(name="escalation-alert", log_prints=True)
def escalation_alert(claim_number: str, kind: str = "decision", now: datetime | None = None) -> int:
    now = now or datetime.now(UTC)
    claim_id = alert_supervisor(claim_number, kind, now)
    dispatch_outbox(now, claim_id)
    return claim_id
