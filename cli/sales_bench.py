"""`vozvrat bench sales-import`: a file of N orders imported into a fresh database, then imported again.

The file is written untimed. `import_s` covers validating every line and writing every row (one
transaction); `reimport_s` is the same file again, every order "unchanged" (the idempotent path).
`*_cpu_s` is this process's CPU time: on a shared machine the wall time also holds others' work.
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from models.db import make_engine
from models.migrate import upgrade
from tasks.sales import import_file

ZONES = (("Europe/Moscow", "77", 3), ("Europe/Kaliningrad", "39", 2), ("Europe/Samara", "63", 4), ("Asia/Yekaterinburg", "66", 5),
         ("Asia/Novosibirsk", "54", 7), ("Asia/Vladivostok", "25", 10))
PRICES = (150000, 250000, 350000, 480000, 720000)


def write_orders(path: Path, orders: int, start: datetime) -> int:
    """N orders over 50 organizers, 120 venues in six zones and 2,000 events; 1 to 3 tickets each. Returns the ticket count."""
    tickets = 0
    with path.open("w", encoding="utf-8") as fh:
        for i in range(orders):
            event = i % 2000
            venue = event % 120
            zone, region, offset = ZONES[venue % len(ZONES)]
            starts = (start + timedelta(days=20 + event % 300, hours=offset)).strftime("%Y-%m-%dT19:00:00") + f"+{offset:02d}:00"
            method = ("card", "card", "card", "cash", "bso")[i % 5]
            price = PRICES[i % len(PRICES)]
            count = 1 + i % 3
            tickets += count
            fh.write(json.dumps({
                "number": f"B-{i:08d}", "created_at": "2026-10-01T12:00:00+03:00", "status": "paid",
                "channel": "site" if method == "card" else "box_office",
                "organizer": {"id": f"org-{event % 50}", "name": f"Организатор {event % 50}", "email": f"org{event % 50}@example.ru"},
                "venue": {"id": f"ven-{venue}", "name": f"Зал {venue}", "timezone": zone, "region": region},
                "event": {"id": f"ev-{event}", "title": f"Концерт {event}", "starts_at": starts, "status": "scheduled"},
                "buyer": {"name": f"Покупатель {i}", "email": f"buyer{i}@example.ru", "phone": "+79990000000"},
                "payment": {"method": method, "acquirer_payment_id": f"pay-{i}" if method == "card" else None,
                            "amount": count * (price + price // 10)},
                "tickets": [{"barcode": f"BC{i:08d}{k}", "price_paid": price, "nominal": price, "service_fee": price // 10,
                             "delivery_fee": 0, "promo": False, "status": "valid"} for k in range(count)],
            }, ensure_ascii=False) + "\n")
    return tickets


def run_sales_import_bench(*, orders: int, url: str | None = None, chunk_size: int = 2000) -> dict:
    now = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    tmp = Path(tempfile.mkdtemp(prefix="vozvrat-sales-bench-"))
    try:
        feed = tmp / "orders.jsonl"
        tickets = write_orders(feed, orders, now)
        target = url or f"sqlite:///{tmp / 'bench.db'}"
        upgrade(target)
        engine = make_engine(target)
        try:
            cpu0 = time.process_time()
            first = import_file(engine, feed, actor="bench", now=now, chunk_size=chunk_size)
            cpu1 = time.process_time()
            second = import_file(engine, feed, actor="bench", now=now, chunk_size=chunk_size)
            cpu2 = time.process_time()
        finally:
            engine.dispose()
        import_s = first.validate_s + first.write_s
        reimport_s = second.validate_s + second.write_s
        return {
            "bench": "sales-import",
            "orders": orders,
            "tickets": tickets,
            "created": first.count("created"),
            "refused": first.count("refused"),
            "import_s": round(import_s, 2),
            "validate_s": round(first.validate_s, 2),
            "write_s": round(first.write_s, 2),
            "orders_per_s": round(orders / import_s),
            # This process's CPU time: on a shared machine wall time also counts other people's work.
            "import_cpu_s": round(cpu1 - cpu0, 2),
            "reimport_unchanged": second.count("unchanged"),
            "reimport_s": round(reimport_s, 2),
            "reimport_cpu_s": round(cpu2 - cpu1, 2),
            "chunk_size": chunk_size,
            "database": target.split(":", 1)[0],
            "file_mb": round(feed.stat().st_size / 2**20, 1),
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
