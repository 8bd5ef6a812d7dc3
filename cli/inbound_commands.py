"""`vozvrat inbound ...`: letters to the refunds address (claims by email, tasks/inbound_mail.py).

    vozvrat inbound list [--status received|processed|failed] [--limit N]
    vozvrat inbound drain        process every letter left `received` (the server also does it every minute)
    vozvrat inbound retry ID     give a `failed` letter another pass (after the cause was fixed)
    vozvrat bench inbound        letters through a real inbound server: kept and processed per second (JSON)
"""
from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import typer

from cli.app import app
from cli.db_commands import bench_app
from cli.errors import fail

inbound_app = typer.Typer(help="Letters to the refunds address: claims by email.", no_args_is_help=True)
app.add_typer(inbound_app, name="inbound")

DB_HELP = "Database URL; default VOZVRAT_DATABASE_URL or sqlite:///var/vozvrat.db, the one `make up` uses"
STATUSES = ("received", "processed", "failed")


def _engine(db: str | None):
    from models.db import make_engine
    from models.settings import get_settings

    return make_engine(db or get_settings().database_url)


@inbound_app.command("list")
def list_letters(status: str = typer.Option(None, help="received | processed | failed"),
                 limit: int = typer.Option(50, min=1, max=10_000, help="Newest first, at most this many"),
                 as_json: bool = typer.Option(False, "--json", help="JSON lines instead of a table"),
                 db: str = typer.Option(None, help=DB_HELP)) -> None:
    """Letters received, newest first, with what became of each (the raw letter's path is under the data directory)."""
    from sqlalchemy import select

    from models.tables import InboundLetter

    if status is not None and status not in STATUSES:
        fail(f"--status must be one of {', '.join(STATUSES)}, not {status!r}")
    letter_t = InboundLetter.__table__
    query = select(letter_t.c.id, letter_t.c.received_at, letter_t.c.status, letter_t.c.outcome, letter_t.c.from_address,
                   letter_t.c.envelope_from, letter_t.c.subject, letter_t.c.attempts, letter_t.c.last_error, letter_t.c.path)
    if status is not None:
        query = query.where(letter_t.c.status == status)
    with _engine(db).connect() as conn:
        rows = conn.execute(query.order_by(letter_t.c.id.desc()).limit(limit)).all()
    for r in rows:
        if as_json:
            typer.echo(json.dumps({**r._asdict(), "received_at": r.received_at.isoformat()}, ensure_ascii=False))
        else:
            error = f"  [{r.last_error.splitlines()[0][:80]}]" if r.last_error else ""
            typer.echo(f"{r.id:>7}  {r.received_at:%Y-%m-%d %H:%M}  {r.status:<9}  {(r.outcome or '-'):<19}  "
                       f"{(r.from_address or r.envelope_from or '-')[:40]:<40}  {(r.subject or '')[:50]}{error}")


@inbound_app.command("drain")
def drain_letters(db: str = typer.Option(None, help=DB_HELP)) -> None:
    """Process every due letter still `received` (after a crash or an outage); prints counts by outcome as JSON."""
    from tasks.inbound_mail import drain

    typer.echo(json.dumps(drain(_engine(db), now=datetime.now(UTC)), ensure_ascii=False, sort_keys=True))


@inbound_app.command("retry")
def retry_letter(letter_id: int = typer.Argument(..., min=1, help="The letter's id (vozvrat inbound list)"),
                 db: str = typer.Option(None, help=DB_HELP)) -> None:
    """Give a `failed` letter another pass now."""
    from sqlalchemy import update

    from models.tables import InboundLetter
    from tasks.inbound_mail import process_letter

    letter_t = InboundLetter.__table__
    engine = _engine(db)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        moved = conn.execute(update(letter_t).where(letter_t.c.id == letter_id, letter_t.c.status == "failed")
                             .values(status="received", attempts=0, next_attempt_at=now, lease_until=None)).rowcount
    if moved != 1:
        fail(f"no failed letter with id {letter_id}")
    try:
        outcome = process_letter(engine, letter_id, now=now)
    except Exception as exc:  # noqa: BLE001 - recorded on the letter; one line here
        fail(f"letter {letter_id} failed again: {type(exc).__name__}: {exc}")
    typer.echo(f"letter {letter_id}: {outcome}")


@bench_app.command("inbound")
def bench_inbound(letters: int = typer.Option(200, min=1, max=100_000, help="Letters to send, each naming its own order"),
                  as_json: bool = typer.Option(True, "--json/--no-json", help="One JSON line (the default)")) -> None:
    """Letters through a real inbound SMTP server on a temporary SQLite database: how fast they are kept
    (the sender's 250) and processed into pending claims with their confirmations queued. Prints one JSON line."""
    import os
    import platform
    import smtplib
    import tempfile
    import time
    from email.message import EmailMessage
    from pathlib import Path

    from cryptography.fernet import Fernet
    from sqlalchemy import func, insert, select

    from models.db import make_engine
    from models.migrate import upgrade
    from models.settings import get_settings
    from models.tables import Event, InboundLetter, Order, Organizer, Ticket, Venue
    from tasks.inbound_mail import InboundConfig, start_inbound

    now = datetime.now(UTC)
    with tempfile.TemporaryDirectory(prefix="vozvrat-bench-inbound-") as root:
        os.environ["VOZVRAT_DATA_DIR"] = root
        os.environ.setdefault("VOZVRAT_SECRET_KEY", Fernet.generate_key().decode())
        get_settings.cache_clear()
        url = f"sqlite:///{Path(root) / 'bench.db'}"
        upgrade(url)
        engine = make_engine(url)
        with engine.begin() as conn:
            org = conn.execute(insert(Organizer.__table__).values(name="Bench", email="bench@example.ru", policy={})).inserted_primary_key[0]
            venue = conn.execute(insert(Venue.__table__).values(name="Зал", timezone="Europe/Moscow", region="77")).inserted_primary_key[0]
            event = conn.execute(insert(Event.__table__).values(organizer_id=org, venue_id=venue, title="Концерт", status="scheduled",
                                                                 starts_at=now + timedelta(days=30))).inserted_primary_key[0]
            conn.execute(insert(Order.__table__), [{"number": f"BENCH-{i:06d}", "buyer_name": "Покупатель", "buyer_email": f"b{i}@example.ru",
                                                    "buyer_phone": "", "channel": "site", "payment_method": "card", "created_at": now}
                                                   for i in range(letters)])
            orders = dict(conn.execute(select(Order.__table__.c.number, Order.__table__.c.id)).all())
            conn.execute(insert(Ticket.__table__), [{"order_id": orders[f"BENCH-{i:06d}"], "event_id": event, "price_paid": 350000,
                                                     "nominal": 350000, "service_fee": 0, "delivery_fee": 0, "promo": False,
                                                     "barcode": f"BENCH{i:08d}", "barcode_status": "valid"} for i in range(letters)])
        server = start_inbound(engine, config=InboundConfig(refunds_address="vozvrat@example.ru", own_addresses=frozenset({"vozvrat@example.ru"}),
                                                       max_bytes=25 * 1024 * 1024))
        scan = b"%PDF-1.4\n" + os.urandom(64 * 1024) + b"\n%%EOF\n"
        try:
            started = time.perf_counter()
            with smtplib.SMTP(server.host, server.port, timeout=30) as smtp:
                for i in range(letters):
                    message = EmailMessage()
                    message["From"], message["To"] = f"b{i}@example.ru", "vozvrat@example.ru"
                    message["Subject"] = f"Возврат, заказ № BENCH-{i:06d}"
                    message.set_content("Заболел, больничный во вложении.")
                    message.add_attachment(scan + str(i).encode(), maintype="application", subtype="pdf", filename="больничный.pdf")
                    smtp.send_message(message)
            accepted = time.perf_counter() - started
            server.handler.wait_idle(timeout=3600)
            processed = time.perf_counter() - started
        finally:
            server.stop()
        with engine.connect() as conn:
            outcomes = dict(conn.execute(select(InboundLetter.__table__.c.outcome, func.count()).group_by(InboundLetter.__table__.c.outcome)).all())
        engine.dispose()
    result = {"bench": "inbound", "letters": letters, "attachment_bytes": len(scan), "database": "sqlite",
              "accepted_per_s": round(letters / accepted, 1), "processed_per_s": round(letters / processed, 1),
              "all_processed_s": round(processed, 2), "outcomes": outcomes, "python": platform.python_version(), "cpus": os.cpu_count()}
    typer.echo(json.dumps(result, ensure_ascii=False) if as_json else result)
