"""The Prefect automations every vozvrat installation runs on, declared here and applied idempotently.

A worker killed with its flow processes (a machine lost, an OOM kill) cannot report anything: its
runs would stay Pending or Running for good, never Crashed, never taken by another worker. Three
automations, on the Prefect server itself, put that right:

1. **Crash runs whose heartbeat stopped.** Every flow process sends `prefect.flow-run.heartbeat`
   every PREFECT_FLOWS_HEARTBEAT_FREQUENCY seconds (30 s, Prefect's minimum; each worker's
   environment sets it, see docs/deploy.md). A run that sent one and then, within `heartbeat_grace`,
   neither another nor a state that ends or suspends it, is set Crashed.
2. **Crash runs a worker took but never started.** A run Pending for `pending_grace` (the worker
   died between taking it and starting its process: no heartbeat was ever sent) is set Crashed.
3. **Re-run crashed runs.** A crashed run of a deployment in RERUN_ON_CRASH is set Scheduled again,
   the same run: any worker takes it, and, with the result storage shared by all workers, finds its
   finished steps cached (task cache keys include the run id). A deployment's `retries` do not
   cover a crash (the process that would retry is gone). The run's steps are idempotent (claim state
   guards, payout idempotency keys, outbox dedup keys), so re-running one that did part of its work
   pays nothing twice and sends nothing twice. Only while the run's `run_count` is at most
   MAX_RUN_COUNT: a run that keeps crashing (a poison claim, a step that kills its process) stays
   Crashed; for refund-claim runs the run starter's sweep (tasks/run_actions.py) then gives the claim
   a new run, a few times at most, and reports it `stuck … left to ops` after that.

`apply_automations()` (`vozvrat deploy automations`, `vozvrat deploy apply`, `make up`) creates
them or brings them back to this declaration by name: running it again changes nothing.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

from prefect.client.schemas.objects import StateType
from prefect.events.actions import ChangeFlowRunState
from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
from prefect.events.schemas.events import ResourceSpecification

# Runs re-run after a crash. refund-claim: one claim from filing to payout. mass-cancellation: one
# event's cancellation (issue 12), resumable where it stopped; mass-cancellation-chunk: one chunk of
# it, idempotent by ticket, on any worker. Naming one that is not deployed is harmless.
RERUN_ON_CRASH = ("refund-claim", "mass-cancellation", "mass-cancellation-chunk")
# A run crashed with run_count above this is left Crashed (and, for a claim, to the sweep).
MAX_RUN_COUNT = 6

HEARTBEAT_GRACE_S = int(os.environ.get("VOZVRAT_HEARTBEAT_GRACE_S", "120"))
PENDING_GRACE_S = int(os.environ.get("VOZVRAT_PENDING_GRACE_S", "300"))

CRASH_SILENT = "vozvrat: crash runs whose heartbeat stopped"
CRASH_NEVER_STARTED = "vozvrat: crash runs a worker took but never started"
RERUN_CRASHED = "vozvrat: re-run crashed runs"

FLOW_RUNS = ResourceSpecification({"prefect.resource.id": "prefect.flow-run.*"})
# The states a live process reports when it stops heartbeating on purpose: it ended, or it suspended
# (a claim waiting for a person holds no process; its resume starts a new one that heartbeats again).
# Events are named after the state's name, not its type: list the names each type goes by.
_STOPS_HEARTBEATS = {f"prefect.flow-run.{name}" for name in
                     ("Completed", "Failed", "TimedOut", "Cancelled", "Cancelling", "Crashed", "Suspended", "Paused")}
# A worker proposes Pending under the name "Submitting"; an orchestrator under "Pending".
_PENDING = {"prefect.flow-run.Pending", "prefect.flow-run.Submitting"}
_STARTED_OR_BACK = {f"prefect.flow-run.{name}" for name in
                    ("Running", "Retrying", "heartbeat", "Scheduled", "Late", "AwaitingRetry", "Rescheduled", "Resuming")}


@dataclass(frozen=True)
class Declared:
    name: str
    automation: AutomationCore


def declared_automations(*, heartbeat_grace_s: int = HEARTBEAT_GRACE_S, pending_grace_s: int = PENDING_GRACE_S) -> list[Declared]:
    """The automations as they must be on the server. Graces in seconds; a heartbeat comes every 30 s
    at the most often, so a heartbeat grace under 45 s would crash live runs."""
    if heartbeat_grace_s < 45:
        raise ValueError(f"heartbeat grace {heartbeat_grace_s}s: at least 45 s (heartbeats come every 30 s at most)")
    if pending_grace_s < 30:
        raise ValueError(f"pending grace {pending_grace_s}s: at least 30 s (a worker takes seconds to start a run)")
    silent = AutomationCore(
        name=CRASH_SILENT,
        description=(f"A flow run that started or sent a heartbeat and then nothing for {heartbeat_grace_s}s (its process died with its "
                     "worker) is set Crashed; the re-run automation then schedules it again. Declared in tasks/automations.py."),
        trigger=EventTrigger(
            # Running too: a run killed before its first heartbeat (they come every 30 s) was left
            # Running for good (a chunk run of a mass cancellation, seen in the scale-out test).
            after={"prefect.flow-run.heartbeat", "prefect.flow-run.Running"},
            # AwaitingRetry: the flow's own retry waits in its process; were it to die then, the run is
            # Scheduled already and a worker takes it when its retry time comes.
            expect={"prefect.flow-run.heartbeat", "prefect.flow-run.AwaitingRetry", *_STOPS_HEARTBEATS},
            match=FLOW_RUNS,
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=heartbeat_grace_s),
        ),
        actions=[ChangeFlowRunState(state=StateType.CRASHED,
                                    message=f"no heartbeat for {heartbeat_grace_s}s: its worker or process is gone")],
    )
    never_started = AutomationCore(
        name=CRASH_NEVER_STARTED,
        description=(f"A flow run Pending for {pending_grace_s}s (a worker took it and died before its process ran) is set "
                     "Crashed; the re-run automation then schedules it again. Declared in tasks/automations.py."),
        trigger=EventTrigger(
            after=_PENDING,
            expect=_STARTED_OR_BACK | _STOPS_HEARTBEATS,
            match=FLOW_RUNS,
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=pending_grace_s),
        ),
        actions=[ChangeFlowRunState(state=StateType.CRASHED,
                                    message=f"pending for {pending_grace_s}s: the worker that took it is gone")],
    )
    rerun = AutomationCore(
        name=RERUN_CRASHED,
        description=(f"A crashed run of {', '.join(RERUN_ON_CRASH)} (run count at most {MAX_RUN_COUNT}) is scheduled again, "
                     "the same run, for any worker; its finished steps come from the shared result storage. "
                     "Declared in tasks/automations.py."),
        trigger=EventTrigger(
            expect={"prefect.flow-run.Crashed"},
            match=ResourceSpecification({"prefect.resource.id": "prefect.flow-run.*",
                                         "prefect.run-count": [str(n) for n in range(MAX_RUN_COUNT + 1)]}),
            match_related=ResourceSpecification({"prefect.resource.role": "deployment", "prefect.resource.name": list(RERUN_ON_CRASH)}),
            posture=Posture.Reactive,
            threshold=1,
        ),
        actions=[ChangeFlowRunState(state=StateType.SCHEDULED, name="Rescheduled",
                                    message="re-run after a crash (tasks/automations.py); finished steps come from the result cache")],
    )
    return [Declared(a.name, a) for a in (silent, never_started, rerun)]


def _comparable(automation) -> dict:
    """The parts we declare, with sets (event names) in a fixed order: a set's order differs by process."""
    def normal(value):
        if isinstance(value, dict):
            return {k: normal(v) for k, v in value.items()}
        if isinstance(value, list):
            items = [normal(v) for v in value]
            return sorted(items) if all(isinstance(v, str) for v in items) else items
        return value

    return normal(automation.model_dump(mode="json", include={"name", "description", "enabled", "trigger", "actions"},
                                        exclude={"trigger": {"id"}}))


def apply_automations(*, heartbeat_grace_s: int = HEARTBEAT_GRACE_S, pending_grace_s: int = PENDING_GRACE_S) -> dict[str, str]:
    """Create each declared automation, or bring the one of that name back to the declaration
    (extra copies of the same name are deleted). Returns name -> created | updated | unchanged."""
    from prefect import get_client

    outcome: dict[str, str] = {}
    with get_client(sync_client=True) as client:
        for declared in declared_automations(heartbeat_grace_s=heartbeat_grace_s, pending_grace_s=pending_grace_s):
            existing = client.read_automations_by_name(declared.name)
            if not existing:
                client.create_automation(declared.automation)
                outcome[declared.name] = "created"
                continue
            keep, *extra = existing
            for duplicate in extra:
                client.delete_automation(duplicate.id)
            if _comparable(keep) == _comparable(declared.automation) and not extra:
                outcome[declared.name] = "unchanged"
            else:
                client.update_automation(keep.id, declared.automation)
                outcome[declared.name] = "updated"
    return outcome
