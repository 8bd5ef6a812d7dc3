"""The supervisor hears of every escalation through a Prefect automation, declared here.

sla-watch emits `vozvrat.claim.escalated` for each claim it escalates (tasks/sla.py; resource
`vozvrat.claim.<id>` named after the claim number, payload `kind`: decision | payout). The automation
«vozvrat: escalation → supervisor» reacts to each such event by running the `escalation-alert`
deployment with the claim's number, which queues «Просрочен срок» to VOZVRAT_SUPERVISOR_EMAIL through
the outbox and sends it. The outbox dedup key is the one sla-watch's own notice uses
(`claim:<id>:escalation:<kind>:supervisor`), so the supervisor gets one message per claim and kind,
whichever path queues it first; any other emitter of the event (an operator, a future watch) is
covered too, and ops can add actions to the automation in the UI (a chat webhook, say).

`ensure_automations()` creates or updates the automation by name (`vozvrat ops automations`; `make up`
runs it once the deployments are served).
"""
from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from prefect import get_run_logger, task
from sqlalchemy import select
from sqlmodel import Session

from models.claim_store import claim_t, event_t, venue_t
from models.db import get_engine
from models.settings import get_settings
from tasks.outbox import enqueue_email
from tasks.sla import overdue_working_days

ESCALATION_EVENT = "vozvrat.claim.escalated"
ALERT_DEPLOYMENT = "escalation-alert/escalation-alert"
AUTOMATION_NAME = "vozvrat: escalation → supervisor"


class UnknownClaim(LookupError):
    pass


def queue_supervisor_alert(engine, *, claim_number: str, kind: str, now: datetime) -> tuple[int, bool]:
    """Queue «Просрочен срок» for the supervisor about this claim; (claim id, whether it was new)."""
    with engine.connect() as conn:
        row = conn.execute(
            select(claim_t.c.id, claim_t.c.number, claim_t.c.reason, claim_t.c.decision_due, claim_t.c.payout_due, event_t.c.title,
                   venue_t.c.timezone)
            .join(event_t, event_t.c.id == claim_t.c.event_id)
            .join(venue_t, venue_t.c.id == event_t.c.venue_id)
            .where(claim_t.c.number == claim_number)
        ).one_or_none()
    if row is None:
        raise UnknownClaim(f"no claim numbered {claim_number!r}")
    due: date | None = row.payout_due if kind == "payout" else row.decision_due
    today = now.astimezone(ZoneInfo(row.timezone)).date()
    payload = {"claim_number": row.number, "event_title": row.title, "deadline": due.isoformat() if due else "", "kind": kind,
               "overdue_working_days": overdue_working_days(due, today) if due else 0, "reason": row.reason}
    with Session(engine) as session:
        queued = enqueue_email(session, dedup_key=f"claim:{row.id}:escalation:{kind}:supervisor", claim_id=row.id,
                               template="escalation_notice", recipient=get_settings().supervisor_email, payload=payload, now=now)
        session.commit()
    return row.id, bool(queued)


@task(name="queue-supervisor-alert", retries=3, retry_delay_seconds=5)
def alert_supervisor(claim_number: str, kind: str, now: datetime) -> int:
    """The automation's action: the supervisor's notice of this escalation, once (see the module)."""
    claim_id, new = queue_supervisor_alert(get_engine(), claim_number=claim_number, kind=kind, now=now)
    get_run_logger().info("supervisor alert for %s (%s): %s", claim_number, kind, "queued" if new else "already queued by sla-watch")
    return claim_id


def escalation_automation(deployment_id):
    """The automation, as code: each `vozvrat.claim.escalated` event, per claim, runs `escalation-alert`."""
    from prefect.automations import Automation, EventTrigger, Posture, RunDeployment

    return Automation(
        name=AUTOMATION_NAME,
        description="Эскалация заявки (sla-watch): письмо руководителю через outbox (deployment escalation-alert).",
        enabled=True,
        trigger=EventTrigger(
            expect={ESCALATION_EVENT},
            match={"prefect.resource.id": "vozvrat.claim.*"},
            for_each={"prefect.resource.id"},
            posture=Posture.Reactive,
            threshold=1,
            within=timedelta(0),
        ),
        actions=[RunDeployment(source="selected", deployment_id=deployment_id,
                               parameters={"claim_number": "{{ event.resource.name }}", "kind": "{{ event.payload.kind }}"})],
    )


def ensure_automations() -> list[str]:
    """Create the automation, or bring an existing one of that name up to date (safe to repeat)."""
    from prefect import get_client
    from prefect.automations import Automation

    with get_client(sync_client=True) as client:
        deployment_id = client.read_deployment_by_name(ALERT_DEPLOYMENT).id
    wanted = escalation_automation(deployment_id)
    try:
        existing = Automation.read(name=AUTOMATION_NAME)
    except ValueError:  # not found
        return [f"created {wanted.create().id}"]
    wanted.id = existing.id
    wanted.update()
    return [f"updated {existing.id}"]
