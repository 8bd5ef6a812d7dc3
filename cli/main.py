"""The `vozvrat` command: one Typer app (cli/app.py); each area of the product registers its own sub-commands.

The list below is the whole CLI surface, in one place.
"""
from __future__ import annotations

from cli import (
    bank_commands,  # noqa: F401  check-bank
    bench_mass,  # noqa: F401  bench mass-cancel
    db_commands,  # noqa: F401  db upgrade, bench transitions / ack-latency / intake, diagram
    event_commands,  # noqa: F401  events cancel / replace / postpone
    events_commands,  # noqa: F401  events cancel / replace / follow-ups (issue 12)
    mass_send_commands,  # noqa: F401  mass-sends list / show / approve / reject
    organizer_commands,  # noqa: F401  organizers token
    payout_commands,  # noqa: F401  payouts run, retry, export-1c, mark-paid, bank-details
    policy_commands,  # noqa: F401  quote, deadline
    secret_commands,  # noqa: F401  secrets generate, rotate
)
from cli.app import app

__all__ = ["app"]
