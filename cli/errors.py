"""One way for every `vozvrat` command to fail on bad input: one line on stderr, exit code 2."""
from __future__ import annotations

from typing import NoReturn

import typer

__all__ = ["USAGE_ERROR", "fail", "fail_database_unavailable"]

USAGE_ERROR = 2  # same code click uses for usage errors


def fail(message: str) -> NoReturn:
    """Print `error: <message>` (one line) to stderr and exit with code 2; never a traceback."""
    one_line = " ".join(str(message).split())
    typer.echo(f"error: {one_line}", err=True)
    raise typer.Exit(USAGE_ERROR)


def fail_database_unavailable(exc: BaseException) -> NoReturn:
    """The database cannot be reached or opened: say why in one line (no password, no traceback), exit 2."""
    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    fail(f"database unavailable: {reason[0] if reason else exc.__class__.__name__} "
         f"({exc.__class__.__name__}); check VOZVRAT_DATABASE_URL or --db")
