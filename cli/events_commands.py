"""`vozvrat events cancel|replace|follow-ups`: an event's mass cancellation (flows/mass_cancellation.py).

`cancel` and `replace` check the event and the caller here (one line, exit 2 on any refusal), then
create a run of the `mass-cancellation` deployment: without `--wait` they print the run's Prefect UI
address; with it, a progress bar until the run ends and its summary.
"""
from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from cli.console import console
from cli.console import table as new_table
from cli.errors import fail
from cli.event_commands import events_app
from cli.mass_send_commands import AS_HELP, DB_HELP, PASSWORD_FILE_HELP, engine_for, signed_in

FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def _now() -> datetime:
    """The command's clock: the event's date is judged against it (states.event_status)."""
    return datetime.now(UTC)


def _start(action: str, event_id: int, reason: str, login: str | None, password_file: Path | None, wait: bool, chunk_size: int | None,
           db: str | None) -> None:
    from tasks.mass import MassRefused, check_start
    from tasks.mass_steps import RunNotStarted, start_run

    if chunk_size is not None and chunk_size < 1:
        fail("--chunk-size is at least 1")
    engine = engine_for(db)
    principal = signed_in(engine, login, password_file)
    try:
        check_start(engine, event_id=event_id, action=action, reason=reason, principal=principal, now=_now())
    except MassRefused as exc:
        fail(exc.message_ru)
    try:
        run_id, url = asyncio.run(start_run(event_id=event_id, action=action, reason=reason, started_by=principal.audit, chunk_size=chunk_size))
    except RunNotStarted as exc:
        fail(f"the Prefect server did not start the run ({exc}); is `make up` running and PREFECT_API_URL set?")
    typer.echo(f"mass-cancellation run {run_id} for event {event_id} ({action}), started by {principal.audit}")
    typer.echo(f"Prefect UI: {url}")
    if wait:
        _follow(engine, event_id, run_id)


def _run_state(run_id: str) -> str | None:
    from prefect import get_client

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(run_id)
    return run.state.type.value if run.state else None


def _follow(engine, event_id: int, run_id: str) -> None:
    """A progress bar from the mass record (chunks done of total) until the run is final."""
    from tasks.mass import progress

    out = console()
    state = None
    with Progress(TextColumn("[bold]event {task.fields[event]}[/bold]"), BarColumn(), MofNCompleteColumn(), TextColumn("chunks"),
                  TimeElapsedColumn(), console=out) as bar:
        task = bar.add_task("mass", total=None, event=event_id)
        while True:
            record = progress(engine, event_id)
            if record and record["chunks_total"]:
                bar.update(task, total=record["chunks_total"], completed=record["chunks_done"])
            state = _run_state(run_id)
            if state in FINAL:
                break
            time.sleep(1.0)  # polling a run another process executes
    record = progress(engine, event_id) or {}
    summary = record.get("summary") or {}
    out.print(f"run {run_id}: {state}")
    if summary:
        out.print(f"tickets {summary['tickets']}, claims {summary['claims']}, states {summary['states']}")
        for code, entry in sorted(summary["failures"].items()):
            out.print(f"  left the batch: {code} × {entry['count']}: {entry['message_ru']}")
        if summary["mass_sends"]:
            out.print(f"mass sends waiting for a second person: {summary['mass_sends']} (vozvrat mass-sends show ID)")
    if state != "COMPLETED":
        raise typer.Exit(1)


REASON_HELP = "Why (shown to buyers and kept in the audit trail)"
WAIT_HELP = "Show a progress bar until the run ends, then its summary"
CHUNK_HELP = "Tickets per chunk (default VOZVRAT_MASS_CHUNK_SIZE)"


def _mass_command(name: str, action: str, summary: str) -> None:
    """`vozvrat events <name>`: one command per action; both check and start the same way (`_start`)."""

    def command(event_id: int = typer.Argument(..., help="The event's id"),
                reason: str = typer.Option(..., "--reason", help=REASON_HELP),
                login: str = typer.Option(None, "--as", help=AS_HELP),
                password_file: Path = typer.Option(None, "--password-file", help=PASSWORD_FILE_HELP),
                wait: bool = typer.Option(False, "--wait", help=WAIT_HELP),
                chunk_size: int = typer.Option(None, "--chunk-size", help=CHUNK_HELP),
                db: str = typer.Option(None, "--db", help=DB_HELP)) -> None:
        _start(action, event_id, reason, login, password_file, wait, chunk_size, db)

    command.__name__ = command.__qualname__ = name
    command.__doc__ = summary
    events_app.command(name)(command)


_mass_command("cancel", "cancelled", "Cancel an event: a claim for every valid ticket, approved and paid back, in one flow run.")
_mass_command("replace", "replaced", "Replace an event (the programme changed): every valid ticket refunded as for a cancellation.")


@events_app.command("follow-ups")
def follow_ups(event_id: int = typer.Argument(..., help="The event's id"), db: str = typer.Option(None, "--db", help=DB_HELP)) -> None:
    """The event's claims that left the mass batch, one by one, with what happens next."""
    from tasks.mass import follow_ups as rows
    from tasks.mass import progress

    engine = engine_for(db)
    if progress(engine, event_id) is None:  # a wrong id (or an event never cancelled in a batch) is not an empty list
        fail(f"event {event_id} has no mass cancellation: no such event, or it was never cancelled with `vozvrat events cancel`")
    found = rows(engine, event_id)
    table = new_table(f"Event {event_id}: claims followed up one by one ({len(found)})", ("claim", "state", "buyer", "paid by", "why / next"))
    for r in found:
        table.add_row(r["number"], r["state"], r["buyer_email"], r["payment_method"], r["why"])
    console().print(table)
