"""`vozvrat organizers token ID`: issue an organizer's API token (only its digest is stored); `vozvrat bench bulk-decision`."""
from __future__ import annotations

from datetime import UTC, datetime

import typer

from cli.app import app
from cli.db_commands import bench_app
from cli.errors import fail

organizers_app = typer.Typer(help="Organizers and their API access.", no_args_is_help=True)
app.add_typer(organizers_app, name="organizers")


@organizers_app.command("token")
def token(organizer_id: int = typer.Argument(..., min=1, help="Organizer id"),
          days: int = typer.Option(90, "--days", min=1, max=366, help="Days the token is valid; then the API answers 401"),
          db: str = typer.Option(None, help="Database URL; default VOZVRAT_DATABASE_URL or the stack's sqlite:///var/vozvrat.db")) -> None:
    """Issue a new bearer token for an organizer, valid for --days (the old one stops working), and print it once."""
    from sqlalchemy import select

    from models.claim_store import organizer_t
    from models.db import make_engine
    from models.settings import get_settings
    from tasks.intake import issue_organizer_token

    engine = make_engine(db or get_settings().database_url)
    with engine.connect() as conn:
        if conn.execute(select(organizer_t.c.id).where(organizer_t.c.id == organizer_id)).scalar_one_or_none() is None:
            fail(f"no organizer with id {organizer_id}")
    typer.echo(issue_organizer_token(engine, organizer_id, now=datetime.now(UTC), days=days))


@bench_app.command("bulk-decision")
def bench_bulk_decision(
    claims: int = typer.Option(10000, min=1, max=10000, help="Claims approved in one POST /organizer/decisions"),
    resume_sample: int = typer.Option(40, "--resume-sample", min=0, help="Suspended runs on the embedded stack to time the resumes on (0: skip)"),
    as_json: bool = typer.Option(False, "--json", help="Print only the JSON line"),
) -> None:
    """Time one bulk decision of --claims claims until every decision is recorded, and the run starter's resume rate."""
    import json

    from cli.bulk_bench import run_bulk_decision_bench

    result = run_bulk_decision_bench(claims=claims, resume_sample=resume_sample)
    if not as_json:
        typer.echo(f"{claims} decisions recorded in {result['decisions_recorded_s']} s (goal 5 s); "
                   f"runs resumed at {result.get('resumes_per_s')}/s", err=True)
    typer.echo(json.dumps(result, ensure_ascii=False))
