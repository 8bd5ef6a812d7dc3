"""The mass-cancellation flow's steps as Prefect tasks (flows/mass_cancellation.py puts them in order).

Each chunk is its own task run, idempotent by ticket (tasks/mass.py): a retry, a resumed run or a
run on another worker finds what is done and does the rest. A parent run from a deployment submits
each chunk as a run of the `mass-cancellation-chunk` deployment (submit_chunk_runs, one idempotency
key per event and chunk) and waits for them (wait_for_chunk_runs), so any worker of the pool takes
chunks. Nothing is cached: a re-run must look at
the database again. The progress and summary artifacts are keyed by event, so ops find the latest
of an event's runs under one name in the Prefect UI.
"""
from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from uuid import UUID

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from models.db import get_engine
from models.settings import get_settings
from tasks import event_artifacts, mass
from tasks.acquirer import YooKassaAcquirer

_IO = dict(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[5, 30])
CHANNEL_RU = {"card": "карта (эквайер)", "cash": "наличные (перевод по реквизитам)", "bso": "БСО (перевод по реквизитам)"}


def artifact_key(event_id: int) -> str:
    """The mass-cancellation run's artifacts, one key per event (tasks/event_artifacts.py)."""
    return event_artifacts.event_key("mass-cancellation-event", event_id)


@task(name="begin-mass-cancellation", **_IO)
def begin(event_id: int, action: str, reason: str, started_by: str, now: datetime) -> dict:
    """The event's status set (guarded) and its mass record opened or found."""
    run_id = flow_run.get_id()
    run = mass.begin(get_engine(), event_id=event_id, action=action, reason=reason, started_by=started_by, now=now,
                     flow_run_id=str(run_id) if run_id else None)
    return asdict(run)


@task(name="plan-chunks", **_IO)
def plan_chunks(run: dict, chunk_size: int | None = None) -> list[tuple[int, int]]:
    size = chunk_size or get_settings().mass_chunk_size
    chunks = mass.plan_chunks(get_engine(), mass_id=run["id"], event_id=run["event_id"], chunk_size=size)
    get_run_logger().info("event %s: %d chunk(s) of up to %d tickets", run["event_id"], len(chunks), size)
    return chunks


@task(name="start-progress", cache_policy=NO_CACHE)
def start_progress(event_id: int, chunks: int) -> UUID:
    """The run's progress bar (tasks/event_artifacts.py, shared with event-postponement), keyed by event."""
    return event_artifacts.start_progress(key=artifact_key(event_id), description=f"Мероприятие № {event_id}: {chunks} частей по билетам")


@task(name="report-progress", cache_policy=NO_CACHE)
def report_progress(artifact_id: UUID, done: int, total: int) -> float:
    return event_artifacts.report_progress(artifact_id, done, total)


@task(name="move-chunk", task_run_name="move-chunk-{first_ticket_id}-{last_ticket_id}", **_IO)
def move_chunk(run: dict, first_ticket_id: int, last_ticket_id: int, now: datetime, reason: str | None = None) -> dict:
    """One chunk: claims filed, approved, payouts opened and card refunds sent (tasks/mass.py)."""
    settings = get_settings()
    result = mass.move_chunk(
        get_engine(), YooKassaAcquirer.from_settings(), run=mass.MassRun(**run), first_ticket_id=first_ticket_id,
        last_ticket_id=last_ticket_id, now=now, reason=reason, concurrency=settings.acquirer_concurrency,
    )
    get_run_logger().info("chunk %s-%s: %s", first_ticket_id, last_ticket_id,
                          "done by an earlier run" if result.skipped else f"{result.filed} filed, states {result.states}")
    return result.to_json()


CHUNK_DEPLOYMENT = "mass-cancellation-chunk/mass-cancellation-chunk"
CHUNK_POLL_S = 3.0
# A chunk run left Crashed this long was not scheduled again by the automations (none applied?): the
# parent schedules it again itself. The automations act within seconds of the crash.
CRASHED_GRACE_S = 180.0
_FINAL_NOT_DONE = {"FAILED", "CANCELLED", "CRASHED"}


def chunk_key(run: dict, first_ticket_id: int, last_ticket_id: int) -> str:
    """One chunk run per mass record (one per event) and ticket range: a re-run of the parent finds it."""
    return f"mass-cancellation-{run['id']}-chunk-{first_ticket_id}-{last_ticket_id}"


def chunk_deployment_exists() -> bool:
    from prefect import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_deployment_by_name(CHUNK_DEPLOYMENT)
        except ObjectNotFound:
            return False
    return True


def _schedule_again(client, run_id: UUID, why: str) -> None:
    from prefect.states import Scheduled

    client.set_flow_run_state(run_id, Scheduled(name="Rescheduled", message=why), force=True)


def submit_chunk_runs(run: dict, chunks: list[tuple[int, int]], now: datetime) -> list[UUID]:
    """Each chunk as a run of the chunk deployment, for any worker of the pool (timeout=0: not waited
    for here). The same key on a re-run returns the run made before; one that failed, was cancelled
    or crashed is scheduled again (the same run: idempotent by ticket)."""
    from prefect import get_client
    from prefect.deployments import run_deployment

    ids: list[UUID] = []
    for first, last in chunks:
        chunk_run = run_deployment(
            CHUNK_DEPLOYMENT, parameters={"run": run, "first_ticket_id": first, "last_ticket_id": last, "now": now.isoformat()},
            timeout=0, idempotency_key=chunk_key(run, first, last), flow_run_name=f"event-{run['event_id']}-chunk-{first}-{last}",
            tags=["mass", f"event-{run['event_id']}"],
        )
        ids.append(chunk_run.id)
        if chunk_run.state is not None and chunk_run.state.type.value in _FINAL_NOT_DONE:
            with get_client(sync_client=True) as client:
                _schedule_again(client, chunk_run.id, f"parent run of event {run['event_id']} resumed")
    get_run_logger().info("event %s: %d chunk run(s) submitted to the pool", run["event_id"], len(ids))
    return ids


def wait_for_chunk_runs(run_ids: list[UUID], progress: UUID, *, poll_s: float = CHUNK_POLL_S,
                        crashed_grace_s: float = CRASHED_GRACE_S) -> None:
    """Until every chunk run is Completed, the progress artifact moved as they finish. A crashed one
    waits for the re-run automation (or, past `crashed_grace_s`, is scheduled again from here); a
    failed or cancelled one fails this run (run it again: the chunk is scheduled again)."""
    import time

    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from tasks.automations import MAX_RUN_COUNT

    logger = get_run_logger()
    total, reported = len(run_ids), -1
    crashed_since: dict[UUID, float] = {}
    while True:
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=run_ids)), limit=len(run_ids) + 1)
            done = sum(1 for r in runs if r.state is not None and r.state.type.value == "COMPLETED")
            if done != reported:
                report_progress(progress, done, total)
                reported = done
            if done == total:
                return
            lost = [r for r in runs if r.state is not None and r.state.type.value in {"FAILED", "CANCELLED"}]
            if lost:
                raise RuntimeError(f"chunk run(s) {', '.join(r.name for r in lost)} ended {lost[0].state.type.value}; "
                                   "run the mass cancellation again to do the rest")
            for r in runs:
                if r.state is None or r.state.type.value != "CRASHED":
                    crashed_since.pop(r.id, None)
                    continue
                if r.run_count >= MAX_RUN_COUNT:
                    raise RuntimeError(f"chunk run {r.name} crashed {r.run_count} times; see its logs")
                first_seen = crashed_since.setdefault(r.id, time.monotonic())
                if time.monotonic() - first_seen >= crashed_grace_s:
                    logger.warning("chunk run %s still Crashed after %.0f s: scheduled again from the parent", r.name, crashed_grace_s)
                    _schedule_again(client, r.id, "crashed, not re-run by an automation")
                    crashed_since.pop(r.id)
        time.sleep(poll_s)


@task(name="finish-mass-cancellation", **_IO)
def finish(run: dict, now: datetime) -> dict:
    export_dir = Path(get_settings().data_dir) / "exports"
    return mass.finish(get_engine(), run=mass.MassRun(**run), now=now, export_dir=export_dir).to_json()


@task(name="publish-summary", cache_policy=NO_CACHE)
def publish_summary(summary: dict) -> None:
    """A table for the Prefect UI: tickets, claims, amounts by payment channel, failures with reasons."""
    event_id = summary["event_id"]
    rows: list[dict] = [
        {"что": "билетов", "значение": summary["tickets"]},
        {"что": "заявок", "значение": summary["claims"]},
    ]
    rows += [{"что": f"заявок «{event_artifacts.state_ru(state)}»", "значение": n} for state, n in sorted(summary["states"].items())]
    rows += [{"что": f"к возврату: {CHANNEL_RU.get(ch, ch)}", "значение": event_artifacts.money_ru(k)} for ch, k in sorted(summary["amounts"].items())]
    refunds = summary["refunds"]
    rows.append({"что": "возвраты на карты", "значение": f"запрошено {refunds.get('asked', 0)}, успешно {refunds.get('succeeded', 0)}, "
                                                     f"не прошло {refunds.get('failed', 0)}"})
    for code, entry in sorted(summary["failures"].items()):
        rows.append({"что": f"выпали из пакета: {code} ({entry['count']})",
                     "значение": f"{entry['message_ru']} Примеры: {', '.join(entry['examples'][:5])}"})
    if summary["mass_sends"]:
        rows.append({"что": "массовые рассылки ждут второго сотрудника",
                     "значение": ", ".join(f"№ {i}" for i in summary["mass_sends"]) + " (vozvrat mass-sends show ID)"})
    if summary.get("export_batch_file"):
        rows.append({"что": "выгрузка 1С", "значение": f"{summary['exported']} п/п: {summary['export_batch_file']}"})
    key = artifact_key(event_id)
    event_artifacts.publish_table(rows, key=key, description=f"Мероприятие № {event_id}: {event_artifacts.action_ru(summary['action'])}, {summary['reason']}")
    event_artifacts.publish_follow_ups(summary["failures"], key=key, hint=f"Список по одной: `vozvrat events follow-ups {event_id}`")


DEPLOYMENT = "mass-cancellation/mass-cancellation"
START_TIMEOUT_S = 20.0


class RunNotStarted(RuntimeError):
    """The Prefect server did not create the run (down, or the deployment is not served)."""


async def start_run(*, event_id: int, action: str, reason: str, started_by: str, chunk_size: int | None = None) -> tuple[str, str]:
    """Create a run of the mass-cancellation deployment now; returns (flow run id, its Prefect UI URL).

    One call to the Prefect server (not one per ticket), bounded by START_TIMEOUT_S. The flow itself
    is idempotent by ticket, so a second run for the same event does the rest and nothing twice.
    """
    import asyncio

    from prefect.client.orchestration import get_client

    parameters: dict = {"event_id": event_id, "action": action, "reason": reason, "started_by": started_by}
    if chunk_size:
        parameters["chunk_size"] = chunk_size

    async def create() -> str:
        async with get_client() as client:
            deployment = await client.read_deployment_by_name(DEPLOYMENT)
            run = await client.create_flow_run_from_deployment(deployment.id, parameters=parameters, tags=["mass", f"event-{event_id}"])
            return str(run.id)

    try:
        run_id = await asyncio.wait_for(create(), START_TIMEOUT_S)
    except Exception as exc:  # noqa: BLE001 - any failure to reach Prefect is one answer
        raise RunNotStarted(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
    return run_id, f"{get_settings().prefect_ui_url.rstrip('/')}/runs/flow-run/{run_id}"
