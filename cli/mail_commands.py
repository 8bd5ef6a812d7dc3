"""`vozvrat mail hold / release / status`: the outbound-mail kill switch, thrown on the running stack.

The switch is a row in the database (tasks/mail_switch.py): every dispatcher on every host stops before
its next message within a second, no restart. Only a staff supervisor holds or releases it, saying who
they are with `--as LOGIN` and their password (a hidden prompt, or `--password-file`); the audit records
`staff:supervisor:<login>`. VOZVRAT_OUTBOUND_EMAIL_ENABLED=false still holds the processes started with it.
"""
from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import typer

from cli.app import app
from cli.console import console
from cli.errors import fail
from cli.mass_send_commands import AS_HELP, DB_HELP, PASSWORD_FILE_HELP, engine_for, signed_in

mail_app = typer.Typer(help="Outbound mail: hold it all at once (the kill switch), release it, see who held it.", no_args_is_help=True)
app.add_typer(mail_app, name="mail")


def _said(state) -> str:
    when = f" at {state.changed_at:%Y-%m-%d %H:%M:%S} UTC" if state.changed_at else ""
    why = f": {state.reason}" if state.reason else ""
    return f"by {state.changed_by}{when}{why}"


def _throw(held: bool, reason: str | None, login: str | None, password_file: Path | None, db: str | None) -> None:
    from tasks.mail_switch import MailSwitchRefused, clean_reason, set_mail_switch

    if held:  # bad input is refused before the password is asked
        try:
            clean_reason(reason, required=True)
        except MailSwitchRefused as exc:
            fail(f"--reason: {exc.message_ru}")
    engine = engine_for(db)
    principal = signed_in(engine, login, password_file)
    try:
        state, changed = set_mail_switch(engine, held=held, principal=principal, now=datetime.now(UTC), reason=reason)
    except MailSwitchRefused as exc:
        fail(exc.message_ru if exc.field is None else f"--{exc.field}: {exc.message_ru}")
    if held:
        typer.echo(f"outbound mail held {_said(state)}" if changed else f"outbound mail was already held {_said(state)}: nothing changed")
        if changed:
            typer.echo("every dispatcher stops before its next message (within a second); messages wait in the outbox")
    else:
        typer.echo(f"outbound mail released {_said(state)}: waiting messages go with the next dispatch" if changed
                   else "outbound mail was not held: nothing changed")


@mail_app.command("hold")
def hold(reason: str = typer.Option(None, "--reason", help="Why (kept on the record; required)"),
         login: str = typer.Option(None, "--as", help=AS_HELP),
         password_file: Path = typer.Option(None, "--password-file", help=PASSWORD_FILE_HELP),
         db: str = typer.Option(None, "--db", help=DB_HELP)) -> None:
    """Stop all outbound mail now, on every host (a staff supervisor)."""
    _throw(True, reason, login, password_file, db)


@mail_app.command("release")
def release(reason: str = typer.Option(None, "--reason", help="Why (kept on the record; optional)"),
            login: str = typer.Option(None, "--as", help=AS_HELP),
            password_file: Path = typer.Option(None, "--password-file", help=PASSWORD_FILE_HELP),
            db: str = typer.Option(None, "--db", help=DB_HELP)) -> None:
    """Let outbound mail go again (a staff supervisor)."""
    _throw(False, reason, login, password_file, db)


@mail_app.command("status")
def status(db: str = typer.Option(None, "--db", help=DB_HELP)) -> None:
    """Whether outbound mail is held, by whom, since when and why, and the latest changes."""
    from tasks.mail_switch import mail_switch_state, switch_history
    from tasks.outbox import email_enabled_now

    engine = engine_for(db)
    state = mail_switch_state(engine)
    out = console()
    if state.held:
        out.print("outbound mail: ", end="")
        out.print("held", style="bold red", end="")
        out.print(f" {_said(state)}", markup=False, highlight=False)  # the reason is printed as typed, never as markup
    else:
        out.print("outbound mail: sending" + (f" (last released {_said(state)})" if state.changed_by else ""), markup=False, highlight=False)
    if not email_enabled_now():
        out.print("this shell has VOZVRAT_OUTBOUND_EMAIL_ENABLED=false: processes started with it hold mail too", highlight=False)
    for change in switch_history(engine, limit=5):
        verb = "held" if change["held"] else "released"
        out.print(f"  {change['at']:%Y-%m-%d %H:%M:%S} UTC {verb} by {change['principal']}"
                  + (f": {change['reason']}" if change["reason"] else ""), markup=False, highlight=False)
