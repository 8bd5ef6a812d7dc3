"""outbox-dispatch runs only when mail was left behind, so the every-minute sweep does not flood the
Prefect UI's runs list and event feed with empty runs (1,440 a day).

Normally nothing is left: the API sends each acknowledgement right after answering, and each claim's
run sends its own claim's mail after each step. What is left is mail those senders could not send
(an SMTP outage: retries with backoff) or did not reach (a process killed). So the deployment has no
schedule of its own; the run starter, which polls the claims database anyway, checks once a minute
(VOZVRAT_OUTBOX_DISPATCH_INTERVAL_S) whether an email has been due for longer than a grace period
and nobody holds it, and only then creates an outbox-dispatch run (one per interval, whichever
starter asks: the idempotency key names the minute). With the kill switch off
(VOZVRAT_OUTBOUND_EMAIL_ENABLED=false) nothing would be sent, so no run is made either.
An operator therefore sees an outbox-dispatch run exactly when mail was behind, which is when it matters.
"""
from __future__ import annotations

import os
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.engine import Engine

from tasks.mail_switch import mail_switch_state
from tasks.outbox import _due, _utc, outbox_t

OUTBOX_DISPATCH_DEPLOYMENT = "outbox-dispatch/outbox-dispatch"
#: Mail younger than this is still its own sender's (the API or the claim's run sends it within seconds).
LEFT_BEHIND_AFTER = timedelta(seconds=30)


def dispatch_interval() -> timedelta:
    return timedelta(seconds=int(os.environ.get("VOZVRAT_OUTBOX_DISPATCH_INTERVAL_S", "60")))


def mail_left_behind(engine: Engine, *, now: datetime, grace: timedelta = LEFT_BEHIND_AFTER, enabled: bool = True) -> bool:
    """An email due for longer than `grace` that nobody holds (one indexed look-up, LIMIT 1)."""
    if not enabled or mail_switch_state(engine).held:  # held mail is not behind: no run would send it
        return False
    now = _utc(now)
    with engine.connect() as conn:
        return conn.execute(select(outbox_t.c.id).where(_due(now - grace)).limit(1)).first() is not None


def dispatch_slot_key(now: datetime, interval: timedelta) -> str:
    """One outbox-dispatch run per interval, however many starters ask for it."""
    return f"outbox-dispatch:{int(_utc(now).timestamp() // interval.total_seconds())}"


def start_outbox_dispatch_if_needed(engine: Engine, *, now: datetime) -> str | None:
    """Create this interval's outbox-dispatch run if mail was left behind; the run's id, or None."""
    from prefect import get_client

    from models.settings import get_settings

    if not mail_left_behind(engine, now=now, enabled=get_settings().outbound_email_enabled):
        return None
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name(OUTBOX_DISPATCH_DEPLOYMENT)
        run = client.create_flow_run_from_deployment(deployment.id, idempotency_key=dispatch_slot_key(now, dispatch_interval()),
                                                     tags=["mail-left-behind"])
    return str(run.id)
