"""The `vozvrat` command: one Typer app (cli/app.py); each area of the product registers its own sub-commands.

The list below is the whole CLI surface, in one place.
"""
from __future__ import annotations

from cli import (
    bank_commands,  # noqa: F401  check-bank
    db_commands,  # noqa: F401  db upgrade, bench transitions / ack-latency / intake, diagram
    event_commands,  # noqa: F401  events cancel / replace / postpone
    organizer_commands,  # noqa: F401  organizers token
    payout_commands,  # noqa: F401  payouts run, retry, export-1c, mark-paid, bank-details
    policy_commands,  # noqa: F401  quote, deadline
    secret_commands,  # noqa: F401  secrets generate, rotate
    user_commands,  # noqa: F401  users add, list, disable, token, revoke-token
)
from cli.app import app

__all__ = ["app"]
