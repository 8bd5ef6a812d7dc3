"""`vozvrat bench mass-cancel --tickets 60000 --json`: a stadium cancelled end to end on the embedded defaults.

Seeds (untimed) an event with card, cash and BSO tickets (card payments registered with the acquirer
stand-in), two staff supervisors, and runs the mass cancellation's own steps (tasks/mass.py: the
chunks the `mass-cancellation` flow runs as task runs, here called directly, without a Prefect
server): claims filed, assessed and started through the machine with audit and outbox rows, card
refunds to the stand-in over HTTP (a separate process) concurrently, the mass sends approved by the
second supervisor, every email delivered to an aiosmtpd sink (a separate process) by
`--connections` dispatchers, and the cash/BSO buyers who replied with bank details exported as one
1C file. Prints one JSON line. Measured in the same run, against the same database, stand-in and sink:

- raw_insert_rows_per_s: the same claim rows inserted with one plain executemany;
- acquirer_baseline_calls_per_s: plain HTTP POSTs of refunds (httpx, keep-alive) with the same concurrency;
- smtp_baseline_msgs_per_s: aiosmtplib sending pre-built messages over the same number of connections.
"""
from __future__ import annotations

import asyncio
import os
import platform
import resource
import shutil
import tempfile
import time
import uuid
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import typer

from cli.bench_seed import seed_mass_event
from cli.db_commands import bench_app

MAIL_FROM = "Возврат билетов <vozvrat@example.ru>"


def _dispatcher(url: str, smtp_port: int, now: datetime, concurrency: int = 1) -> int:
    """One outbox dispatcher process (its own engine, event loop and `concurrency` SMTP connections) until nothing is due."""
    from models.db import make_engine
    from tasks.outbox import dispatch_emails
    from tasks.smtp import SmtpSettings

    engine = make_engine(url)
    smtp = SmtpSettings(host="127.0.0.1", port=smtp_port, timeout=30)
    sent = 0
    try:
        while True:
            # The real clock on each pass: leases are taken until now + 5 min (see tasks/outbox.py).
            report = asyncio.run(dispatch_emails(engine=engine, smtp=smtp, now=max(now, datetime.now(UTC)), mail_from=MAIL_FROM,
                                                 limit=5000, rate_per_s=0, concurrency=concurrency))
            sent += report.sent
            if not report.sent:
                return sent
    finally:
        engine.dispose()


def _rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _acquirer_baseline(stack, *, calls: int, concurrency: int, shop_id: str, secret: str) -> float:
    """Plain refunds POSTed to the stand-in: its own payments, fresh keys, `concurrency` keep-alive clients."""
    import httpx

    payments = {str(uuid.uuid4()): 10000 for _ in range(calls)}
    stack.register_payments(payments)
    ids = list(payments)
    url = f"http://127.0.0.1:{stack.acquirer_port}/v3/refunds"
    clients = [httpx.Client(auth=(shop_id, secret), timeout=30) for _ in range(concurrency)]

    def worker(n: int) -> None:
        client = clients[n]
        for payment_id in ids[n::concurrency]:
            key = str(uuid.uuid4())
            for attempt in range(3):  # as the product does: a lost connection is asked again with the same key
                try:
                    r = client.post(url, headers={"Idempotence-Key": key},
                                    json={"payment_id": payment_id, "amount": {"value": "100.00", "currency": "RUB"}, "description": "baseline"})
                    r.raise_for_status()
                    break
                except httpx.TransportError:
                    if attempt == 2:
                        raise

    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(worker, range(concurrency)))
    seconds = time.perf_counter() - t0
    for c in clients:
        c.close()
    return calls / seconds


async def _smtp_baseline(port: int, *, messages: int, connections: int) -> float:
    import aiosmtplib

    from tasks.emails import render_email_bytes

    payload = {"claim_number": "VZ-0000001-1", "event_title": "Стадионный концерт", "refund_kopecks": 350000, "payout_deadline": "2026-12-09",
               "buyer_name": "Покупатель", "reason": "cancelled", "channel": "card", "decided_by": None}
    built = [render_email_bytes("decision_approved", to=f"base{i}@example.ru", context=payload, mail_from=MAIL_FROM,
                                message_id_key=f"baseline:{i}", now=datetime.now(UTC)) for i in range(messages)]

    async def one(n: int) -> None:
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=30)
        await smtp.connect()
        for m in built[n::connections]:
            await smtp.sendmail(m.mail_from, [m.to], m.data)
        await smtp.quit()

    t0 = time.perf_counter()
    await asyncio.gather(*(one(n) for n in range(connections)))
    return messages / (time.perf_counter() - t0)


def run_mass_cancel_bench(*, tickets: int, chunk_size: int = 2000, concurrency: int = 16, connections: int = 8, dispatchers: int = 1,
                          cash_share: float = 0.12, bso_share: float = 0.08, replies: int = 2000, keep: bool = False) -> dict:
    from sqlalchemy import delete, func, insert, select

    from cli.stack import Stack, free_port
    from models.claim_store import claim_rows
    from models.db import make_engine
    from models.migrate import upgrade
    from models.settings import get_settings
    from models.tables import Claim, OutboxMessage
    from states.policy import Reason
    from tasks import mass
    from tasks.accounts import authenticate, create_user
    from tasks.acquirer import YooKassaAcquirer
    from tasks.mass_sends import approve_mass_send
    from tasks.payouts import export_bank_transfers, open_payouts, submit_bank_details

    root = Path(tempfile.mkdtemp(prefix="vozvrat-bench-mass-"))
    stack = Stack(root=root, smtp_port=free_port(), acquirer_port=free_port())
    stack.ensure_secret_key()
    os.environ.update({k: v for k, v in stack.env().items() if k.startswith("VOZVRAT_SECRET")})
    get_settings.cache_clear()
    settings = get_settings()
    url = f"sqlite:///{root / 'bench.db'}"
    upgrade(url)
    engine = make_engine(url)
    claim_t, outbox_t = Claim.__table__, OutboxMessage.__table__
    now = datetime.now(UTC).replace(microsecond=0)
    cash, bso = int(tickets * cash_share), int(tickets * bso_share)
    card = tickets - cash - bso
    try:
        stack.start_smtp_sink()
        stack.start_acquirer()
        with engine.begin() as conn:
            data = seed_mass_event(conn, starts_at=now + timedelta(days=20), card=card, cash=cash, bso=bso, seed=7)
        stack.register_payments(data["payments"])
        password = "bench password 1"
        create_user(engine, login="anna@bench.example.ru", password=password, kind="staff", role="supervisor", now=now)
        create_user(engine, login="boris@bench.example.ru", password=password, kind="staff", role="supervisor", now=now)
        anna = authenticate(engine, "anna@bench.example.ru", password).principal
        boris = authenticate(engine, "boris@bench.example.ru", password).principal
        acquirer = YooKassaAcquirer(api_url=stack.acquirer_api_url, shop_id=settings.acquirer_shop_id,
                                    secret_key=settings.acquirer_secret_key.get_secret_value(), timeout_seconds=30)

        # The event is cancelled (guarded status step) before anything else: only then do its tickets take the reason.
        run = mass.begin(engine, event_id=data["event_id"], action="cancelled", reason="Стадион закрыт", started_by=anna.audit, now=now)

        # Baseline 1: the same claim rows, one plain executemany (then removed).
        with engine.connect() as conn:
            rows = [r for s in range(0, tickets, chunk_size)
                    for r in claim_rows(conn, ticket_ids=data["tickets"][s : s + chunk_size], reason=Reason.CANCELLED, actor="bench", now=now)]
        t0 = time.perf_counter()
        with engine.begin() as conn:
            conn.execute(insert(claim_t), rows)
        raw_insert_s = time.perf_counter() - t0
        with engine.begin() as conn:
            conn.execute(delete(claim_t))
        del rows

        # The mass cancellation: chunks (claims, transitions, audit, outbox; card refunds), then the mass sends.
        timings: dict[str, float] = {}
        t_start = time.perf_counter()
        chunks = mass.plan_chunks(engine, mass_id=run.id, event_id=data["event_id"], chunk_size=chunk_size)
        refunds_asked = 0
        for first, last in chunks:
            result = mass.move_chunk(engine, acquirer, run=run, first_ticket_id=first, last_ticket_id=last, now=now,
                                     concurrency=concurrency, timings=timings)
            refunds_asked += result.refunds.get("asked", 0)
        summary = mass.finish(engine, run=run, now=now, export_dir=root / "exports")
        for mass_send_id in summary.mass_sends:
            approve_mass_send(engine, mass_send_id, principal=boris, now=now)
        t_sending = time.perf_counter()

        # Dispatchers are processes, as outbox-dispatch workers are: rendering is CPU, and threads share one GIL.
        # The `connections` SMTP sessions are shared out among `dispatchers` processes (the baseline uses as many).
        dispatchers = max(1, min(dispatchers, connections))
        per_dispatcher = [connections // dispatchers + (n < connections % dispatchers) for n in range(dispatchers)]
        with ProcessPoolExecutor(dispatchers) as pool:
            emails_sent = sum(pool.map(_dispatcher, [url] * dispatchers, [stack.smtp_port] * dispatchers, [now] * dispatchers,
                                       per_dispatcher))
        t_end = time.perf_counter()
        with engine.connect() as conn:
            claims = conn.execute(select(func.count()).select_from(claim_t).where(claim_t.c.event_id == data["event_id"])).scalar_one()
            states = dict(conn.execute(select(claim_t.c.state, func.count()).group_by(claim_t.c.state)).all())
            unsent = conn.execute(select(func.count()).select_from(outbox_t).where(outbox_t.c.status.not_in(("sent", "superseded")))).scalar_one()
            # held approvals replaced by the claim's «деньги отправлены» / «нужны реквизиты» (states.lifecycle.SUPERSEDES)
            superseded = conn.execute(select(func.count()).select_from(outbox_t).where(outbox_t.c.status == "superseded")).scalar_one()
        delivered = len(list(stack.mail_dir.glob("*.eml")))

        # Cash and BSO: buyers who replied with bank details are paid by one 1C export (not in end to end).
        t_bank = time.perf_counter()
        with engine.connect() as conn:
            waiting = list(conn.execute(select(claim_t.c.id).where(claim_t.c.state == "needs_bank_details").order_by(claim_t.c.id)
                                        .limit(replies)).scalars())
        for claim_id in waiting:
            problems = submit_bank_details(engine, claim_id=claim_id, bik="049805746", account="40602810700000000025",
                                           name="Покупатель Тестовый", now=now, actor="buyer:bench")
            if problems:
                raise RuntimeError(f"bank details refused: {problems}")
        open_payouts(engine, now=now, claim_ids=waiting)
        exported = export_bank_transfers(engine, out=root / "exports" / "1c-replies.txt", now=now, event_id=data["event_id"])
        bank_s = time.perf_counter() - t_bank

        # Baselines 2 and 3, against the same stand-in and sink.
        baseline_calls = min(refunds_asked or 1000, 4000)
        acquirer_baseline = _acquirer_baseline(stack, calls=baseline_calls, concurrency=concurrency, shop_id=settings.acquirer_shop_id,
                                               secret=settings.acquirer_secret_key.get_secret_value())
        smtp_baseline = asyncio.run(_smtp_baseline(stack.smtp_port, messages=min(emails_sent or 1000, 10000), connections=connections))
    finally:
        stack.stop()
        engine.dispose()
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    engine_s = timings.get("claims", 0.0)
    refunds_s = timings.get("refunds", 0.0)
    email_s = t_end - t_sending
    end_to_end_s = t_end - t_start
    return {
        "bench": "mass-cancel",
        "backend": "sqlite",
        "tickets": tickets,
        "channels": {"card": card, "cash": cash, "bso": bso},
        "chunk_size": chunk_size,
        "acquirer_concurrency": concurrency,
        "smtp_connections": connections,
        "dispatchers": dispatchers,
        "claims": claims,
        "states": states,
        "engine_claims_per_s": round(claims / engine_s, 1) if engine_s else None,
        "end_to_end_claims_per_s": round(claims / end_to_end_s, 1),
        "email_msgs_per_s": round(emails_sent / email_s, 1) if email_s else None,
        "refund_calls_per_s": round(refunds_asked / refunds_s, 1) if refunds_s else None,
        "raw_insert_rows_per_s": round(tickets / raw_insert_s, 1),
        "smtp_baseline_msgs_per_s": round(smtp_baseline, 1),
        "acquirer_baseline_calls_per_s": round(acquirer_baseline, 1),
        "peak_rss_mb": _rss_mb(),
        "peak_rss_mb_children": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1),
        "emails_sent": emails_sent,
        "emails_delivered": delivered,
        "emails_unsent": unsent,
        "emails_superseded": superseded,
        "refund_calls": refunds_asked,
        "mass_sends_approved": len(summary.mass_sends),
        "bank_details_replies": len(waiting),
        "exported_1c_orders": exported,
        "seconds": {"engine": round(engine_s, 2), "refunds": round(refunds_s, 2), "email": round(email_s, 2),
                    "end_to_end": round(end_to_end_s, 2), "raw_insert": round(raw_insert_s, 3), "bank_replies_and_1c": round(bank_s, 2)},
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform(),
                    "load_avg": [round(x, 2) for x in os.getloadavg()]},
    }


@bench_app.command("mass-cancel")
def bench_mass_cancel(
    tickets: int = typer.Option(60000, "--tickets", min=1, help="Tickets of the cancelled event"),
    chunk_size: int = typer.Option(2000, "--chunk-size", min=1),
    concurrency: int = typer.Option(16, "--concurrency", min=1, help="Card refunds in flight (VOZVRAT_ACQUIRER_CONCURRENCY)"),
    connections: int = typer.Option(8, "--connections", min=1, help="SMTP connections in all (and of the baseline)"),
    dispatchers: int = typer.Option(1, "--dispatchers", min=1, help="Dispatcher processes sharing the connections (on SQLite two contend for its one writer)"),
    replies: int = typer.Option(2000, "--replies", min=0, help="Cash/BSO buyers who reply with bank details (then one 1C export)"),
    json_out: bool = typer.Option(False, "--json", help="Print the JSON line only"),
    regime: bool = typer.Option(False, "--regime", help="Decree 442: a regime cancellation and a postponement with vouchers (cli/bench_regime.py)"),
) -> None:
    """A stadium cancelled end to end: claims, refunds at the stand-in, mass mail approved and delivered."""
    import json

    if regime:
        from cli.bench_regime import run_regime_bench

        typer.echo(json.dumps(run_regime_bench(tickets=tickets, chunk_size=chunk_size, concurrency=concurrency), ensure_ascii=False))
        return

    result = run_mass_cancel_bench(tickets=tickets, chunk_size=chunk_size, concurrency=concurrency, connections=connections, dispatchers=dispatchers,
                                   replies=replies)
    typer.echo(json.dumps(result, ensure_ascii=False))
    if not json_out:
        typer.echo(f"end to end {result['end_to_end_claims_per_s']} claims/s over {result['tickets']} tickets", err=True)
