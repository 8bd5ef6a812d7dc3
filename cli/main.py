"""The `vozvrat` command: one Typer app, each area of the product registers its own sub-commands."""
from __future__ import annotations

import typer
from typer.core import TyperGroup


class _Commands(TyperGroup):
    """Every command under `vozvrat`: an unreachable database is one line and exit 2, never a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except Exception as exc:
            from cli.errors import fail_database_unavailable
            from models.db import db_trouble

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


def _register() -> None:
    # Each module adds its commands to `app`; kept in one list so the CLI surface is visible here.
    from cli import policy_commands  # noqa: F401  quote, deadline
    from cli import db_commands  # noqa: F401  db upgrade, bench transitions, diagram
    from cli import bank_commands  # noqa: F401  check-bank
    from cli import organizer_commands  # noqa: F401  organizers token
    from cli import payout_commands  # noqa: F401  payouts run, export-1c, mark-paid, bank-details
    from cli import secret_commands  # noqa: F401  secrets generate, rotate


_register()
