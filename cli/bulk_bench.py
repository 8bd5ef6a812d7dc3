"""`vozvrat bench bulk-decision`: one organizer approves 10,000 claims in one call, then their runs are resumed.

Two figures, measured apart:
- `decisions_recorded_s`: the wall time of one `POST /organizer/decisions` with every claim number
  (through the FastAPI app in-process: auth, validation, the batch transition, audit, outbox and the
  queued resumes, the 10,000 per-claim results) on a fresh SQLite file. Goal: under 5 s.
- `resumes_per_s`: on the embedded stack (real Prefect server, served deployments, the run starter),
  `resume_sample` claims whose runs are suspended waiting for the organizer are approved in one call;
  the rate is claims / seconds from the answer until the run starter has resumed every run.
  10,000 suspended runs would take hours to create on a local Prefect server (about 4 runs/s), so
  the resume rate is measured on a sample: it is the starter's pace, independent of the batch size.
Setup (seeding, filing, assessing, the runs' creation) is not timed.
"""
from __future__ import annotations

import os
import platform
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, insert, select

from models.claim_store import apply_batch, audit_t, claim_t, file_claims_batch, outbox_t
from models.db import make_engine
from models.migrate import upgrade
from models.tables import Event, Order, Organizer, RunAction, Ticket, Venue
from states.policy import Reason


def _seed(engine, claims: int, now: datetime, *, prefix: str = "BD") -> tuple[int, int, list[int]]:
    """(organizer id, event id, ticket ids): one organizer's concert a month away, one card ticket per order."""
    with engine.begin() as conn:
        org = conn.execute(insert(Organizer.__table__).values(name="Bench", email="bench@example.ru", policy={})).inserted_primary_key[0]
        venue = conn.execute(insert(Venue.__table__).values(name="Зал", timezone="Europe/Moscow", region="77")).inserted_primary_key[0]
        event = conn.execute(insert(Event.__table__).values(organizer_id=org, venue_id=venue, title="Концерт",
                                                            starts_at=now + timedelta(days=30))).inserted_primary_key[0]
        first_order = conn.execute(select(func.coalesce(func.max(Order.__table__.c.id), 0))).scalar_one() + 1
        conn.execute(insert(Order.__table__), [
            {"number": f"{prefix}{i}", "buyer_name": f"Покупатель {i}", "buyer_email": f"{prefix.lower()}{i}@example.ru", "buyer_phone": "",
             "channel": "site", "payment_method": "card", "acquirer_payment_id": f"4b1f5a0e-000f-5000-9000-{i:012d}",
             "created_at": now - timedelta(days=40)} for i in range(claims)
        ])
        conn.execute(insert(Ticket.__table__), [
            {"order_id": first_order + i, "event_id": event, "price_paid": 250000, "nominal": 250000, "service_fee": 0, "delivery_fee": 0,
             "promo": False, "barcode": f"{prefix}{i}", "barcode_status": "valid"} for i in range(claims)
        ])
        tickets = [r[0] for r in conn.execute(select(Ticket.__table__.c.id).where(Ticket.__table__.c.event_id == event)
                                               .order_by(Ticket.__table__.c.id))]
    return org, event, tickets


def _numbers(engine, claim_ids: list[int]) -> list[str]:
    with engine.connect() as conn:
        return [r[0] for r in conn.execute(select(claim_t.c.number).where(claim_t.c.id.in_(claim_ids)).order_by(claim_t.c.id))]


def measure_decisions(claims: int) -> dict:
    """One POST with `claims` numbers through the app, on a fresh SQLite file."""
    from fastapi.testclient import TestClient

    from models.db import get_engine
    from models.settings import get_settings
    from tasks.accounts import create_user, issue_api_token

    now = datetime.now(UTC)
    url = f"sqlite:///{Path(tempfile.mkdtemp(prefix='vozvrat-bench-bulk-')) / 'bench.db'}"
    upgrade(url)
    engine = make_engine(url)
    org, _, tickets = _seed(engine, claims, now)
    claim_ids = file_claims_batch(engine, ticket_ids=tickets, reason=Reason.OTHER, actor="bench", now=now)
    apply_batch(engine, claim_ids=claim_ids, trigger="assess", actor="system", now=now)
    user = create_user(engine, login="bench@organizer.ru", password="bench password 123", kind="organizer", organizer_id=org, now=now)
    token = issue_api_token(engine, user.id, name="bench", now=now)
    numbers = _numbers(engine, claim_ids)

    previous = os.environ.get("VOZVRAT_DATABASE_URL")
    os.environ["VOZVRAT_DATABASE_URL"] = url
    if not (os.environ.get("VOZVRAT_SECRET_KEY") or os.environ.get("VOZVRAT_SECRET_KEY_FILE")):
        from cryptography.fernet import Fernet

        # The app refuses to start without a bank-details key; this throwaway database holds none.
        os.environ["VOZVRAT_SECRET_KEY"] = Fernet.generate_key().decode("ascii")
    get_settings.cache_clear()
    get_engine.cache_clear()
    try:
        from api.app import app

        with TestClient(app) as client:
            load_before = os.getloadavg()[0]
            t0, cpu0 = time.perf_counter(), time.process_time()
            r = client.post("/organizer/decisions", headers={"Authorization": f"Bearer {token}", "Idempotency-Key": "bench"},
                            json={"numbers": numbers, "decision": "approve"})
            elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        if r.status_code != 200:
            raise RuntimeError(f"bulk decision answered {r.status_code}: {r.text[:300]}")
        body = r.json()
    finally:
        if previous is None:
            os.environ.pop("VOZVRAT_DATABASE_URL", None)
        else:
            os.environ["VOZVRAT_DATABASE_URL"] = previous
        get_settings.cache_clear()
        get_engine.cache_clear()
    with engine.connect() as conn:
        audit = conn.execute(select(func.count()).select_from(audit_t).where(audit_t.c.trigger == "approve")).scalar_one()
        outbox = conn.execute(select(func.count()).select_from(outbox_t).where(outbox_t.c.template.is_not(None))).scalar_one()
        queued = conn.execute(select(func.count()).select_from(RunAction).where(RunAction.kind == "resume")).scalar_one()
    engine.dispose()
    # The app runs in this process (TestClient): its CPU time is this process's. On a machine shared with other
    # work, wall time is CPU time plus waiting for a core; the load average says how busy the machine was.
    return {"claims": claims, "decided": body["decided"], "decisions_recorded_s": round(elapsed, 3), "decisions_cpu_s": round(cpu, 3),
            "load_average_1m": round(load_before, 1),
            "decisions_per_s": round(claims / elapsed, 1), "audit_rows": audit, "outbox_rows": outbox, "resumes_queued": queued}


def measure_resumes(sample: int, timeout_s: float = 900.0) -> dict:
    """`sample` suspended runs on the embedded stack, approved in one call; the run starter's resume rate."""
    import httpx

    from cli.stack import Stack
    from tasks.accounts import create_user, issue_api_token
    from tasks.intake import file_buyer_claim

    root = Path(tempfile.mkdtemp(prefix="vozvrat-bench-resume-"))
    stack = Stack.on_free_ports(root)
    stack.start()
    try:
        engine = make_engine(stack.env()["VOZVRAT_DATABASE_URL"])
        now = datetime.now(UTC)
        org, event, tickets = _seed(engine, sample, now, prefix="BR")
        for i in range(sample):
            stack.register_payment(f"4b1f5a0e-000f-5000-9000-{i:012d}", 250000)
        claim_ids = [file_buyer_claim(engine, actor="bench:bulk-decision", ticket_id=t, reason="other", now=now).id for t in tickets]
        user = create_user(engine, login="bench@organizer.ru", password="bench password 123", kind="organizer", organizer_id=org, now=now)
        token = issue_api_token(engine, user.id, name="bench", now=now)

        def paused() -> int:
            r = httpx.post(f"{stack.prefect_api_url}/flow_runs/count", timeout=10, json={"flow_runs": {
                "tags": {"all_": [f"event:{event}"]}, "state": {"type": {"any_": ["PAUSED"]}}}})
            return int(r.json())

        deadline = time.monotonic() + timeout_s
        while paused() < sample and time.monotonic() < deadline:
            time.sleep(1)
        waiting = paused()
        numbers = _numbers(engine, claim_ids)
        with httpx.Client(base_url=stack.api_url, timeout=120) as api:
            r = api.post("/organizer/decisions", headers={"Authorization": f"Bearer {token}"}, json={"numbers": numbers, "decision": "approve"})
        r.raise_for_status()
        t0 = time.perf_counter()

        def resumed() -> int:
            with engine.connect() as conn:
                return conn.execute(select(func.count()).select_from(RunAction).where(
                    RunAction.claim_id.in_(claim_ids), RunAction.kind == "resume", RunAction.status == "done")).scalar_one()

        done = resumed()
        while done < sample and time.monotonic() < deadline:
            time.sleep(0.2)
            done = resumed()
        elapsed = time.perf_counter() - t0
        engine.dispose()
    finally:
        stack.stop()
    return {"resume_sample": sample, "runs_waiting": waiting, "resumed": done, "all_resumed_s": round(elapsed, 2),
            "resumes_per_s": round(done / elapsed, 2) if elapsed else None,
            "starter": {"concurrency": int(os.environ.get("VOZVRAT_STARTER_CONCURRENCY", "3")),
                        "batch": int(os.environ.get("VOZVRAT_STARTER_BATCH", "20"))}}


def run_bulk_decision_bench(*, claims: int, resume_sample: int) -> dict:
    result = {"bench": "bulk-decision", "backend": "sqlite"} | measure_decisions(claims)
    if resume_sample:
        result |= measure_resumes(resume_sample)
    result["machine"] = {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()}
    return result
