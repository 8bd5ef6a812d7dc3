"""The console the `vozvrat` commands print tables and rendered mail with.

On a terminal, rich fits the terminal. Into a pipe or a file (`vozvrat mass-sends list | grep held`,
a cron job's log) rich assumes 80 columns and cuts cells to «refund…» / «organi…»: the approver could
not read the template or who started the send. There, unless COLUMNS says otherwise, lines are as
wide as their content (up to WIDE), and tables fold what is still longer instead of cutting it.
"""
from __future__ import annotations

import os

from rich.console import Console
from rich.table import Table

WIDE = 240


def console(*, stderr: bool = False) -> Console:
    found = Console(stderr=stderr)
    if found.is_terminal or os.environ.get("COLUMNS"):
        return found
    return Console(stderr=stderr, width=WIDE)


def table(title: str, columns: tuple[str, ...]) -> Table:
    """A table whose cells fold rather than end in «…»: nothing in it is lost at any width."""
    out = Table(title=title)
    for col in columns:
        out.add_column(col, overflow="fold")
    return out
