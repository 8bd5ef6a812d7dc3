"""One way for every `vozvrat` command to fail on bad input: one line on stderr, exit code 2.

`fail` masks the password of any URL in the message, so no error ever prints a database password.
`fail_on` tells what a command's exception means (an unreachable or unmigrated database, a bad
database URL, a usage error) and fails with one line; cli/app.py applies it to every command.
"""
from __future__ import annotations

import re
from types import ModuleType
from typing import NoReturn

import click
import typer
from sqlalchemy import exc as sa_exc

from models.db import db_trouble

_typer_click: ModuleType
try:  # typer 0.2x vendors its own click: its exceptions are not click's
    from typer._click import exceptions as _typer_click
except ImportError:  # pragma: no cover - an older typer uses click itself
    _typer_click = click.exceptions

_CLICK_ERRORS = (click.ClickException, _typer_click.ClickException)
_USAGE_ERRORS = (click.UsageError, _typer_click.UsageError)
_HELP_ASKED = (click.exceptions.NoArgsIsHelpError, _typer_click.NoArgsIsHelpError)

__all__ = ["USAGE_ERROR", "fail", "fail_database_unavailable", "fail_on", "mask_passwords"]

USAGE_ERROR = 2  # same code click uses for usage errors

# scheme://user:password@host → scheme://user:***@host (whatever the scheme: postgresql, amqp, smtp …)
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^:/?#@\s]*:)(?P<password>[^@\s/]+)@")
# libpq's keyword form: password=secret
_KEYWORD_PASSWORD = re.compile(r"(?i)\b(password\s*=\s*)('[^']*'|\S+)")


def mask_passwords(text: str) -> str:
    """Any password in a URL (or a libpq `password=` keyword) replaced by ***."""
    return _KEYWORD_PASSWORD.sub(r"\1***", _URL_PASSWORD.sub(r"\g<head>***@", text))


def fail(message: str) -> NoReturn:
    """Print `error: <message>` (one line, passwords masked) to stderr and exit with code 2; never a traceback."""
    one_line = " ".join(mask_passwords(str(message)).split())
    typer.echo(f"error: {one_line}", err=True)
    raise typer.Exit(USAGE_ERROR)


def _first_line(exc: BaseException) -> str:
    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return reason[0] if reason else exc.__class__.__name__


def hidden_prompt(text: str, *, confirm: bool = False, instead: str = "--password-file") -> str:
    """A hidden prompt on a terminal. Without one (a script, a pipe) the answer is read from stdin's
    next line (twice when confirmed), no prompt shown; nothing there, or Ctrl+C/Ctrl+D at the prompt:
    exit 2 with one line naming the option to use instead, never getpass's echo warning and «Aborted.»."""
    import sys

    if not sys.stdin.isatty():
        answers = [sys.stdin.readline().rstrip("\r\n") for _ in range(2 if confirm else 1)]
        if not answers[0]:
            fail(f"no terminal to ask at a hidden prompt and nothing on stdin: use {instead}")
        if confirm and answers[1] != answers[0]:
            fail("the two answers on stdin differ")
        return answers[0]
    try:
        return typer.prompt(text, hide_input=True, confirmation_prompt=confirm, err=True)
    except click.exceptions.Abort:
        fail(f"nothing typed at the hidden prompt (or use {instead})")


def fail_database_unavailable(exc: BaseException) -> NoReturn:
    """The database cannot be reached or opened: say why in one line (no password, no traceback), exit 2."""
    reason = _first_line(exc)
    if "unable to open database file" in reason:
        fail(f"no database here ({reason}): start the stack with `make up`, or build it with `vozvrat db upgrade`; "
             "check VOZVRAT_DATABASE_URL or --db")
    fail(f"database unavailable: {reason} ({exc.__class__.__name__}); check VOZVRAT_DATABASE_URL or --db")


def _unmigrated(exc: BaseException) -> bool:
    """A table is missing: SQLite's "no such table", PostgreSQL's undefined_table (42P01)."""
    if not isinstance(exc, sa_exc.DBAPIError):
        return False
    return "no such table" in str(exc.orig) or getattr(exc.orig, "sqlstate", None) == "42P01"


def fail_on(exc: BaseException) -> None:
    """Fail with one line when `exc` is bad input or database trouble; return (let it raise) when it is a bug."""
    if isinstance(exc, _HELP_ASKED):
        return  # `vozvrat organizers` alone: click shows the help
    if isinstance(exc, _CLICK_ERRORS):
        ctx = getattr(exc, "ctx", None)
        where = f"{ctx.command_path}: " if isinstance(exc, _USAGE_ERRORS) and ctx is not None else ""
        fail(f"{where}{exc.format_message()} (see --help)")
    if _unmigrated(exc):
        fail(f"the database is not migrated ({_first_line(exc)}): run `vozvrat db upgrade`; check VOZVRAT_DATABASE_URL or --db")
    if isinstance(exc, sa_exc.ArgumentError):
        fail(f"invalid database URL: {exc}; check VOZVRAT_DATABASE_URL or --db")
    if db_trouble(exc) == "unavailable":
        fail_database_unavailable(exc)
