"""The `vozvrat` Typer app itself; each area's module adds its commands to it (cli/main.py lists them)."""
from __future__ import annotations

import typer
from typer.core import TyperGroup

from cli.errors import fail_on


class _Commands(TyperGroup):
    """Every command under `vozvrat`: bad input, an unreachable or unmigrated database and a bad database
    URL are one line on stderr and exit 2 (cli/errors.py `fail_on`), never a traceback or a box."""

    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except Exception as exc:
            fail_on(exc)
            raise

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except Exception as exc:
            fail_on(exc)
            raise


app = typer.Typer(
    name="vozvrat",
    help="vozvrat: refund claims for ticket operators.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=_Commands,
)
