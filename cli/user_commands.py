"""`vozvrat users …`: accounts of organizers' people and operator staff (tasks/accounts.py).

Passwords are never arguments (they would stay in the shell history and the process list): a hidden
prompt asked twice, or `--password-file` (its first line). A token is printed once; only its digest is kept.
"""
from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import typer

from cli.app import app
from cli.errors import fail, hidden_prompt

users_app = typer.Typer(help="People who sign in: organizers' users and operator staff with roles.", no_args_is_help=True)
app.add_typer(users_app, name="users")

DB = typer.Option(None, "--db", help="Database URL; default VOZVRAT_DATABASE_URL")


def _engine(db: str | None):
    from models.db import make_engine
    from models.settings import get_settings

    return make_engine(db or get_settings().database_url)


def _password(password_file: Path | None) -> str:
    if password_file is not None:
        try:
            lines = password_file.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            fail(f"cannot read the password file {password_file}: {exc.strerror or exc}")
        if not lines or not lines[0]:
            fail(f"the password file {password_file} is empty")
        return lines[0]
    return hidden_prompt("Password", confirm=True)


@users_app.command("add")
def add(
    login: str = typer.Argument(..., help="The person's email: their login"),
    organizer: int = typer.Option(None, "--organizer", min=1, help="An organizer's user: the organizer's id"),
    staff: str = typer.Option(None, "--staff", help="Operator staff: role support, supervisor or accounting"),
    name: str = typer.Option("", "--name", help="Display name"),
    password_file: Path = typer.Option(None, "--password-file", help="Read the password from this file's first line instead of a prompt"),
    db: str = DB,
) -> None:
    """Create a user who signs in to the organizer page and the API."""
    from tasks.accounts import AccountError, create_user
    from tasks.auth import STAFF_ROLES

    if (organizer is None) == (staff is None):
        fail("give exactly one of --organizer ID or --staff ROLE")
    if staff is not None and staff not in STAFF_ROLES:
        fail(f"--staff is one of {', '.join(STAFF_ROLES)}, not {staff!r}")
    password = _password(password_file)
    try:
        user = create_user(_engine(db), login=login, password=password, kind="organizer" if organizer else "staff", now=datetime.now(UTC),
                           organizer_id=organizer, role=staff, display_name=name)
    except AccountError as exc:
        fail(str(exc))
    typer.echo(f"user {user.login} created ({user.principal.audit})")


@users_app.command("list")
def list_(as_json: bool = typer.Option(False, "--json", help="One JSON array"), db: str = DB) -> None:
    """Every user: kind, organizer or role, disabled or not, live token names."""
    from tasks.accounts import list_users

    users = list_users(_engine(db))
    if as_json:
        typer.echo(json.dumps(users, ensure_ascii=False))
        return
    for u in users:
        who = f"organizer {u['organizer_id']}" if u["kind"] == "organizer" else f"staff {u['role']}"
        state = f"disabled {u['disabled_at']}" if u["disabled_at"] else "active"
        tokens = ", ".join(t["name"] for t in u["tokens"]) or "-"
        typer.echo(f"{u['login']}\t{who}\t{state}\ttokens: {tokens}\t{u['name']}")


@users_app.command("disable")
def disable(login: str = typer.Argument(...), db: str = DB) -> None:
    """Disable a user: no sign-in; their session and tokens stop working at once."""
    from tasks.accounts import disable_user

    if not disable_user(_engine(db), login, now=datetime.now(UTC)):
        fail(f"no active user {login}")
    typer.echo(f"user {login.strip().lower()} disabled")


@users_app.command("token")
def token(login: str = typer.Argument(...), name: str = typer.Option(..., "--name", help="What the token is for (e.g. crm)"),
          days: int = typer.Option(90, "--days", min=1, max=366, help="Days the token is valid"), db: str = DB) -> None:
    """Issue a named API token for the user and print it once (only its digest is kept)."""
    from tasks.accounts import AccountError, find_user, issue_api_token

    engine = _engine(db)
    user = find_user(engine, login, active_only=True)
    if user is None:
        fail(f"no active user {login}")
    if not name.strip() or len(name) > 100:
        fail("--name is 1 to 100 characters")
    try:
        typer.echo(issue_api_token(engine, user.id, name=name, now=datetime.now(UTC), days=days))
    except AccountError as exc:
        fail(str(exc))


@users_app.command("revoke-token")
def revoke_token(login: str = typer.Argument(...), name: str = typer.Argument(..., help="The token's name"), db: str = DB) -> None:
    """Revoke the user's tokens with this name."""
    from tasks.accounts import find_user, revoke_api_token

    engine = _engine(db)
    user = find_user(engine, login)
    if user is None:
        fail(f"no user {login}")
    if revoke_api_token(engine, user.id, name, now=datetime.now(UTC)) == 0:
        fail(f"{login} has no live token named {name!r}")
    typer.echo(f"token {name!r} of {user.login} revoked")
