"""The `vozvrat` Typer app itself; each area's module adds its commands to it (cli/main.py lists them)."""
from __future__ import annotations

import typer
from typer.core import TyperGroup

from cli.errors import fail_database_unavailable
from models.db import db_trouble


class _Commands(TyperGroup):
    """Every command under `vozvrat`: an unreachable database is one line and exit 2, never a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except Exception as exc:
            if db_trouble(exc) == "unavailable":
                fail_database_unavailable(exc)
            raise


app = typer.Typer(
    name="vozvrat",
    help="vozvrat: refund claims for ticket operators.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=_Commands,
)
