"""The `vozvrat` command: one Typer app (cli/app.py); each area of the product registers its own sub-commands.

The list below is the whole CLI surface, in one place.
"""
from __future__ import annotations

from cli import (
    bank_commands,  # noqa: F401  check-bank
    bench_mass,  # noqa: F401  bench mass-cancel
    db_commands,  # noqa: F401  db upgrade, bench transitions / ack-latency / intake, diagram
    deploy_commands,  # noqa: F401  deploy pool, automations, apply, worker
    event_commands,  # noqa: F401  events cancel / replace / postpone
    events_commands,  # noqa: F401  events cancel / replace / follow-ups (issue 12)
    inbound_commands,  # noqa: F401  inbound list, drain, retry (claims by email)
    mail_commands,  # noqa: F401  mail hold / release / status (the outbound-mail kill switch)
    mass_send_commands,  # noqa: F401  mass-sends list / show / approve / reject
    ops_commands,  # noqa: F401  ops automations
    organizer_commands,  # noqa: F401  organizers token
    payout_commands,  # noqa: F401  payouts run, retry, export-1c, mark-paid, bank-details
    policy_commands,  # noqa: F401  quote, deadline
    regime_commands,  # noqa: F401  events postpone / history / vouchers, regimes add / end / list, vouchers show / redeem / expire
    sales_commands,  # noqa: F401  sales import, bench sales-import
    secret_commands,  # noqa: F401  secrets generate, rotate
    service_key_commands,  # noqa: F401  service-keys create, list, revoke
    user_commands,  # noqa: F401  users add, list, disable, token, revoke-token
)
from cli.app import app

__all__ = ["app"]
