"""`vozvrat ops automations`: create or update the Prefect automations ops rely on (tasks/escalation_alert.py).

`make up` runs it once the deployments are served; elsewhere run it after `prefect deploy --all`
(it needs the `escalation-alert` deployment). Safe to repeat: an automation of the same name is updated.
"""
from __future__ import annotations

import typer

from cli.app import app
from cli.errors import fail

ops_app = typer.Typer(help="Operations: what ops see and get in the Prefect UI.", no_args_is_help=True)
app.add_typer(ops_app, name="ops")


@ops_app.command("automations")
def automations() -> None:
    """Create or update «vozvrat: escalation → supervisor» (each vozvrat.claim.escalated runs escalation-alert)."""
    import httpx
    from prefect.exceptions import ObjectNotFound

    from tasks.escalation_alert import ALERT_DEPLOYMENT, ensure_automations

    try:
        for line in ensure_automations():
            typer.echo(line)
    except ObjectNotFound:
        fail(f"deployment {ALERT_DEPLOYMENT} not found on the Prefect server: serve or deploy the flows first")
    except httpx.HTTPError as exc:
        fail(f"the Prefect server (PREFECT_API_URL) did not answer: {exc.__class__.__name__}: {exc}")
