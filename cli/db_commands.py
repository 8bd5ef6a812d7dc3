"""`vozvrat db upgrade`, `vozvrat diagram`, `vozvrat bench transitions`, `vozvrat bench intake`."""
from __future__ import annotations

import json
from pathlib import Path

import typer

from cli.app import app
from cli.errors import fail

db_app = typer.Typer(help="The claims database.", no_args_is_help=True)
bench_app = typer.Typer(help="Benchmarks; each prints one JSON line.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(bench_app, name="bench")

DIAGRAM_HEADER = "# Claim lifecycle\n\nGenerated from `states/lifecycle.py` by `vozvrat diagram` (a test fails when it is stale).\n\n"


def lifecycle_markdown() -> str:
    from states.lifecycle import mermaid_diagram

    return DIAGRAM_HEADER + "```mermaid\n" + mermaid_diagram().strip() + "\n```\n"


@db_app.command("upgrade")
def db_upgrade(url: str = typer.Option(None, help="Database URL; default VOZVRAT_DATABASE_URL or the stack's sqlite:///var/vozvrat.db")) -> None:
    """Build or upgrade the database to the newest schema."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, SQLAlchemyError

    from models.db import safe_url
    from models.migrate import upgrade
    from models.settings import get_settings

    target = url or get_settings().database_url
    shown = safe_url(target)
    try:
        parsed = make_url(target)
        if parsed.get_backend_name() == "sqlite" and parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)  # the default lives in var/
        upgrade(target)
    except ArgumentError as exc:
        fail(f"invalid database URL {shown}: {exc}")
    except (SQLAlchemyError, OSError) as exc:
        fail(f"cannot upgrade {shown}: {exc.__class__.__name__}: {str(exc).splitlines()[0]}")
    typer.echo(f"database at head: {shown}")


@app.command("diagram")
def diagram(out: Path = typer.Option(Path("docs/lifecycle.md"), help="Markdown file to write"),
            check: bool = typer.Option(False, help="Exit 1 when the file differs from the table")) -> None:
    """Render the lifecycle table as a mermaid diagram."""
    text = lifecycle_markdown()
    if check:
        if not out.exists() or out.read_text(encoding="utf-8") != text:
            typer.echo(f"{out} is stale: run `vozvrat diagram --out {out}`", err=True)
            raise typer.Exit(1)
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    typer.echo(f"wrote {out}")


@bench_app.command("transitions")
def bench_transitions(
    claims: int = typer.Option(60000, min=1, help="How many claims to file and move"),
    url: str = typer.Option(None, help="Database URL; default a fresh SQLite file in a temp folder"),
    chunk_size: int = typer.Option(5000, min=1),
    as_json: bool = typer.Option(False, "--json", help="Print only the JSON line"),
) -> None:
    """File claims and move them through three batch transitions; compare with a plain executemany."""
    from cli.bench import run_transitions_bench

    result = run_transitions_bench(claims=claims, url=url, chunk_size=chunk_size)
    if not as_json:
        typer.echo(f"{claims} claims: {result['claims_per_s']}/s through the lifecycle, "
                   f"{result['raw_insert_rows_per_s']}/s raw insert (ratio {result['ratio']})", err=True)
    typer.echo(json.dumps(result, ensure_ascii=False))


@bench_app.command("ack-latency")
def bench_ack_latency(
    claims: int = typer.Option(3, min=1, help="How many claims to file, one after another on an idle stack"),
    reason: str = typer.Option("voluntary", help="Reason of the claims (voluntary, other, illness, ...)"),
    timeout_s: float = typer.Option(60.0, "--timeout", help="Give up on one acknowledgement after this many seconds"),
    as_json: bool = typer.Option(False, "--json", help="Print only the JSON line"),
) -> None:
    """Start the embedded stack, file claims through the API, time API answer -> acknowledgement at the SMTP sink."""
    from cli.bench import run_ack_latency_bench

    try:
        result = run_ack_latency_bench(claims=claims, reason=reason, timeout_s=timeout_s)
    except (TimeoutError, RuntimeError, OSError) as exc:
        fail(f"ack-latency: {exc}")
    if not as_json:
        typer.echo(f"acknowledgement {result['median_s']} s after the API's answer (median of {claims}, max {result['max_s']} s; goal 2 s)")


@bench_app.command("intake")
def bench_intake(
    clients: int = typer.Option(20, min=1, help="Concurrent HTTP clients"),
    claims: int = typer.Option(1000, min=1, help="How many claims to file"),
    runs_timeout: float = typer.Option(900, help="Seconds to wait for every claim's run before reporting what exists"),
    as_json: bool = typer.Option(False, "--json", help="Print only the JSON line"),
) -> None:
    """File claims through the API of the embedded stack (free ports) and time their runs' creation."""
    from cli.bench import run_intake_bench

    result = run_intake_bench(clients=clients, claims=claims, runs_timeout_s=runs_timeout)
    if not as_json:
        typer.echo(f"{claims} filings from {clients} clients: p50 {result['filing_ms']['p50']} ms, p99 {result['filing_ms']['p99']} ms, "
                   f"{result['errors']} errors; every run created {result['all_runs_created_s_after_burst']} s after the burst", err=True)
    typer.echo(json.dumps(result, ensure_ascii=False))
