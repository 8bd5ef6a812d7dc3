"""`vozvrat events …`: an event cancelled, replaced or postponed (issues 12 and 13 add their commands to `events_app`)."""
from __future__ import annotations

import typer

from cli.app import app

events_app = typer.Typer(help="Events: cancel, replace, postpone (the mass paths).", no_args_is_help=True)
app.add_typer(events_app, name="events")
