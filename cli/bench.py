"""`vozvrat bench transitions`: claims filed and moved in batches, against a plain executemany.

Prints one JSON line. Setup (event, orders, tickets) is not timed. `raw_insert_rows_per_s` is the
rate of inserting the very claim rows the pipeline files, with one SQLAlchemy executemany, in the
same database; `claims_per_s` is claims through filing (with quotes and audit rows) and three batch
transitions (assess, start_payout, payout_succeeded) with audit and outbox rows.
"""
from __future__ import annotations

import os
import platform
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import delete, func, insert, select

from models.claim_store import apply_batch, audit_t, claim_rows, claim_t, file_claims_batch, outbox_t
from models.db import make_engine
from models.migrate import upgrade
from models.tables import Event, Order, Organizer, Ticket, Venue
from states.policy import Reason

TRIGGERS = ("assess", "start_payout", "payout_succeeded")


def _seed(engine, claims: int, now: datetime) -> list[int]:
    with engine.begin() as conn:
        org = conn.execute(insert(Organizer.__table__).values(name="Bench", email="bench@example.ru", policy={})).inserted_primary_key[0]
        venue = conn.execute(insert(Venue.__table__).values(name="Стадион", timezone="Europe/Moscow", region="77")).inserted_primary_key[0]
        event = conn.execute(
            insert(Event.__table__).values(organizer_id=org, venue_id=venue, title="Стадионный концерт", starts_at=now + timedelta(days=30), status="cancelled")
        ).inserted_primary_key[0]
        conn.execute(insert(Order.__table__), [
            {"number": f"B{i}", "buyer_name": f"Покупатель {i}", "buyer_email": f"b{i}@example.ru", "buyer_phone": "", "channel": "site",
             "payment_method": "card", "acquirer_payment_id": f"pay-{i}", "created_at": now - timedelta(days=10)} for i in range(claims)
        ])
        conn.execute(insert(Ticket.__table__), [
            {"order_id": i + 1, "event_id": event, "price_paid": 350000 + i % 100, "nominal": 400000, "service_fee": 0, "delivery_fee": 0,
             "promo": False, "barcode": f"S{i}", "barcode_status": "valid"} for i in range(claims)
        ])
        return [r[0] for r in conn.execute(select(Ticket.__table__.c.id).order_by(Ticket.__table__.c.id))]


def run_transitions_bench(*, claims: int, url: str | None = None, chunk_size: int = 5000) -> dict:
    now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    tmp = None
    if url is None:
        tmp = tempfile.mkdtemp(prefix="vozvrat-bench-")
        url = f"sqlite:///{Path(tmp) / 'bench.db'}"
    upgrade(url)
    engine = make_engine(url)
    ticket_ids = _seed(engine, claims, now)

    # The rows the pipeline will file, built untimed, then inserted with one plain executemany.
    with engine.connect() as conn:
        rows = [r for start in range(0, claims, chunk_size)
                for r in claim_rows(conn, ticket_ids=ticket_ids[start : start + chunk_size], reason=Reason.CANCELLED, actor="bench", now=now)]
    t0 = time.perf_counter()
    with engine.begin() as conn:
        conn.execute(insert(claim_t), rows)
    raw_s = time.perf_counter() - t0
    with engine.begin() as conn:
        conn.execute(delete(claim_t))

    t0 = time.perf_counter()
    claim_ids = file_claims_batch(engine, ticket_ids=ticket_ids, reason=Reason.CANCELLED, actor="bench", now=now, chunk_size=chunk_size)
    stages = {"file": time.perf_counter() - t0}
    for trigger in TRIGGERS:
        t1 = time.perf_counter()
        result = apply_batch(engine, claim_ids=claim_ids, trigger=trigger, actor="bench", now=now, chunk_size=chunk_size)
        stages[trigger] = time.perf_counter() - t1
        if result.moved_count != claims:
            raise RuntimeError(f"{trigger}: moved {result.moved_count} of {claims} ({len(result.refused)} refused, {len(result.conflicts)} conflicts)")
    total_s = time.perf_counter() - t0

    with engine.connect() as conn:
        audit_rows = conn.execute(select(func.count()).select_from(audit_t)).scalar_one()
        outbox_rows = conn.execute(select(func.count()).select_from(outbox_t)).scalar_one()
        paid = conn.execute(select(func.count()).select_from(claim_t).where(claim_t.c.state == "paid")).scalar_one()
    engine.dispose()
    raw_rate = claims / raw_s
    rate = claims / total_s
    return {
        "bench": "transitions",
        "backend": engine.dialect.name,
        "claims": claims,
        "chunk_size": chunk_size,
        "claims_per_s": round(rate, 1),
        "raw_insert_rows_per_s": round(raw_rate, 1),
        "ratio": round(raw_rate / rate, 2),
        "seconds": {k: round(v, 3) for k, v in stages.items()} | {"total": round(total_s, 3), "raw_insert": round(raw_s, 3)},
        "audit_rows": audit_rows,
        "outbox_rows": outbox_rows,
        "paid": paid,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
    }


# --- `vozvrat bench ack-latency` (messages) -------------------------------------------------------

def _acknowledgement_arrival(mail_dir: Path, claim_number: str, seen: set[Path]) -> float | None:
    """Wall-clock time the sink wrote the claim's «Заявка принята» (.eml mtime), or None if not there yet."""
    from email import policy
    from email.parser import BytesParser

    for path in sorted(mail_dir.glob("*.eml")):
        if path in seen:
            continue
        seen.add(path)
        headers = BytesParser(policy=policy.compat32).parsebytes(path.read_bytes(), headersonly=True)
        if headers.get("X-Vozvrat-Template") == "claim_received" and headers.get("X-Vozvrat-Claim") == claim_number:
            return path.stat().st_mtime
    return None


def _site_key(engine, now: datetime) -> dict[str, str]:
    """The operator's site: buyer endpoints take its service key (issue 10)."""
    from tasks.auth import create_service_key

    return {"Authorization": f"Bearer {create_service_key(engine, 'bench-site', now=now)}"}


def run_ack_latency_bench(*, claims: int = 3, reason: str = "voluntary", timeout_s: float = 60.0, root: Path | None = None) -> dict:
    """File `claims` claims one after another through the API of a fresh embedded stack (Prefect
    server, deployments served, API, SMTP sink; all on free ports) and time, for each, from the
    API's answer to the moment the SMTP sink has the acknowledgement on disk. The stack is idle
    between claims: the next claim is filed only after the previous acknowledgement arrived and its
    flow run finished or suspended. Stack start-up and the seed data are not timed."""
    import httpx

    from cli.stack import Stack

    now = datetime.now(UTC)
    tmp = root or Path(tempfile.mkdtemp(prefix="vozvrat-bench-ack-"))
    stack = Stack.on_free_ports(tmp)
    started = time.perf_counter()
    stack.start()
    startup_s = time.perf_counter() - started
    latencies: list[float] = []
    try:
        engine = make_engine(stack.env()["VOZVRAT_DATABASE_URL"])
        tickets = _seed_intake(engine, claims, now)
        site = _site_key(engine, now)
        engine.dispose()
        seen: set[Path] = set()
        with httpx.Client(base_url=stack.api_url, timeout=60, headers=site) as api:
            for ticket in tickets:
                response = api.post("/claims", json={"ticket_id": ticket, "reason": reason})
                answered = time.time()
                response.raise_for_status()
                number = response.json()["number"]
                deadline = time.monotonic() + timeout_s
                arrived = None
                while arrived is None:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"no acknowledgement for {number} within {timeout_s:.0f} s; see {tmp}")
                    time.sleep(0.02)
                    arrived = _acknowledgement_arrival(stack.mail_dir, number, seen)
                latencies.append(arrived - answered)
                _wait_for_idle_run(stack, response.json().get("flow_run_id"), timeout_s)
    finally:
        stack.stop()
    ordered = sorted(latencies)
    return {
        "bench": "ack-latency",
        "reason": reason,
        "claims": claims,
        "goal_s": 2.0,
        "latency_s": [round(x, 3) for x in latencies],
        "median_s": round(ordered[len(ordered) // 2], 3),
        "max_s": round(ordered[-1], 3),
        "within_goal": ordered[-1] <= 2.0,
        "stack_startup_s": round(startup_s, 1),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform(),
                    "load_1m": round(os.getloadavg()[0], 2)},
    }


def _wait_for_idle_run(stack, flow_run_id: str | None, timeout_s: float) -> None:
    """Until the claim's run has finished or suspended, so the next claim meets an idle stack."""
    import httpx

    if not flow_run_id:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = httpx.get(f"{stack.prefect_api_url}/flow_runs/{flow_run_id}", timeout=5).json().get("state") or {}
        if state.get("type") in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED", "PAUSED"):
            return
        time.sleep(0.2)


# --- `vozvrat bench intake` -----------------------------------------------------------------------

def _seed_intake(engine, claims: int, now: datetime) -> list[int]:
    """One organizer's concert five weeks away, one card ticket per buyer (100 % voluntary refund)."""
    with engine.begin() as conn:
        org = conn.execute(insert(Organizer.__table__).values(name="Bench", email="bench@example.ru", policy={})).inserted_primary_key[0]
        venue = conn.execute(insert(Venue.__table__).values(name="Крокус Сити Холл", timezone="Europe/Moscow", region="50")).inserted_primary_key[0]
        event = conn.execute(insert(Event.__table__).values(organizer_id=org, venue_id=venue, title="Нагрузочный концерт",
                                                            starts_at=now + timedelta(days=35))).inserted_primary_key[0]
        conn.execute(insert(Order.__table__), [
            {"number": f"I{i}", "buyer_name": f"Покупатель {i}", "buyer_email": f"i{i}@example.ru", "buyer_phone": "", "channel": "site",
             "payment_method": "card", "acquirer_payment_id": f"2d1f5a0e-000f-5000-9000-{i:012d}", "created_at": now - timedelta(days=10)}
            for i in range(claims)
        ])
        conn.execute(insert(Ticket.__table__), [
            {"order_id": i + 1, "event_id": event, "price_paid": 350000, "nominal": 350000, "service_fee": 0, "delivery_fee": 0,
             "promo": False, "barcode": f"I{i}", "barcode_status": "valid"} for i in range(claims)
        ])
        return [r[0] for r in conn.execute(select(Ticket.__table__.c.id).order_by(Ticket.__table__.c.id))]


def _percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return 0.0
    return sorted_values[min(len(sorted_values) - 1, int(round(p / 100 * (len(sorted_values) - 1))))]


def run_intake_bench(*, clients: int, claims: int, runs_timeout_s: float = 900.0, root: Path | None = None) -> dict:
    """The embedded stack on free ports; `claims` buyers file voluntary claims through the API from
    `clients` concurrent HTTP clients; then the time until the run starter has created every claim's
    flow run. Filing latency is per request, measured by the client."""
    import queue
    import threading

    import httpx

    from cli.stack import Stack

    root = root or Path(tempfile.mkdtemp(prefix="vozvrat-bench-intake-"))
    stack = Stack.on_free_ports(root)
    stack.start()
    try:
        engine = make_engine(stack.env()["VOZVRAT_DATABASE_URL"])
        ticket_ids = _seed_intake(engine, claims, datetime.now(UTC))
        site = _site_key(engine, datetime.now(UTC))
        work: queue.Queue[int] = queue.Queue()
        for t in ticket_ids:
            work.put(t)
        latencies: list[float] = []
        errors: list[str] = []
        lock = threading.Lock()

        def client() -> None:
            with httpx.Client(base_url=stack.api_url, timeout=60, headers=site) as api:
                while True:
                    try:
                        ticket = work.get_nowait()
                    except queue.Empty:
                        return
                    t0 = time.perf_counter()
                    try:
                        r = api.post("/claims", json={"ticket_id": ticket, "reason": "voluntary"})
                        ok = r.status_code == 201
                        error = None if ok else f"{r.status_code}: {r.text[:200]}"
                    except httpx.HTTPError as exc:
                        error = f"{exc.__class__.__name__}: {exc}"
                    elapsed = time.perf_counter() - t0
                    with lock:
                        latencies.append(elapsed)
                        if error:
                            errors.append(error)

        threads = [threading.Thread(target=client) for _ in range(clients)]
        t_start = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        burst_s = time.perf_counter() - t_start

        def with_run() -> int:
            with engine.connect() as conn:
                return conn.execute(select(func.count()).select_from(claim_t).where(claim_t.c.flow_run_id.is_not(None))).scalar_one()

        filed = claims - len(errors)
        created = with_run()
        deadline = time.perf_counter() + runs_timeout_s
        while created < filed and time.perf_counter() < deadline:
            time.sleep(0.5)
            created = with_run()
        all_runs_s = time.perf_counter() - t_start
        engine.dispose()
    finally:
        stack.stop()
    ordered = sorted(latencies)
    return {
        "bench": "intake",
        "clients": clients,
        "claims": claims,
        "filing_ms": {"p50": round(_percentile(ordered, 50) * 1000, 1), "p99": round(_percentile(ordered, 99) * 1000, 1),
                      "max": round(ordered[-1] * 1000, 1) if ordered else 0.0},
        "filings_per_s": round(len(latencies) / burst_s, 1),
        "errors": len(errors),
        "error_samples": errors[:3],
        "burst_s": round(burst_s, 2),
        "runs_created": created,
        "all_runs_created_s_after_burst": round(all_runs_s - burst_s, 1) if created >= filed else None,
        "run_creations_per_s": round(created / all_runs_s, 2) if all_runs_s else None,
        "starter": {"concurrency": int(os.environ.get("VOZVRAT_STARTER_CONCURRENCY", "3")),
                    "batch": int(os.environ.get("VOZVRAT_STARTER_BATCH", "20"))},
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
    }
