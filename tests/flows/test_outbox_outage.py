"""SMTP down, then up: nothing is lost and nothing is sent twice."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
from prefect.deployments import run_deployment
from sqlalchemy import select

from models.claim_views import read_claim
from models.db import get_engine
from models.tables import OutboxMessage
from tests import factories as f
from tests.flows.conftest import mail_in, wait_for


def test_mail_waits_in_the_outbox_while_smtp_is_down_and_goes_once_when_it_is_back(stack, site_key):
    engine = get_engine()
    now = datetime.now(UTC)
    with engine.begin() as conn:
        event = f.event(conn, starts_at=now + timedelta(days=40), title="Балет")
        order = f.order(conn, created_at=now - timedelta(days=3), buyer_email="outage@example.ru",
                        acquirer_payment_id="2d1f5a0e-000f-5000-9000-00000000beef")
        ticket = f.ticket(conn, event_id=event, order_id=order)
    stack.register_payment("2d1f5a0e-000f-5000-9000-00000000beef", 350000 + 35000)  # the buyer's card payment

    stack.stop_process("smtp-sink")
    try:
        with httpx.Client(base_url=stack.api_url, timeout=30, headers=site_key) as api:
            claim = api.post("/claims", json={"ticket_id": ticket, "reason": "voluntary"}).json()
        wait_for("claim paid", lambda: read_claim(claim["id"], engine=engine).state == "paid")

        def rows():
            with engine.connect() as conn:
                return conn.execute(select(OutboxMessage.__table__).where(OutboxMessage.claim_id == claim["id"])).all()

        pending = wait_for("every message tried once", lambda: (r := rows()) and len(r) >= 3 and all(m.attempts >= 1 for m in r) and r)
        assert {m.status for m in pending} == {"pending"}
        assert {m.template for m in pending} >= {"claim_received", "decision_approved", "refund_sent"}
    finally:
        stack.start_smtp_sink()

    # Past the backoff: the clock is moved by the parameter, not waited for.
    run = run_deployment("outbox-dispatch/outbox-dispatch", parameters={"now": (now + timedelta(hours=2)).isoformat()}, timeout=180, as_subflow=False)
    assert run.state.is_completed(), run.state
    sent = {m.template for m in rows() if m.status == "sent"}
    assert sent >= {"claim_received", "decision_approved", "refund_sent"}
    delivered = [m for m in mail_in(stack.mail_dir) if m["To"] == "outage@example.ru"]
    assert len(delivered) == len(rows())
    assert len({m["Message-ID"] for m in delivered}) == len(delivered)
