"""`vozvrat deploy ...`: the scale-out setup on Prefect's own machinery (docs/deploy.md, step by step).

pool         create the process work pool `vozvrat` or set its concurrency limit
automations  apply the crash / re-run automations (tasks/automations.py); idempotent
apply        all of the deploy host's steps: pool, `prefect deploy --all` (prefect.yaml), automations
worker       check this host's environment, then become `prefect worker start --pool vozvrat --limit N`
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import typer

from cli.app import app
from cli.errors import fail

deploy_app = typer.Typer(help="Scale-out on Prefect workers: work pool, deployments, automations, workers (docs/deploy.md).",
                         no_args_is_help=True)
app.add_typer(deploy_app, name="deploy")

CHECKOUT = Path(__file__).resolve().parent.parent


def _prefect_bin() -> str:
    # The venv's own prefect, beside this interpreter: the checkout's pinned version on every host.
    beside = Path(sys.executable).with_name("prefect")
    return str(beside) if beside.exists() else (shutil.which("prefect") or "prefect")


def _require_api_url() -> None:
    if not os.environ.get("PREFECT_API_URL", "").strip():
        fail("PREFECT_API_URL is not set: point it at the Prefect server (http://<host>:4200/api)")


def _prefect_unreachable(exc: Exception) -> None:
    fail(f"Prefect server unreachable at {os.environ.get('PREFECT_API_URL')}: {exc.__class__.__name__}: {str(exc)[:200]}")


@deploy_app.command("pool")
def pool(
    limit: int = typer.Option(None, "--limit", help="Flow runs Pending or Running in the whole pool at once; default VOZVRAT_POOL_CONCURRENCY or 8"),
    name: str = typer.Option(None, "--name", help="Work pool name; default VOZVRAT_POOL or vozvrat"),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON line"),
) -> None:
    """Create the process work pool with its concurrency limit, or set the limit (idempotent)."""
    from tasks.work_pool import POOL_CONCURRENCY, POOL_NAME, ensure_work_pool

    _require_api_url()
    limit = POOL_CONCURRENCY if limit is None else limit
    if limit < 1:
        fail(f"--limit {limit}: at least 1")
    try:
        state = ensure_work_pool(name=name or POOL_NAME, concurrency_limit=limit)
    except ValueError as exc:
        fail(str(exc))
    except Exception as exc:  # noqa: BLE001 - httpx / Prefect errors: one line, exit 2
        _prefect_unreachable(exc)
    if as_json:
        typer.echo(json.dumps({"pool": state.name, "type": state.type, "concurrency_limit": state.concurrency_limit, "outcome": state.outcome}))
    else:
        typer.echo(f"work pool {state.name} ({state.type}): concurrency limit {state.concurrency_limit} ({state.outcome})")


@deploy_app.command("automations")
def automations(
    heartbeat_grace: int = typer.Option(None, "--heartbeat-grace", help="Seconds without a heartbeat before a run is crashed; default VOZVRAT_HEARTBEAT_GRACE_S or 120"),
    pending_grace: int = typer.Option(None, "--pending-grace", help="Seconds Pending before a run is crashed; default VOZVRAT_PENDING_GRACE_S or 300"),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON line"),
) -> None:
    """Apply the automations that crash silent runs and re-run crashed ones (idempotent)."""
    from tasks.automations import HEARTBEAT_GRACE_S, PENDING_GRACE_S, apply_automations

    _require_api_url()
    try:
        outcome = apply_automations(heartbeat_grace_s=HEARTBEAT_GRACE_S if heartbeat_grace is None else heartbeat_grace,
                                    pending_grace_s=PENDING_GRACE_S if pending_grace is None else pending_grace)
    except ValueError as exc:
        fail(str(exc))
    except Exception as exc:  # noqa: BLE001
        _prefect_unreachable(exc)
    if as_json:
        typer.echo(json.dumps(outcome, ensure_ascii=False))
    else:
        for name, what in outcome.items():
            typer.echo(f"{name}: {what}")


@deploy_app.command("apply")
def apply(
    limit: int = typer.Option(None, "--pool-limit", help="The pool's concurrency limit; default VOZVRAT_POOL_CONCURRENCY or 8"),
    heartbeat_grace: int = typer.Option(None, "--heartbeat-grace", help="See `vozvrat deploy automations`"),
    pending_grace: int = typer.Option(None, "--pending-grace", help="See `vozvrat deploy automations`"),
) -> None:
    """On the deploy host: the pool, every deployment of prefect.yaml (`prefect deploy --all`), the automations."""
    _require_api_url()
    pool(limit=limit, name=None, as_json=False)
    from flows.serve import declared_deployments

    try:
        declared_deployments()  # refuses a prefect.yaml that captures this shell's environment
    except ValueError as exc:
        fail(str(exc))
    done = subprocess.run([_prefect_bin(), "--no-prompt", "deploy", "--all"], cwd=CHECKOUT, capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:] or ["no output"]
        fail(f"prefect deploy --all failed ({done.returncode}): {last[0]}")
    typer.echo(f"deployments: {', '.join(s.name for s in declared_deployments())} (prefect deploy --all)")
    automations(heartbeat_grace=heartbeat_grace, pending_grace=pending_grace, as_json=False)


@deploy_app.command("worker")
def worker(
    limit: int = typer.Option(None, "--limit", help="Runs this worker holds at once; default VOZVRAT_WORKER_LIMIT or 4"),
    name: str = typer.Option(None, "--name", help="Worker name shown in the Prefect UI; default this host's name"),
    pool_name: str = typer.Option(None, "--pool", help="Work pool; default VOZVRAT_POOL or vozvrat"),
    check: bool = typer.Option(False, "--check", help="Only check this host's environment and say what the worker would run"),
) -> None:
    """Check this host's settings (docs/deploy.md), then run `prefect worker start` with them.

    The worker passes its own environment to every run it starts: nothing comes from the deployment.
    A setting missing here stops the worker now (exit 2, one line) instead of failing every run.
    """
    from tasks.work_pool import POOL_NAME, WORKER_LIMIT, worker_environment

    limit = WORKER_LIMIT if limit is None else limit
    if limit < 1:
        fail(f"--limit {limit}: at least 1")
    env, problems = worker_environment(dict(os.environ))
    if problems:
        fail(f"this host is not ready to be a worker: {'; '.join(problems)}")
    command = [_prefect_bin(), "worker", "start", "--pool", pool_name or POOL_NAME, "--type", "process",
               "--limit", str(limit), "--name", name or f"vozvrat-{socket.gethostname()}"]
    if check:
        typer.echo(" ".join(command))
        return
    os.chdir(env["VOZVRAT_HOME"])
    os.execve(command[0], command, env)
