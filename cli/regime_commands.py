"""`vozvrat events postpone / history / vouchers`, `vozvrat regimes add / end / list`, `vozvrat vouchers show / redeem / expire`.

Thin shell over tasks/postponement.py, tasks/regimes.py and tasks/vouchers.py: parse, validate
(one line on stderr and exit 2 on bad input), call, print (JSON with --json). The audit trail names
the operator as `ops:<login>`.
"""
from __future__ import annotations

import getpass
import json
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import typer
from sqlalchemy import select

from cli.app import app
from cli.db_commands import bench_app
from cli.errors import fail
from cli.event_commands import events_app
from tasks.intake import IntakeError

DB_HELP = "Database URL; default VOZVRAT_DATABASE_URL"

regimes_app = typer.Typer(help="High-alert regimes (Decree 442): a region and a period.", no_args_is_help=True)
vouchers_app = typer.Typer(help="Vouchers issued instead of refunds (Decree 442).", no_args_is_help=True)
app.add_typer(regimes_app, name="regimes")
app.add_typer(vouchers_app, name="vouchers")


def _engine(db: str | None):
    from models.db import make_engine
    from models.settings import get_settings

    return make_engine(db or get_settings().database_url)


def _actor() -> str:
    try:
        return f"ops:{getpass.getuser()}"
    except (KeyError, OSError):
        return "ops:unknown"


def _now() -> datetime:
    return datetime.now(UTC)


def _date(text: str, option: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        fail(f"{option}: malformed date {text!r} (expected e.g. 2027-06-01)")


def _out(data: Any, as_json: bool, lines: list[str]) -> None:
    typer.echo(json.dumps(data, ensure_ascii=False, indent=2, default=str) if as_json else "\n".join(lines))


def _refused(exc: IntakeError) -> None:
    fail(f"{exc.field}: {exc.message_ru}")


# --- events ---------------------------------------------------------------------------------------

def _venue_zone(engine, event_id: int) -> ZoneInfo:
    from models.claim_store import event_t, venue_t

    with engine.connect() as conn:
        name = conn.execute(select(venue_t.c.timezone).join(event_t, event_t.c.venue_id == venue_t.c.id).where(event_t.c.id == event_id)).scalar()
    if name is None:
        fail(f"event {event_id} not found")
    return ZoneInfo(name)


@events_app.command("postpone")
def postpone(
    event_id: int = typer.Argument(..., min=1, help="The event's id"),
    to: str | None = typer.Option(None, "--to", help="New date and time, e.g. 2027-06-01T19:00 (the venue's local time unless an offset is given); "
                                                     "omit: postponed, new date to be announced"),
    claims_until: str | None = typer.Option(None, "--claims-until", help="Last day for refund claims because of the postponement"),
    note: str = typer.Option("", "--note", help="Why, for the event's history"),
    as_json: bool = typer.Option(False, "--json"),
    db: str | None = typer.Option(None, "--db", help=DB_HELP),
) -> None:
    """Postpone an event: tickets stay valid for the new date, every buyer is told the date, their options and the rule."""
    from tasks.postponement import notify_postponement, record_postponement

    engine = _engine(db)
    new_starts_at = None
    if to is not None:
        try:
            new_starts_at = datetime.fromisoformat(to)
        except ValueError:
            fail(f"--to: malformed date-time {to!r} (expected e.g. 2027-06-01T19:00)")
        if new_starts_at.tzinfo is None:
            new_starts_at = new_starts_at.replace(tzinfo=_venue_zone(engine, event_id))
    last_day = _date(claims_until, "--claims-until") if claims_until else None
    now = _now()
    try:
        done = record_postponement(engine, event_id=event_id, new_starts_at=new_starts_at, claims_until=last_day, actor=_actor(), now=now, note=note)
        told = notify_postponement(engine, change_id=done.change_id, now=now, started_by=_actor())
    except IntakeError as exc:
        _refused(exc)
    data = done.to_json() | {"notices_written": told}
    rule = done.ruling.text_ru if done.ruling else "ст. 52.1 Основ законодательства о культуре (режим повышенной готовности не действует)"
    _out(data, as_json, [
        f"event {event_id} postponed: {data['previous_starts_at']} -> {data['new_starts_at'] or 'new date to be announced'} "
        f"(original {data['original_starts_at']}; change {done.change_id})",
        f"claims until: {data['claims_until'] or 'no last day'}",
        f"rule: {rule}",
        f"buyers told: {told} notice(s) queued",
    ])


@events_app.command("history")
def history(event_id: int = typer.Argument(..., min=1), as_json: bool = typer.Option(False, "--json"),
            db: str | None = typer.Option(None, "--db", help=DB_HELP)) -> None:
    """An event's changes: original and new dates, who, when, the rule."""
    from tasks.postponement import event_history

    try:
        rows = event_history(_engine(db), event_id=event_id)
    except IntakeError as exc:
        _refused(exc)
    _out(rows, as_json, [f"{r['changed_at']}  {r['kind']}  {r['previous_starts_at']} -> {r['new_starts_at'] or 'TBA'}  "
                         f"by {r['changed_by']}  rule {r['rule'] or 'art. 52.1'}" for r in rows] or ["no changes"])


@events_app.command("vouchers")
def event_vouchers(event_id: int = typer.Argument(..., min=1), chunk_size: int = typer.Option(1000, "--chunk-size", min=1, max=50000),
                   as_json: bool = typer.Option(False, "--json"), db: str | None = typer.Option(None, "--db", help=DB_HELP)) -> None:
    """Decree 442: exchange every ticket of a regime event not refunded yet for a voucher (the organizer must offer vouchers)."""
    from tasks.vouchers import issue_event_vouchers

    try:
        summary = issue_event_vouchers(_engine(db), event_id=event_id, actor=_actor(), now=_now(), chunk_size=chunk_size)
    except IntakeError as exc:
        _refused(exc)
    _out(summary, as_json, [f"event {event_id}: {summary['issued']} voucher(s) issued, {summary['skipped']} ticket(s) skipped, "
                            f"{summary['chunks']} chunk(s)"])


# --- regimes --------------------------------------------------------------------------------------

@regimes_app.command("add")
def regimes_add(region: str = typer.Option(..., "--region", help="The subject's code as venues store it (77) or its ISO 3166-2:RU code (RU-MOW)"),
                starts_on: str = typer.Option(..., "--from", help="First day, e.g. 2026-03-16"),
                ends_on: str | None = typer.Option(None, "--to", help="Last day (inclusive); omit while in force"),
                as_json: bool = typer.Option(False, "--json"), db: str | None = typer.Option(None, "--db", help=DB_HELP)) -> None:
    """Declare a high-alert regime in a region."""
    from tasks.regimes import add_regime

    first = _date(starts_on, "--from")
    last = _date(ends_on, "--to") if ends_on else None
    try:
        view = add_regime(_engine(db), region=region, starts_on=first, ends_on=last, actor=_actor(), now=_now())
    except IntakeError as exc:
        _refused(exc)
    _out(view.to_json(), as_json, [f"regime {view.id}: region {view.region}, from {view.starts_on} to {view.ends_on or '(in force)'}"])


@regimes_app.command("end")
def regimes_end(regime_id: int = typer.Argument(..., min=1), on: str = typer.Option(..., "--on", help="Last day of the regime (inclusive)"),
                as_json: bool = typer.Option(False, "--json"), db: str | None = typer.Option(None, "--db", help=DB_HELP)) -> None:
    """End a regime: its 14-day publication and 180-day refund deadlines start counting."""
    from states.regimes import publication_last_day, refund_last_day
    from tasks.regimes import end_regime

    last = _date(on, "--on")
    try:
        view = end_regime(_engine(db), regime_id=regime_id, ends_on=last, actor=_actor(), now=_now())
    except IntakeError as exc:
        _refused(exc)
    _out(view.to_json(), as_json, [f"regime {view.id} ({view.region}) ends {last}: publish changes by {publication_last_day(last)}, "
                                   f"refund cancelled events by {refund_last_day(last)}"])


@regimes_app.command("list")
def regimes_list(region: str | None = typer.Option(None, "--region", help="Only this region: 77 or RU-MOW, as for `regimes add`"), as_json: bool = typer.Option(False, "--json"),
                 db: str | None = typer.Option(None, "--db", help=DB_HELP)) -> None:
    """Every regime, oldest first."""
    from tasks.regimes import list_regimes

    try:
        views = list_regimes(_engine(db), region=region)
    except IntakeError as exc:
        _refused(exc)
    _out([v.to_json() for v in views], as_json,
         [f"{v.id}\t{v.region}\t{v.starts_on}\t{v.ends_on or '(in force)'}" for v in views] or ["no regimes"])


# --- vouchers -------------------------------------------------------------------------------------

@vouchers_app.command("show")
def vouchers_show(number: str = typer.Argument(...), db: str | None = typer.Option(None, "--db", help=DB_HELP)) -> None:
    from tasks.vouchers import read_voucher

    try:
        view = read_voucher(_engine(db), number)
    except IntakeError as exc:
        _refused(exc)
    _out(view.to_json(), True, [])


@vouchers_app.command("redeem")
def vouchers_redeem(number: str = typer.Argument(...), event_id: int = typer.Option(..., "--event", min=1, help="The event it pays for"),
                    db: str | None = typer.Option(None, "--db", help=DB_HELP)) -> None:
    """The holder used the voucher for another event of the same organizer."""
    from tasks.vouchers import redeem_voucher

    try:
        view = redeem_voucher(_engine(db), number=number, event_id=event_id, actor=_actor(), now=_now())
    except IntakeError as exc:
        _refused(exc)
    _out(view.to_json(), True, [])


@vouchers_app.command("expire")
def vouchers_expire(db: str | None = typer.Option(None, "--db", help=DB_HELP)) -> None:
    """Turn vouchers not used by their expiry into refunds now (sla-watch does this every pass)."""
    from tasks.vouchers import expire_vouchers

    moved = expire_vouchers(_engine(db), now=_now(), actor=_actor())
    typer.echo(f"{len(moved)} expired voucher(s) turned into refunds")


# --- `vozvrat bench vouchers` ----------------------------------------------------------------------

def run_vouchers_bench(*, tickets: int, url: str | None = None, chunk_size: int = 1000) -> dict[str, Any]:
    """A stadium of a cancelled event under a lifted regime: every ticket exchanged for a voucher
    (claim filed, `issue_voucher` through the machine, voucher row, email) by the chunked path the
    event-postponement flow runs. Setup is not timed."""
    import os
    import platform
    import tempfile
    import time
    from pathlib import Path

    from sqlalchemy import func, insert

    from models.claim_store import audit_t, claim_t, outbox_t, voucher_t
    from models.db import make_engine
    from models.migrate import upgrade
    from models.tables import Event, Order, Organizer, Regime, Ticket, Venue
    from tasks.vouchers import issue_vouchers_chunk, ticket_chunks

    now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    if url is None:
        url = f"sqlite:///{Path(tempfile.mkdtemp(prefix='vozvrat-bench-')) / 'bench.db'}"
    upgrade(url)
    engine = make_engine(url)
    with engine.begin() as conn:
        org = conn.execute(insert(Organizer.__table__).values(name="Bench", email="bench@example.ru",
                                                              policy={"vouchers_offered": True})).inserted_primary_key[0]
        venue = conn.execute(insert(Venue.__table__).values(name="Стадион", timezone="Europe/Moscow", region="bench")).inserted_primary_key[0]
        regime = conn.execute(insert(Regime.__table__).values(region="bench", starts_on=date(2026, 10, 1), ends_on=date(2026, 11, 1),
                                                              note="")).inserted_primary_key[0]
        event = conn.execute(insert(Event.__table__).values(organizer_id=org, venue_id=venue, title="Стадионный концерт", status="cancelled",
                                                            starts_at=datetime(2026, 10, 20, 16, 0, tzinfo=UTC), regime_id=regime)).inserted_primary_key[0]
        conn.execute(insert(Order.__table__), [
            {"number": f"B{i}", "buyer_name": f"Покупатель {i}", "buyer_email": f"b{i}@example.ru", "buyer_phone": "", "channel": "site",
             "payment_method": "card", "acquirer_payment_id": f"pay-{i}", "created_at": now - timedelta(days=60)} for i in range(tickets)
        ])
        conn.execute(insert(Ticket.__table__), [
            {"order_id": i + 1, "event_id": event, "price_paid": 350000 + i % 100, "nominal": 400000, "service_fee": 0, "delivery_fee": 0,
             "promo": False, "barcode": f"S{i}", "barcode_status": "valid"} for i in range(tickets)
        ])
    chunks = ticket_chunks(engine, event_id=event, size=chunk_size)
    t0 = time.perf_counter()
    issued = sum(issue_vouchers_chunk(engine, event_id=event, ticket_ids=c, actor="bench", now=now, recipients_total=tickets).issued for c in chunks)
    seconds = time.perf_counter() - t0
    t1 = time.perf_counter()
    again = sum(issue_vouchers_chunk(engine, event_id=event, ticket_ids=c, actor="bench", now=now, recipients_total=tickets).issued for c in chunks)
    rerun = time.perf_counter() - t1
    with engine.connect() as conn:
        counts = {name: conn.execute(select(func.count()).select_from(table)).scalar_one()
                  for name, table in (("vouchers", voucher_t), ("claims", claim_t), ("audit_rows", audit_t), ("outbox_rows", outbox_t))}
        held = conn.execute(select(func.count()).select_from(outbox_t).where(outbox_t.c.status == "held")).scalar_one()
    engine.dispose()
    return {
        "bench": "vouchers", "backend": engine.dialect.name, "tickets": tickets, "chunk_size": chunk_size, "issued": issued,
        "vouchers_per_s": round(issued / seconds, 1), "seconds": round(seconds, 3), "rerun_issued": again, "rerun_seconds": round(rerun, 3),
        **counts, "held_emails": held,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
    }


@bench_app.command("vouchers")
def bench_vouchers(
    tickets: int = typer.Option(60000, "--tickets", min=1, help="Tickets of the cancelled stadium event"),
    url: str | None = typer.Option(None, "--url", help="Database URL (an empty database); default a fresh SQLite file in a temp folder"),
    chunk_size: int = typer.Option(1000, "--chunk-size", min=1, max=50000),
    as_json: bool = typer.Option(False, "--json", help="Print only the JSON line"),
) -> None:
    """Exchange every ticket of a regime-cancelled stadium event for a voucher, chunk by chunk; then again (nothing twice)."""
    result = run_vouchers_bench(tickets=tickets, url=url, chunk_size=chunk_size)
    if not as_json:
        typer.echo(f"{tickets} tickets: {result['vouchers_per_s']} vouchers/s", err=True)
    typer.echo(json.dumps(result, ensure_ascii=False))
