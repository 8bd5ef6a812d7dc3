"""`vozvrat service-keys create NAME | list | revoke NAME`: the operator's systems' keys (the sales feed, the site).

A key is shown once, when it is made; only its SHA-256 digest is stored. A revoked key answers 401 at once.
"""
from __future__ import annotations

from datetime import UTC, datetime

import typer

from cli.app import app
from cli.errors import fail

keys_app = typer.Typer(help="Service keys of the operator's systems (sales feed, site): create, list, revoke.", no_args_is_help=True)
app.add_typer(keys_app, name="service-keys")

DB_HELP = "Database URL; default VOZVRAT_DATABASE_URL or the stack's sqlite:///var/vozvrat.db"


def _engine(db: str | None):
    from models.db import make_engine
    from models.settings import get_settings

    return make_engine(db or get_settings().database_url)


@keys_app.command("create")
def create(name: str = typer.Argument(..., help="What uses the key, e.g. sales-system"),
           db: str | None = typer.Option(None, "--db", help=DB_HELP)) -> None:
    """Make a key and print it once (keep it in the sales system's secret store)."""
    from tasks.auth import ServiceKeyExists, create_service_key

    try:
        secret = create_service_key(_engine(db), name, now=datetime.now(UTC))
    except ServiceKeyExists:
        fail(f"a service key named {name.strip()!r} exists; revoke it or choose another name")
    except ValueError as exc:
        fail(str(exc))
    typer.echo(f"service key {name.strip()!r} created; it is shown only now:", err=True)
    typer.echo(secret)


@keys_app.command("list")
def list_keys(db: str | None = typer.Option(None, "--db", help=DB_HELP)) -> None:
    """Every key by name, with when it was made, last used and revoked (never the secret)."""
    from tasks.auth import list_service_keys

    keys = list_service_keys(_engine(db))
    if not keys:
        typer.echo("no service keys; make one with `vozvrat service-keys create NAME`", err=True)
        return

    def when(moment: datetime | None) -> str:
        return moment.strftime("%Y-%m-%d %H:%M UTC") if moment else "-"

    width = max(len(k.name) for k in keys)
    typer.echo(f"{'name':<{width}}  {'status':<7}  {'created':<20}  {'last used':<20}  revoked")
    for k in keys:
        status = "revoked" if k.revoked_at else "live"
        typer.echo(f"{k.name:<{width}}  {status:<7}  {when(k.created_at):<20}  {when(k.last_used_at):<20}  {when(k.revoked_at)}")


@keys_app.command("revoke")
def revoke(name: str = typer.Argument(..., help="The key's name"), db: str | None = typer.Option(None, "--db", help=DB_HELP)) -> None:
    """Revoke a key now: every request with it answers 401 from here on."""
    from tasks.auth import revoke_service_key

    if not revoke_service_key(_engine(db), name, now=datetime.now(UTC)):
        fail(f"no live service key named {name!r}")
    typer.echo(f"service key {name!r} revoked")
