"""The `bulk-decision` deployment, run the way staff run it from the Prefect UI: with parameters, on the
real Prefect server of the embedded stack. Only an active supervisor's login decides; the audit names them."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prefect import get_client
from prefect.deployments import run_deployment
from sqlalchemy import select

from models.claim_store import apply_batch, audit_t, claim_t, file_claims
from models.db import get_engine
from tasks.accounts import create_user
from tests import factories as f


def _claims_waiting(engine, count: int, now: datetime) -> tuple[list[int], list[str]]:
    with engine.begin() as conn:
        event = f.event(conn, starts_at=now + timedelta(days=25), title="Камерный вечер")
        tickets = [f.ticket(conn, event_id=event, order_id=f.order(conn, created_at=now - timedelta(days=30))) for _ in range(count)]
        ids = file_claims(conn, ticket_ids=tickets, reason="other", actor="buyer", now=now)
    apply_batch(engine, claim_ids=ids, trigger="assess", actor="system", now=now)
    with engine.connect() as conn:
        numbers = [r[0] for r in conn.execute(select(claim_t.c.number).where(claim_t.c.id.in_(ids)).order_by(claim_t.c.id))]
    return ids, numbers


def test_a_supervisor_extends_claims_from_the_deployment_and_anyone_else_is_refused(stack):
    engine = get_engine()
    now = datetime.now(UTC)
    ids, numbers = _claims_waiting(engine, 3, now)
    create_user(engine, login="ivan@operator.ru", password="supervisor password", kind="staff", role="supervisor", now=now)
    create_user(engine, login="sveta@operator.ru", password="support password!", kind="staff", role="support", now=now)

    refused = run_deployment("bulk-decision/bulk-decision", timeout=300, parameters={
        "claim_numbers": numbers, "decision": "extend", "note": "Ждём подтверждения площадки", "staff_login": "sveta@operator.ru"})
    assert refused.state.is_failed(), refused.state
    with engine.connect() as conn:
        assert conn.execute(select(claim_t.c.extended).where(claim_t.c.id.in_(ids))).scalars().all() == [False] * 3

    run = run_deployment("bulk-decision/bulk-decision", timeout=300, parameters={
        "claim_numbers": numbers + ["VZ-0000000-9"], "decision": "extend", "note": "Ждём подтверждения площадки",
        "staff_login": "Ivan@Operator.ru"})
    assert run.state.is_completed(), run.state
    with engine.connect() as conn:
        rows = conn.execute(select(audit_t.c.claim_id, audit_t.c.actor).where(audit_t.c.trigger == "extend_review", audit_t.c.claim_id.in_(ids))).all()
        extended = conn.execute(select(claim_t.c.extended, claim_t.c.extension_reason).where(claim_t.c.id.in_(ids))).all()
    assert sorted(rows) == [(i, "staff:supervisor:ivan@operator.ru") for i in sorted(ids)]
    assert set(map(tuple, extended)) == {(True, "Ждём подтверждения площадки")}
    with get_client(sync_client=True) as client:
        artifact = client.read_latest_artifacts()
        markdown = next(a for a in artifact if a.key == "bulk-decision").data
    assert "принято решений: 3, не принято: 1" in markdown and "VZ-0000000-9" in markdown
