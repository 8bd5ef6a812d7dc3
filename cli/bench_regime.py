"""`vozvrat bench mass-cancel --regime --tickets 60000 --json`: a stadium in a region under a high-alert
regime (Decree 442), cancelled, and a second one of the same size postponed. Prints one JSON line.

Seeds (untimed) two events of `tickets` tickets each (card / cash / BSO mix, one order per ticket) at
a venue of a region whose regime is in force, an organizer who offers vouchers and keeps tickets valid
on a postponement, and measures, on the embedded defaults (SQLite) against the acquirer stand-in:

(a) the regime cancellation, the steps of the `mass-cancellation` flow (tasks/mass.py) called directly:
    the event cancelled and its regime attached; `--voucher-share` of the buyers take the organizer's
    voucher before the chunks run (tasks/vouchers.issue_vouchers_chunk: claim filed, `issue_voucher`,
    voucher row, audit, email); then the chunks: claims with their 180-day deadline (regime's end +
    180), assess and start_payout through the machine, audit and outbox rows, card refunds at the
    stand-in; `finish` gathers the held mail. Engine claims/s excludes the card refund calls (as in
    `bench mass-cancel`); end to end includes them.
(b) the postponement (by 12 months, within Decree 442's 18 months) with the organizer exchanging every
    ticket for a voucher, the steps of the `event-postponement` flow called directly:
    «Мероприятие перенесено» per order (tasks/postponement.notify_postponement_chunk), then vouchers
    per ticket (tasks/vouchers.issue_vouchers_chunk), chunk by chunk.

No Prefect server and no SMTP: the emails stay in the outbox (delivery is measured by `bench mass-cancel`).
"""
from __future__ import annotations

import os
import platform
import resource
import shutil
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any


def _rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _seed(engine, *, now: datetime, tickets: int, cash_share: float, bso_share: float, region: str, seed: int, title: str) -> dict[str, Any]:
    """An event of `tickets` tickets, one order each (cli/bench_seed.py: card payments with ids fit for
    the acquirer stand-in, the rest at the box office), at a venue of `region`, whose organizer offers
    vouchers and keeps tickets valid on a postponement."""
    from cli.bench_seed import seed_mass_event

    cash, bso = int(tickets * cash_share), int(tickets * bso_share)
    card = tickets - cash - bso
    organizer = {"name": f"Стадион {seed}", "email": f"stadium{seed}@example.ru",
                 "policy": {"vouchers_offered": True, "voucher_valid_days": 540, "regime_postponed_refunds": False}}
    with engine.begin() as conn:
        data = seed_mass_event(conn, starts_at=now + timedelta(days=20), card=card, cash=cash, bso=bso, organizer=organizer, region=region,
                               title=title, seed=seed, prefix="R")
    return {**data, "channels": {"card": card, "cash": cash, "bso": bso}}


def run_regime_bench(*, tickets: int, chunk_size: int = 2000, notice_chunk_size: int = 1000, concurrency: int = 16,
                     cash_share: float = 0.12, bso_share: float = 0.08, voucher_share: float = 0.1, keep: bool = False) -> dict[str, Any]:
    from sqlalchemy import func, insert, select

    from cli.stack import Stack, free_port
    from models.claim_store import claim_t, outbox_t, voucher_t
    from models.db import make_engine
    from models.migrate import upgrade
    from models.settings import get_settings
    from models.tables import Regime
    from tasks import mass
    from tasks.acquirer import YooKassaAcquirer
    from tasks.postponement import notify_postponement_chunk, order_chunks, record_postponement
    from tasks.vouchers import issue_vouchers_chunk, ticket_chunks

    root = Path(tempfile.mkdtemp(prefix="vozvrat-bench-regime-"))
    stack = Stack(root=root, smtp_port=free_port(), acquirer_port=free_port())
    stack.ensure_secret_key()
    os.environ.update({k: v for k, v in stack.env().items() if k.startswith("VOZVRAT_SECRET")})
    get_settings.cache_clear()
    settings = get_settings()
    url = f"sqlite:///{root / 'bench.db'}"
    upgrade(url)
    engine = make_engine(url)
    now = datetime.now(UTC).replace(microsecond=0)
    today = now.date()
    region = "bench-regime"
    regime_ends = today + timedelta(days=14)  # declared with its end: the 180-day deadline is known at once
    refund_due = regime_ends + timedelta(days=180)
    actor = "staff:supervisor:bench"
    try:
        stack.start_acquirer()
        with engine.begin() as conn:
            conn.execute(insert(Regime.__table__).values(region=region, starts_on=today - timedelta(days=30), ends_on=regime_ends, note=""))
        cancelled = _seed(engine, now=now, tickets=tickets, cash_share=cash_share, bso_share=bso_share, region=region, seed=11,
                          title="Стадион: отмена в режиме")
        postponed = _seed(engine, now=now, tickets=tickets, cash_share=cash_share, bso_share=bso_share, region=region, seed=12,
                          title="Стадион: перенос в режиме")
        stack.register_payments(cancelled["payments"])
        acquirer = YooKassaAcquirer(api_url=stack.acquirer_api_url, shop_id=settings.acquirer_shop_id,
                                    secret_key=settings.acquirer_secret_key.get_secret_value(), timeout_seconds=30)
        rss_seeded = _rss_mb()

        # (a) The regime cancellation.
        event_id = cancelled["event_id"]
        t_start = time.perf_counter()
        run = mass.begin(engine, event_id=event_id, action="cancelled", reason="Режим повышенной готовности", started_by=actor, now=now)
        takers = cancelled["tickets"][:: max(1, round(1 / voucher_share))] if voucher_share > 0 else []
        t_vouchers = time.perf_counter()
        vouchers_a = 0
        for start in range(0, len(takers), notice_chunk_size):
            vouchers_a += issue_vouchers_chunk(engine, event_id=event_id, ticket_ids=takers[start : start + notice_chunk_size], actor="service:site",
                                               now=now, recipients_total=len(takers)).issued
        vouchers_a_s = time.perf_counter() - t_vouchers
        timings: dict[str, float] = {}
        refunds_asked = 0
        for first, last in mass.plan_chunks(engine, mass_id=run.id, event_id=event_id, chunk_size=chunk_size):
            result = mass.move_chunk(engine, acquirer, run=run, first_ticket_id=first, last_ticket_id=last, now=now, concurrency=concurrency,
                                     timings=timings)
            refunds_asked += result.refunds.get("asked", 0)
        summary = mass.finish(engine, run=run, now=now, export_dir=root / "exports")
        cancel_s = time.perf_counter() - t_start
        with engine.connect() as conn:
            claims_a = conn.execute(select(func.count()).select_from(claim_t).where(claim_t.c.event_id == event_id)).scalar_one()
            with_deadline = conn.execute(select(func.count()).select_from(claim_t).where(
                claim_t.c.event_id == event_id, claim_t.c.regime_refund_due == refund_due)).scalar_one()
            citing = conn.execute(select(func.count()).select_from(claim_t).where(
                claim_t.c.event_id == event_id, func.json_extract(claim_t.c.quote, "$.rule_ru").like("%№ 442%"))).scalar_one()
            rule_a = conn.execute(select(func.json_extract(claim_t.c.quote, "$.rule")).where(claim_t.c.event_id == event_id).limit(1)).scalar_one()
            outbox_a = conn.execute(select(func.count()).select_from(outbox_t)).scalar_one()
        rss_cancelled = _rss_mb()

        # (b) The postponement, every ticket exchanged for a voucher.
        event_b = postponed["event_id"]
        change = record_postponement(engine, event_id=event_b, new_starts_at=now + timedelta(days=20 + 365), claims_until=None, actor=actor, now=now)
        t_notices = time.perf_counter()
        orders = order_chunks(engine, event_id=event_b, size=notice_chunk_size)
        total_orders = sum(map(len, orders))
        notices = sum(notify_postponement_chunk(engine, change_id=change.change_id, order_ids=c, now=now, started_by=actor,
                                                recipients_total=total_orders) for c in orders)
        notices_s = time.perf_counter() - t_notices
        t_vb = time.perf_counter()
        chunks_b = ticket_chunks(engine, event_id=event_b, size=notice_chunk_size)
        total_b = sum(map(len, chunks_b))
        vouchers_b = sum(issue_vouchers_chunk(engine, event_id=event_b, ticket_ids=c, actor=actor, now=now, recipients_total=total_b).issued
                         for c in chunks_b)
        vouchers_b_s = time.perf_counter() - t_vb
        with engine.connect() as conn:
            voucher_rows = conn.execute(select(func.count()).select_from(voucher_t)).scalar_one()
            outbox_total = conn.execute(select(func.count()).select_from(outbox_t)).scalar_one()
    finally:
        stack.stop()
        engine.dispose()
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
    engine_s = timings.get("claims", 0.0)
    refunds_s = timings.get("refunds", 0.0)

    def rate(n: int, s: float) -> float | None:
        return round(n / s, 1) if s else None

    return {
        "bench": "mass-cancel --regime",
        "backend": "sqlite",
        "tickets": tickets,
        "channels": cancelled["channels"],
        "chunk_size": chunk_size,
        "notice_chunk_size": notice_chunk_size,
        "acquirer_concurrency": concurrency,
        "regime": {"ends_on": regime_ends.isoformat(), "refund_due": refund_due.isoformat(), "cancellation_rule": rule_a},
        "cancellation": {
            "claims": claims_a,
            "claims_with_180_day_deadline": with_deadline,
            "quotes_citing_decree_442": citing,
            "states": summary.states,
            "vouchers_issued": vouchers_a,
            "vouchers_per_s": rate(vouchers_a, vouchers_a_s),
            "engine_claims_per_s": rate(claims_a - vouchers_a, engine_s),
            "refund_calls": refunds_asked,
            "refund_calls_per_s": rate(refunds_asked, refunds_s),
            "end_to_end_claims_per_s": rate(claims_a, cancel_s),
            "outbox_rows": outbox_a,
            "seconds": {"vouchers": round(vouchers_a_s, 2), "engine": round(engine_s, 2), "refunds": round(refunds_s, 2),
                        "end_to_end": round(cancel_s, 2)},
        },
        "postponement": {
            "rule": change.ruling.rule.value if change.ruling else None,
            "orders": total_orders,
            "notices_written": notices,
            "notices_per_s": rate(notices, notices_s),
            "tickets": total_b,
            "vouchers_issued": vouchers_b,
            "vouchers_per_s": rate(vouchers_b, vouchers_b_s),
            "seconds": {"notices": round(notices_s, 2), "vouchers": round(vouchers_b_s, 2)},
        },
        "voucher_rows": voucher_rows,
        "outbox_rows": outbox_total,
        "peak_rss_mb": _rss_mb(),
        "rss_mb_after": {"seeding": rss_seeded, "cancellation": rss_cancelled},
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform(),
                    "load_avg": [round(x, 2) for x in os.getloadavg()]},
    }


__all__ = ["run_regime_bench"]
