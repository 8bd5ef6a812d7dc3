"""mass-cancellation: an event cancelled or replaced, one parent flow run for the whole event.

Started from the API (`POST /events/{id}/cancellation`), the CLI (`vozvrat events cancel|replace`)
or a scheduled run of the deployment set up in the Prefect UI (e.g. tonight). The tickets are moved in
chunks, each idempotent by ticket, so a run killed in the middle, or run again, does the rest and
nothing twice (tasks/mass.py). The buyers' emails wait for a second person (`vozvrat mass-sends`);
the claims that leave the batch are listed in the summary.

Scale-out (issue 12): a parent run from a deployment submits each chunk as a run of the
`mass-cancellation-chunk` deployment (one idempotency key per event and chunk, so a re-run of the
parent finds the same chunk runs), and any worker of the pool takes them; the parent waits for them,
updating its progress artifact. A chunk run whose worker died is crashed and scheduled again by the
automations (tasks/automations.py). Called directly (tests, a Python shell) the chunks are task runs
in this process, as before. Both flows persist their results (the summary, a chunk's counts) to the
result storage the workers share (PREFECT_LOCAL_STORAGE_PATH, docs/deploy.md), so the result of a run
is readable whichever worker ran it.
"""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from prefect import flow
from prefect.runtime import deployment, flow_run

from tasks import mass_steps


@flow(name="mass-cancellation", flow_run_name="{action}-event-{event_id}", log_prints=True, persist_result=True)
def mass_cancellation(
    event_id: int,
    action: Literal["cancelled", "replaced"] = "cancelled",
    reason: str = "",
    started_by: str = "prefect-ui",
    now: datetime | None = None,
    chunk_size: int | None = None,
    chunks_as_runs: bool | None = None,
) -> dict:
    """`chunks_as_runs`: None (default) submits the chunks as runs of the chunk deployment when this
    run itself comes from a deployment and the chunk deployment exists; False keeps them in this process."""
    now = now or datetime.now(UTC)
    run = mass_steps.begin(event_id, action, reason, started_by, now)
    chunks = mass_steps.plan_chunks(run, chunk_size)
    progress = mass_steps.start_progress(event_id, len(chunks))
    if chunks_as_runs is None:
        chunks_as_runs = bool(deployment.get_id()) and mass_steps.chunk_deployment_exists()
    if chunks_as_runs:
        run_ids = mass_steps.submit_chunk_runs(run, chunks, now)
        mass_steps.wait_for_chunk_runs(run_ids, progress)
    else:
        for done, (first, last) in enumerate(chunks, start=1):
            mass_steps.move_chunk(run, first, last, now)
            mass_steps.report_progress(progress, done, len(chunks))
    summary = mass_steps.finish(run, now)
    mass_steps.publish_summary(summary)
    print(f"event {event_id} {action}: {summary['claims']} claims, states {summary['states']}, "
          f"mass sends waiting for a second person: {summary['mass_sends']}")
    return summary


@flow(name="mass-cancellation-chunk", log_prints=True, persist_result=True)
def mass_cancellation_chunk(run: dict, first_ticket_id: int, last_ticket_id: int, now: datetime) -> dict:
    """One chunk of a mass cancellation (tasks/mass.py `move_chunk`), on whichever worker takes it.

    A chunk run scheduled again after a crash looks at the clock again: its card payouts left
    `submitted` by the dead process are asked again (same key) once they are stale by the real time.
    """
    if (flow_run.get_run_count() or 1) > 1:
        now = max(now, datetime.now(UTC))
    return mass_steps.move_chunk(run, first_ticket_id, last_ticket_id, now)
