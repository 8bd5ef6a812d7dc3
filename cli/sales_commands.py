"""`vozvrat sales import FILE` and `vozvrat bench sales-import`: the operator's sales feed from a JSON Lines file.

Each line is one order in the shape of docs/sales-feed.md (tasks.sales.OrderIn). The whole file is
validated first; a file that is not JSON Lines (not a file, a line that is not JSON) is exit 2 with one
line and nothing written. Valid orders are then upserted in chunks inside ONE transaction; lines that
are JSON but not a valid order, or that the database refuses (a void ticket made valid), are reported
with their line numbers. Exit 0 when every line was taken, 1 when some were refused.
"""
from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from cli.app import app
from cli.db_commands import bench_app
from cli.errors import fail

sales_app = typer.Typer(help="The operator's sales data: organizers, venues, events, orders, tickets.", no_args_is_help=True)
app.add_typer(sales_app, name="sales")

DB_HELP = "Database URL; default VOZVRAT_DATABASE_URL or the stack's sqlite:///var/vozvrat.db"
SHOWN_REFUSALS = 50  # the rest are in --json


def _lines(path: Path) -> int:
    with path.open("rb") as fh:
        return sum(1 for _ in fh)


@sales_app.command("import")
def import_(file: Path = typer.Argument(..., help="JSON Lines: one order per line (docs/sales-feed.md)"),
            db: str | None = typer.Option(None, "--db", help=DB_HELP),
            chunk_size: int = typer.Option(2000, min=1, max=50000, help="Orders per set-based write"),
            as_json: bool = typer.Option(False, "--json", help="Print the summary as one JSON line"),
            quiet: bool = typer.Option(False, "--quiet", help="No progress bar")) -> None:
    """Create or update the file's orders; a summary says what was created, updated, unchanged and refused."""
    from models.db import make_engine
    from models.settings import get_settings
    from tasks.sales import ImportSummary, MalformedFile, check_file, import_orders, valid_orders

    if not file.is_file():
        fail(f"{file}: not a file")
    engine = make_engine(db or get_settings().database_url)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    console = Console(stderr=True)
    malformed: MalformedFile | None = None
    try:
        # A progress bar on a terminal only: a pipe or a log gets the summary alone.
        with Progress(*columns, console=console, disable=quiet or as_json or not console.is_terminal) as progress:
            total = _lines(file)
            checking = progress.add_task("checking lines", total=total)
            try:
                check = check_file(file, lambda n: progress.advance(checking, n))
                progress.update(checking, completed=total)
                writing = progress.add_task("writing orders", total=check.valid)
                written = import_orders(engine, valid_orders(file, check), actor="cli:sales-import", now=datetime.now(UTC),
                                        chunk_size=chunk_size, progress=lambda n: progress.advance(writing, n))
            except MalformedFile as exc:
                malformed = exc
    finally:
        engine.dispose()
    if malformed is not None:
        fail(f"{malformed}; nothing was imported")
    summary = ImportSummary(lines=check.valid + len(check.refusals), results=sorted(written + check.refusals, key=lambda r: r.line or 0))
    data = summary.to_json()
    if as_json:
        typer.echo(json.dumps(data, ensure_ascii=False))
    else:
        typer.echo(f"{file}: {data['orders']} orders — created {data['created']}, updated {data['updated']}, "
                   f"unchanged {data['unchanged']}, refused {data['refused']}"
                   + (f"; claims refused (scanned) {data['claims_refused']}" if data["claims_refused"] else "")
                   + (f"; claims closed (refunded elsewhere) {data['claims_closed']}" if data["claims_closed"] else ""))
        for r in summary.refused[:SHOWN_REFUSALS]:
            reasons = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'order'}: {e['msg']}" for e in r.errors)
            typer.echo(f"  line {r.line}{f' ({r.number})' if r.number else ''}: {reasons}")
        if len(summary.refused) > SHOWN_REFUSALS:
            typer.echo(f"  … and {len(summary.refused) - SHOWN_REFUSALS} more refused lines (see --json)")
    if summary.refused:
        raise typer.Exit(1)


@bench_app.command("sales-import")
def bench_sales_import(
    orders: int = typer.Option(100_000, min=1, max=2_000_000, help="How many orders (1 to 3 tickets each) to import"),
    url: str | None = typer.Option(None, help="Database URL; default a fresh SQLite file in a temp folder"),
    chunk_size: int = typer.Option(2000, min=1),
    as_json: bool = typer.Option(False, "--json", help="Print only the JSON line"),
) -> None:
    """Write a JSON Lines file of ORDERS orders (untimed), import it into a fresh database, then import it again (all unchanged)."""
    from cli.sales_bench import run_sales_import_bench

    result = run_sales_import_bench(orders=orders, url=url, chunk_size=chunk_size)
    if not as_json:
        typer.echo(f"{orders} orders ({result['tickets']} tickets): imported in {result['import_s']} s "
                   f"({result['orders_per_s']}/s), re-imported (unchanged) in {result['reimport_s']} s", err=True)
    typer.echo(json.dumps(result, ensure_ascii=False))
