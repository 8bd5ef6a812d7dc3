"""`vozvrat mass-sends …`: a send to many recipients waits for a second staff supervisor (tasks/mass_sends.py).

The staff member says who they are with `--as LOGIN` and their password (a hidden prompt, or
`--password-file` for scripts), checked by tasks.accounts.authenticate; the audit records
`staff:<role>:<login>`, never a name typed on the command line.
"""
from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import typer
from rich.console import Console

from cli.app import app
from cli.console import console
from cli.console import table as new_table
from cli.errors import fail, hidden_prompt

mass_sends_app = typer.Typer(help="Mass sends: see, approve or reject mail to many recipients (two-person rule).", no_args_is_help=True)
app.add_typer(mass_sends_app, name="mass-sends")

DB_HELP = "Database URL; default VOZVRAT_DATABASE_URL or sqlite:///var/vozvrat.db, the one `make up` uses"
AS_HELP = "Your staff login (email); the password is asked (hidden) unless --password-file is given"
PASSWORD_FILE_HELP = "A file whose first line is your password (for scripts; keep it 0600)"


def engine_for(db: str | None):
    from models.db import make_engine
    from models.settings import get_settings

    return make_engine(db or get_settings().database_url)


def signed_in(engine, login: str | None, password_file: Path | None):
    """The Principal of the staff member or organizer user running the command, or exit 2."""
    from tasks.accounts import authenticate

    if not login:
        fail("say who you are: --as LOGIN")
    if password_file is not None:
        try:
            lines = password_file.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            fail(f"cannot read --password-file {password_file}: {exc.strerror or exc}")
        password = lines[0] if lines else ""
    else:
        password = hidden_prompt(f"password for {login}")
    user = authenticate(engine, login, password)
    if user is None:
        fail(f"wrong login or password for {login}")
    return user.principal


def _show_view(out: Console, view) -> None:
    out.print(f"[bold]mass send № {view.id}[/bold]: template {view.template}, {view.recipient_count} recipient(s), "
                  f"status {view.status} ({view.to_json()['status_ru']})")
    out.print(f"started by {view.started_by} at {view.created_at:%Y-%m-%d %H:%M} UTC"
                  + (f"; event № {view.event_id}" if view.event_id else ""))
    if view.approved_by:
        out.print(f"approved by {view.approved_by} at {view.approved_at:%Y-%m-%d %H:%M} UTC; sent {view.sent}, waiting {view.waiting}")
    if view.resend_of:
        out.print(f"a resend of rejected mass send № {view.resend_of}")
    if view.rejected_by:
        out.print(f"rejected by {view.rejected_by} at {view.rejected_at:%Y-%m-%d %H:%M} UTC: {view.note or '(no reason given)'}")
    if view.resent_as:
        out.print(f"resent as № {', '.join(map(str, view.resent_as))}")
    if view.buyer_not_told:
        out.print(f"[bold red]buyer not told[/bold red]: {len(view.buyer_not_told)} claim(s): {', '.join(view.buyer_not_told)}"
                      f" (`vozvrat mass-sends resend {view.id}` queues them again for a second person to approve)")


@mass_sends_app.command("list")
def list_sends(status: str = typer.Option(None, "--status", help="held | approved | rejected | sending | done"),
               db: str = typer.Option(None, "--db", help=DB_HELP)) -> None:
    """Mass sends, newest first."""
    from tasks.mass_sends import STATUSES, list_mass_sends

    if status is not None and status not in STATUSES:
        fail(f"--status is one of {', '.join(STATUSES)}, not {status!r}")
    views = list_mass_sends(engine_for(db), status=status)
    table = new_table("Mass sends", ("id", "template", "event", "recipients", "status", "started by", "approved by", "sent", "buyer not told"))
    for v in views:
        table.add_row(str(v.id), v.template, str(v.event_id or ""), str(v.recipient_count), v.status, v.started_by,
                      v.approved_by or v.rejected_by or "", str(v.sent), str(len(v.buyer_not_told) or ""))
    console().print(table)


@mass_sends_app.command("show")
def show(mass_send_id: int = typer.Argument(..., help="The mass send's number"), db: str = typer.Option(None, "--db", help=DB_HELP)) -> None:
    """The template, a rendered sample and the recipient count: what an approver must see."""
    from tasks.mass_sends import get_mass_send, render_sample

    engine = engine_for(db)
    view = get_mass_send(engine, mass_send_id)
    if view is None:
        fail(f"no mass send {mass_send_id}")
    out = console()
    _show_view(out, view)
    sample = render_sample(engine, mass_send_id)
    if sample is not None:
        out.rule(f"sample: to {sample.recipient}")
        out.print(f"Subject: {sample.subject}\n")
        out.print(sample.text, markup=False, highlight=False)
        out.rule()


def _decide(mass_send_id: int, login: str | None, password_file: Path | None, db: str | None, *, approve: bool, note: str | None) -> None:
    from tasks.mass_sends import MassSendRefused, approve_mass_send, reject_mass_send

    engine = engine_for(db)
    principal = signed_in(engine, login, password_file)
    now = datetime.now(UTC)
    try:
        if approve:
            view = approve_mass_send(engine, mass_send_id, principal=principal, now=now)
        else:
            view = reject_mass_send(engine, mass_send_id, principal=principal, now=now, note=note)
    except MassSendRefused as exc:
        fail(exc.message_ru)
    verb = "approved: the messages are queued for sending" if approve else "rejected: nothing will be sent"
    typer.echo(f"mass send {view.id} ({view.template}, {view.recipient_count} recipient(s)) {verb} by {principal.audit}")


@mass_sends_app.command("approve")
def approve(mass_send_id: int = typer.Argument(..., help="The mass send's number"),
            login: str = typer.Option(None, "--as", help=AS_HELP),
            password_file: Path = typer.Option(None, "--password-file", help=PASSWORD_FILE_HELP),
            db: str = typer.Option(None, "--db", help=DB_HELP)) -> None:
    """Let a held mass send go (a staff supervisor who did not start it)."""
    _decide(mass_send_id, login, password_file, db, approve=True, note=None)


@mass_sends_app.command("reject")
def reject(mass_send_id: int = typer.Argument(..., help="The mass send's number"),
           login: str = typer.Option(None, "--as", help=AS_HELP),
           password_file: Path = typer.Option(None, "--password-file", help=PASSWORD_FILE_HELP),
           note: str = typer.Option(None, "--note", help="Why (kept on the record)"),
           db: str = typer.Option(None, "--db", help=DB_HELP)) -> None:
    """Stop a held mass send for good: its messages never leave."""
    _decide(mass_send_id, login, password_file, db, approve=False, note=note)


@mass_sends_app.command("resend")
def resend(mass_send_id: int = typer.Argument(..., help="The rejected mass send's number"),
           login: str = typer.Option(None, "--as", help=AS_HELP),
           password_file: Path = typer.Option(None, "--password-file", help=PASSWORD_FILE_HELP),
           db: str = typer.Option(None, "--db", help=DB_HELP)) -> None:
    """Queue a rejected send's template again for the buyers it left untold: a new held send that
    another staff supervisor must approve."""
    from tasks.mass_sends import MassSendRefused, resend_mass_send

    engine = engine_for(db)
    principal = signed_in(engine, login, password_file)
    try:
        view = resend_mass_send(engine, mass_send_id, principal=principal, now=datetime.now(UTC))
    except MassSendRefused as exc:
        fail(exc.message_ru)
    typer.echo(f"mass send {view.id} ({view.template}, {view.recipient_count} recipient(s)) queued by {principal.audit} as a resend of "
               f"{mass_send_id}: held until another staff supervisor approves it (vozvrat mass-sends approve {view.id})")


@mass_sends_app.command("untold")
def untold(event_id: int = typer.Option(None, "--event", help="Only this event's sends"),
           db: str = typer.Option(None, "--db", help=DB_HELP)) -> None:
    """Claims whose buyer a rejected mass send left untold (they still wait for the buyer)."""
    from tasks.mass_sends import buyer_not_told

    rows = buyer_not_told(engine_for(db), event_id=event_id)
    table = new_table(f"Buyer not told: {len(rows)} claim(s)", ("claim", "rejected mass send"))
    for _claim_id, number, mass_send_id in rows:
        table.add_row(number, str(mass_send_id))
    console().print(table)
