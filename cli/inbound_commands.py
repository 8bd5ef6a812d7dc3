"""`vozvrat inbound ...`: letters to the refunds address (claims by email, tasks/inbound_mail.py).

    vozvrat inbound list [--status received|processed|failed] [--limit N]
    vozvrat inbound drain        process every letter left `received` (the server also does it every minute)
    vozvrat inbound retry ID     give a `failed` letter another pass (after the cause was fixed)
"""
from __future__ import annotations

import json
from datetime import UTC, datetime

import typer

from cli.app import app
from cli.errors import fail

inbound_app = typer.Typer(help="Letters to the refunds address: claims by email.", no_args_is_help=True)
app.add_typer(inbound_app, name="inbound")

DB_HELP = "Database URL; default VOZVRAT_DATABASE_URL or sqlite:///vozvrat.db"
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
