"""The sales feed against the real stack: a ticket refunded at the box office closes the claim whose
run waits for the organizer; the run finishes and the buyer is told by email (SMTP sink)."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
from sqlalchemy import select

from models.claim_views import read_claim
from models.db import get_engine
from models.tables import Ticket
from tasks.auth import create_service_key
from tasks.intake import file_buyer_claim
from tests import factories as f
from tests.flows.conftest import body_text, claim_run, mail_in, run_state, wait_for, waiting_in


def test_a_ticket_refunded_elsewhere_closes_the_waiting_claim_and_its_run(stack):
    engine = get_engine()
    now = datetime.now(UTC)
    key = create_service_key(engine, f"sales-{now.timestamp()}", now=now)
    starts = (now + timedelta(days=9)).astimezone(f.MSK).replace(microsecond=0).isoformat()
    order = f.sales_order("FEED-1", barcodes=("FEED-BC-1",), starts_at=starts, email="feed-buyer@example.ru", event_id="ev-feed")
    with httpx.Client(base_url=stack.api_url, timeout=30, headers={"Authorization": f"Bearer {key}"}) as api:
        r = api.put("/operator/orders/FEED-1", json=order)
        assert r.status_code == 201, r.text
        with engine.connect() as conn:
            ticket_id = conn.execute(select(Ticket.id).where(Ticket.barcode == "FEED-BC-1")).scalar_one()
        claim = file_buyer_claim(engine, actor="buyer:order:test", ticket_id=ticket_id, reason="other", now=now, description="Командировка")
        run_id = claim_run(claim.id, engine)
        wait_for("run suspended for the organizer", lambda: waiting_in(run_id, "awaiting_organizer"))

        r = api.put("/operator/orders/FEED-1", json=f.sales_order("FEED-1", barcodes=("FEED-BC-1",), starts_at=starts,
                                                                  email="feed-buyer@example.ru", event_id="ev-feed",
                                                                  order_status="refunded"))
        assert r.status_code == 200, r.text
        assert r.json()["claims_closed"] == [claim.number]

    assert read_claim(claim.id, engine=engine).state == "closed"
    wait_for("the run read the closed claim and finished", lambda: run_state(run_id) == "COMPLETED")
    closed = wait_for("the buyer's letter", lambda: [m for m in mail_in(stack.mail_dir)
                                                     if m["To"] == "feed-buyer@example.ru" and "закрыта" in m["Subject"]])
    assert claim.number in closed[0]["Subject"]
    assert "возвращён в другом месте" in body_text(closed[0])
