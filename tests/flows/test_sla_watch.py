"""sla-watch against the real stack: the clock is moved (a parameter), never waited for."""
from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
from prefect import get_client
from prefect.deployments import run_deployment

from models.claim_views import read_claim
from models.db import get_engine
from tasks.intake import file_buyer_claim
from tests import factories as f
from tests.flows.conftest import claim_run, mail_in, wait_for

MSK = ZoneInfo("Europe/Moscow")


def sla_watch_at(now: datetime):
    run = run_deployment("sla-watch/sla-watch", parameters={"now": now.isoformat()}, timeout=180, as_subflow=False)
    assert run.state.is_completed(), run.state
    return run


def test_escalation_counts_working_days_across_the_new_year_holidays(stack):
    engine = get_engine()
    filed = datetime(2025, 12, 25, 12, 0, tzinfo=MSK)
    with engine.begin() as conn:
        org = f.organizer(conn, email="slow-organizer@example.ru")
        event = f.event(conn, starts_at=datetime(2026, 2, 15, 19, 0, tzinfo=MSK), organizer_id=org, title="Зимний концерт")
        order = f.order(conn, created_at=filed - timedelta(days=20), buyer_email="patient@example.ru")
        ticket = f.ticket(conn, event_id=event, order_id=order)
    claim = file_buyer_claim(engine, ticket_id=ticket, reason="other", actor="service:test", now=filed, description="Переезд")
    wait_for("claim with the organizer", lambda: read_claim(claim.id, engine=engine).state == "awaiting_organizer")
    # 10 working days after 25.12.2025 skip 1-11 January 2026: the decision is due on 20 January.
    with engine.connect() as conn:
        from sqlalchemy import select

        from models.tables import Claim

        assert conn.execute(select(Claim.decision_due).where(Claim.id == claim.id)).scalar_one().isoformat() == "2026-01-20"

    sla_watch_at(datetime(2026, 1, 20, 23, 30, tzinfo=MSK))  # the due day itself is still in time
    assert read_claim(claim.id, engine=engine).state == "awaiting_organizer"

    run = sla_watch_at(datetime(2026, 1, 21, 9, 0, tzinfo=MSK))
    assert read_claim(claim.id, engine=engine).state == "escalated"

    notices = wait_for("escalation notices", lambda: [m for m in mail_in(stack.mail_dir) if claim.number in m["Subject"] and "Просроч" in m["Subject"]])
    assert {m["To"] for m in notices} == {"slow-organizer@example.ru", "supervisor@example.ru"}

    def escalation_events():
        r = httpx.post(stack.prefect_api_url + "/events/filter", json={
            "filter": {"event": {"name": ["vozvrat.claim.escalated"]},
                       "occurred": {"since": "2026-01-01T00:00:00Z", "until": "2026-02-01T00:00:00Z"},
                       "any_resource": {"id": [f"vozvrat.claim.{claim.id}"]}}}, timeout=10)
        r.raise_for_status()
        return r.json()["events"]

    (event_,) = wait_for("the escalation event", escalation_events)
    related = {r["prefect.resource.id"] for r in event_["related"]}
    assert f"prefect.flow-run.{claim_run(claim.id, engine)}" in related

    with get_client(sync_client=True) as client:
        artifact = client.read_latest_artifacts(limit=50)
    breaches = [a for a in artifact if a.key == "sla-breaches"]
    assert breaches and claim.number in str(breaches[0].data)
    assert run.name  # the run is visible in the UI under sla-watch
