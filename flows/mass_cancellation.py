"""mass-cancellation: an event cancelled or replaced, one flow run for the whole event.

Started from the API (`POST /events/{id}/cancellation`), the CLI (`vozvrat events cancel|replace`)
or a scheduled run of the deployment set up in the Prefect UI (e.g. tonight). The tickets are moved in
chunks, each a task run that is idempotent by ticket, so a run killed in the middle, or run again,
does the rest and nothing twice (tasks/mass.py). The buyers' emails wait for a second person
(`vozvrat mass-sends`); the claims that leave the batch are listed in the summary.
"""
from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from prefect import flow

from tasks import mass_steps


@flow(name="mass-cancellation", flow_run_name="{action}-event-{event_id}", log_prints=True)
def mass_cancellation(
    event_id: int,
    action: Literal["cancelled", "replaced"] = "cancelled",
    reason: str = "",
    started_by: str = "prefect-ui",
    now: datetime | None = None,
    chunk_size: int | None = None,
) -> dict:
    now = now or datetime.now(UTC)
    run = mass_steps.begin(event_id, action, reason, started_by, now)
    chunks = mass_steps.plan_chunks(run, chunk_size)
    progress = mass_steps.start_progress(event_id, len(chunks))
    for done, (first, last) in enumerate(chunks, start=1):
        mass_steps.move_chunk(run, first, last, now)
        mass_steps.report_progress(progress, done, len(chunks))
    summary = mass_steps.finish(run, now)
    mass_steps.publish_summary(summary)
    print(f"event {event_id} {action}: {summary['claims']} claims, states {summary['states']}, "
          f"mass sends waiting for a second person: {summary['mass_sends']}")
    return summary
