"""Scale-out on Prefect's own machinery, as docs/deploy.md sets it up, with one worker killed mid-way.

Everything is real and started here: a Prefect server on its own PostgreSQL database, the claims
database on PostgreSQL, `vozvrat deploy apply` (pool, `prefect deploy --all`, automations), two
workers started with `vozvrat deploy worker` sharing one result storage, the run starter, the SMTP
sink and the acquirer stand-in. The workload is one cancelled event of a few thousand tickets
(tests/flows/scale_out_workload.py): its mass-cancellation run submits each chunk as a run of the
mass-cancellation-chunk deployment, and both workers take them. One worker is killed with its flow
processes while it runs a chunk; the heartbeat automation marks its runs Crashed, the re-run
automation schedules them again, the other worker finishes them. Every ticket has one claim, every
card ticket is refunded once (the acquirer's ledger), every email is delivered once (the SMTP sink),
the held mass sends approved by a second supervisor.

Regression (issue 12): a killed worker left 20 runs Pending or Running for good and 14 approved
claims with no payout; one worker took a whole burst while the other idled; prefect.yaml froze the
deployer's shell environment (an unset database URL became "" in every run).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from email import policy
from email.parser import BytesParser
from pathlib import Path

import httpx
import pytest

from cli.stack import Stack, free_port
from models.db import make_engine
from tests.conftest import _create_pg_database, _drop_pg_database
from tests.flows.conftest import wait_for
from tests.flows.scale_out_workload import APPROVER, PASSWORD, STARTER, mass_cancellation_workload

CHECKOUT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
# One cancelled event of a few thousand tickets, in chunks any worker takes; VOZVRAT_SCALE_OUT_TICKETS
# and VOZVRAT_SCALE_OUT_CHUNK change them.
TICKETS = int(os.environ.get("VOZVRAT_SCALE_OUT_TICKETS", "3000"))
CHUNK = int(os.environ.get("VOZVRAT_SCALE_OUT_CHUNK", "250"))
WORKER_LIMIT = 3
POOL_LIMIT = 6
# The automations' graces, short for the test (production: 120 s and 300 s); heartbeats every 30 s.
HEARTBEAT_GRACE_S = 60
PENDING_GRACE_S = 60

pytestmark = pytest.mark.scale_out


# --- processes --------------------------------------------------------------------------------------

def _spawn(root: Path, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen:
    log = open(root / f"{name}.log", "ab")  # noqa: SIM115 - lives as long as the process
    return subprocess.Popen(args, env=env, cwd=CHECKOUT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _children() -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    return out


def process_tree(pid: int) -> list[int]:
    """The process and all its descendants (its flow runs' processes, theirs too)."""
    children, found, todo = _children(), [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(children.get(p, []))
    return found


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is not None:
        return
    tree = process_tree(proc.pid)
    for p in tree:
        try:
            os.kill(p, signal.SIGTERM)
        except ProcessLookupError:
            pass
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        pass
    for p in tree:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=10)


def _vozvrat(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "vozvrat"), *args], env=env, cwd=CHECKOUT, capture_output=True, text=True, timeout=300)


# --- the Prefect server on PostgreSQL -----------------------------------------------------------------

@pytest.fixture(scope="module")
def prefect_on_postgres(tmp_path_factory, postgres_available):
    """docs/deploy.md step 1: `prefect server start` with PREFECT_API_DATABASE_CONNECTION_URL=postgresql+asyncpg://…"""
    root = tmp_path_factory.mktemp("prefect-server")
    name, url = _create_pg_database()
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(root), "PREFECT_API_DATABASE_CONNECTION_URL": url.replace("+psycopg", "+asyncpg"),
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_UI_ENABLED": "false", "PREFECT_LOGGING_LEVEL": "WARNING"}
    env.pop("PREFECT_API_URL", None)
    server = _spawn(root, "prefect-server", [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)], env)
    api_url = f"http://127.0.0.1:{port}/api"
    try:
        def healthy() -> bool:
            assert server.poll() is None, (root / "prefect-server.log").read_text()[-3000:]
            try:
                return httpx.get(f"{api_url}/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for("the Prefect server on PostgreSQL", healthy, timeout=180, interval=0.5)
        yield {"api_url": api_url, "root": root}
    finally:
        _stop(server)
        _drop_pg_database(name)


@pytest.fixture
def prefect_client(prefect_on_postgres):
    from prefect import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: prefect_on_postgres["api_url"]}):
        with get_client(sync_client=True) as client:
            yield client


def test_the_automations_are_applied_once_and_again_change_nothing(prefect_on_postgres, prefect_client):
    env = {**os.environ, "PREFECT_API_URL": prefect_on_postgres["api_url"]}
    first = _vozvrat(env, "deploy", "automations", "--json")
    assert first.returncode == 0, first.stderr
    assert set(json.loads(first.stdout).values()) <= {"created", "unchanged"}
    again = _vozvrat(env, "deploy", "automations", "--json")
    assert again.returncode == 0, again.stderr
    assert set(json.loads(again.stdout).values()) == {"unchanged"}

    from tasks.automations import CRASH_NEVER_STARTED, CRASH_SILENT, RERUN_CRASHED

    silent, = prefect_client.read_automations_by_name(CRASH_SILENT)
    assert silent.trigger.posture == "Proactive" and silent.trigger.after == {"prefect.flow-run.heartbeat", "prefect.flow-run.Running"}
    assert "prefect.flow-run.Suspended" in silent.trigger.expect  # a claim waiting for a person holds no process
    assert silent.actions[0].type == "change-flow-run-state" and silent.actions[0].state == "CRASHED"
    rerun, = prefect_client.read_automations_by_name(RERUN_CRASHED)
    assert rerun.actions[0].state == "SCHEDULED" and "refund-claim" in rerun.trigger.match_related["prefect.resource.name"]
    assert len(prefect_client.read_automations_by_name(CRASH_NEVER_STARTED)) == 1

    changed = _vozvrat(env, "deploy", "automations", "--heartbeat-grace", "90", "--json")
    assert json.loads(changed.stdout)[CRASH_SILENT] == "updated"
    assert prefect_client.read_automations_by_name(CRASH_SILENT)[0].trigger.within.total_seconds() == 90

    too_short = _vozvrat(env, "deploy", "automations", "--heartbeat-grace", "20")
    assert too_short.returncode == 2 and too_short.stderr.count("\n") == 1 and "45" in too_short.stderr


def test_the_pool_is_created_once_and_its_concurrency_limit_set(prefect_on_postgres, prefect_client):
    env = {**os.environ, "PREFECT_API_URL": prefect_on_postgres["api_url"], "VOZVRAT_POOL": "vozvrat-pool-test"}
    outcomes = [json.loads(_vozvrat(env, "deploy", "pool", "--limit", str(n), "--json").stdout)["outcome"] for n in (4, 4, 9)]
    assert outcomes == ["created", "unchanged", "updated"]
    pool = prefect_client.read_work_pool("vozvrat-pool-test")
    assert (pool.type, pool.concurrency_limit) == ("process", 9)
    assert "command" in pool.base_job_template["variables"]["properties"]  # the process worker's own template
    bad = _vozvrat(env, "deploy", "pool", "--limit", "0")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1
    prefect_client.delete_work_pool("vozvrat-pool-test")


def _states(client, run_id) -> list[str]:
    return [s.name for s in sorted(client.read_flow_run_states(run_id), key=lambda s: s.timestamp)]


def test_a_run_silent_after_a_heartbeat_and_one_a_dead_worker_took_are_crashed_and_scheduled_again(prefect_on_postgres, prefect_client):
    """The automations on a real server, with the events a worker and a flow process send, and then silence."""
    from uuid import uuid4

    from prefect.states import Pending, Running

    env = {**os.environ, "PREFECT_API_URL": prefect_on_postgres["api_url"]}
    applied = _vozvrat(env, "deploy", "automations", "--heartbeat-grace", "45", "--pending-grace", "30")
    assert applied.returncode == 0, applied.stderr
    flow_id = prefect_client.create_flow_from_name("refund-claim")
    deployment = prefect_client.create_deployment(flow_id=flow_id, name="refund-claim", entrypoint="flows/refund_claim.py:refund_claim")
    silent = prefect_client.create_flow_run_from_deployment(deployment, name="VZ-SILENT", idempotency_key=str(uuid4()))
    never_started = prefect_client.create_flow_run_from_deployment(deployment, name="VZ-TAKEN", idempotency_key=str(uuid4()))

    # A worker took this one ("Submitting") and died before its process ran.
    prefect_client.set_flow_run_state(never_started.id, Pending(name="Submitting"), force=True)
    # This one ran and sent one heartbeat, as the flow engine does; then its process was killed.
    prefect_client.set_flow_run_state(silent.id, Running(), force=True)
    beat = httpx.post(f"{prefect_on_postgres['api_url']}/events", timeout=10, json=[{
        "id": str(uuid4()), "occurred": datetime.now(UTC).isoformat(), "event": "prefect.flow-run.heartbeat",
        "resource": {"prefect.resource.id": f"prefect.flow-run.{silent.id}", "prefect.resource.name": "VZ-SILENT"},
        "related": [{"prefect.resource.id": f"prefect.deployment.{deployment}", "prefect.resource.role": "deployment",
                     "prefect.resource.name": "refund-claim"}], "payload": {}}])
    assert beat.status_code == 204, beat.text

    for run in (never_started, silent):
        wait_for(f"{run.name} crashed and scheduled again", lambda: "Rescheduled" in _states(prefect_client, run.id), timeout=150, interval=1)
        history = _states(prefect_client, run.id)
        assert history.index("Crashed") < history.index("Rescheduled"), history
        assert prefect_client.read_flow_run(run.id).state.type.value == "SCHEDULED"  # for any worker to take: the same run
    assert "pending for 30s" in next(s.message for s in prefect_client.read_flow_run_states(never_started.id) if s.name == "Crashed")
    assert "no heartbeat for 45s" in next(s.message for s in prefect_client.read_flow_run_states(silent.id) if s.name == "Crashed")
    for run in (never_started, silent):
        prefect_client.delete_flow_run(run.id)
    prefect_client.delete_deployment(deployment)


def test_a_worker_missing_a_setting_does_not_start(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VOZVRAT_", "PREFECT_"))}
    env.update(VOZVRAT_HOME=str(CHECKOUT), VOZVRAT_DATABASE_URL="", PREFECT_API_URL="http://127.0.0.1:1/api",
               VOZVRAT_SECRET_KEY="k", PREFECT_LOCAL_STORAGE_PATH=str(CHECKOUT / "var" / "results"))
    r = _vozvrat(env, "deploy", "worker", "--check")
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "VOZVRAT_DATABASE_URL is not set" in r.stderr
    assert "PREFECT_LOCAL_STORAGE_PATH" in r.stderr


# --- two workers, one killed ----------------------------------------------------------------------------

def _deployments(client) -> dict:
    return {d.name: d for d in client.read_deployments()}


def _runs(client, deployment_id) -> list:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    runs, offset = [], 0
    while True:
        page = client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])), limit=200, offset=offset)
        runs += page
        if len(page) < 200:
            return runs
        offset += 200


def _pid(run) -> int | None:
    """The flow process a worker started for the run ("pid", or "host:pid" in some Prefect versions)."""
    return int(str(run.infrastructure_pid).rsplit(":", 1)[-1]) if run.infrastructure_pid else None


def _mass_runs(client, deployments) -> list:
    return [r for name in ("mass-cancellation", "mass-cancellation-chunk") for r in _runs(client, deployments[name].id)]


def test_two_workers_share_a_mass_cancellation_and_a_killed_workers_runs_are_crashed_and_run_again(
        prefect_on_postgres, prefect_client, pg_url, tmp_path):
    started = time.monotonic()
    root = tmp_path
    api_url = prefect_on_postgres["api_url"]
    shared_results = root / "shared-results"  # a shared mount on real hosts (NFS); never the checkout
    shared_results.mkdir()
    from cryptography.fernet import Fernet

    base = {k: v for k, v in os.environ.items() if not k.startswith(("VOZVRAT_", "PREFECT_"))}
    base.update(PREFECT_API_URL=api_url, PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_LOGGING_LEVEL="INFO")

    # The SMTP sink and the acquirer stand-in (the operator's relay and YooKassa on real hosts).
    services = Stack.on_free_ports(root / "services")
    services.root.mkdir()
    services.start_smtp_sink()
    services.start_acquirer()
    processes: dict[str, subprocess.Popen] = {}
    try:
        # Step 2 (docs/deploy.md): the claims database.
        claims_env = {**base, "VOZVRAT_DATABASE_URL": pg_url, "VOZVRAT_SECRET_KEY": Fernet.generate_key().decode()}
        upgraded = _vozvrat(claims_env, "db", "upgrade")
        assert upgraded.returncode == 0, upgraded.stderr

        # Step 3: from the deploy host, with nothing but PREFECT_API_URL: no database URL to capture.
        deployer = {**base, "PREFECT_HOME": str(root / "deployer")}
        applied = _vozvrat(deployer, "deploy", "apply", "--pool-limit", str(POOL_LIMIT),
                           "--heartbeat-grace", str(HEARTBEAT_GRACE_S), "--pending-grace", str(PENDING_GRACE_S))
        assert applied.returncode == 0, applied.stderr + applied.stdout
        deployments = _deployments(prefect_client)
        assert {"mass-cancellation", "mass-cancellation-chunk", "outbox-dispatch", "payout-run"} <= set(deployments)
        for d in deployments.values():
            assert d.work_pool_name == "vozvrat"
            assert "env" not in (d.job_variables or {}), d.job_variables  # nothing captured from the deployer
            assert d.pull_steps == [{"prefect.deployments.steps.set_working_directory": {"directory": "{{ $VOZVRAT_HOME }}"}}]
        assert prefect_client.read_work_pool("vozvrat").concurrency_limit == POOL_LIMIT

        # Step 4: two workers, each with its own environment, one shared result storage.
        worker_env = {**claims_env, "VOZVRAT_HOME": str(CHECKOUT), "PREFECT_LOCAL_STORAGE_PATH": str(shared_results),
                      "VOZVRAT_SMTP_HOST": "127.0.0.1", "VOZVRAT_SMTP_PORT": str(services.smtp_port),
                      "VOZVRAT_ACQUIRER_API_URL": services.acquirer_api_url, "PREFECT_WORKER_QUERY_SECONDS": "2"}
        for name in ("worker-a", "worker-b"):
            env = {**worker_env, "PREFECT_HOME": str(root / name)}
            processes[name] = _spawn(root, name, [str(BIN / "vozvrat"), "deploy", "worker", "--limit", str(WORKER_LIMIT), "--name", name], env)
        # Step 5: the run starter. It starts an outbox-dispatch run when mail is due, one per interval
        # (200 emails a run): every 10 s for an event's mass mail (docs/deploy.md, "Mass cancellations").
        processes["run-starter"] = _spawn(root, "run-starter", [sys.executable, "-m", "flows.run_starter"],
                                          {**claims_env, "VOZVRAT_STARTER_CONCURRENCY": "4", "VOZVRAT_OUTBOX_DISPATCH_INTERVAL_S": "10"})
        wait_for("both workers polling", lambda: {w.name for w in prefect_client.read_workers_for_work_pool("vozvrat")} >= {"worker-a", "worker-b"},
                 timeout=120, interval=1)

        engine = make_engine(pg_url)
        workload = mass_cancellation_workload(engine, services.register_payments, TICKETS, datetime.now(UTC))
        seeded = time.monotonic()

        # Step 6: a staff supervisor cancels the event (one mass-cancellation run; its chunks are runs any worker takes).
        passwords = root / "password"
        passwords.write_text(PASSWORD + "\n", encoding="utf-8")
        cancel = _vozvrat(claims_env, "events", "cancel", str(workload.event_id), "--reason", "Стадион закрыт по предписанию",
                          "--as", STARTER, "--password-file", str(passwords), "--chunk-size", str(CHUNK))
        assert cancel.returncode == 0, cancel.stderr + cancel.stdout

        # Kill worker A with its flow processes while it runs a chunk and chunks are being moved.
        worker_a = processes["worker-a"]

        def a_runs_a_chunk() -> bool:
            pids = set(process_tree(worker_a.pid))
            busy = [r for r in _runs(prefect_client, deployments["mass-cancellation-chunk"].id)
                    if _pid(r) in pids and r.state and r.state.type.value == "RUNNING"]
            return bool(busy) and bool(workload.claims(engine))

        wait_for("worker A running a chunk", a_runs_a_chunk, timeout=300, interval=0.5)
        killed_pids = process_tree(worker_a.pid)
        for p in killed_pids:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        worker_a.wait(timeout=10)
        killed_at = time.monotonic()
        held = [r for r in _mass_runs(prefect_client, deployments)
                if _pid(r) in killed_pids and r.state and r.state.type.value in ("PENDING", "RUNNING")]
        at_kill = workload.progress(engine)
        assert not workload.finished(engine)

        # Step 7: a second supervisor approves the held mass sends once the run has gathered them.
        def approved_when_gathered() -> bool:
            if workload.mass_status(engine) == "done":
                for mass_send_id in workload.held_mass_sends(engine):
                    ok = _vozvrat(claims_env, "mass-sends", "approve", str(mass_send_id), "--as", APPROVER, "--password-file", str(passwords))
                    assert ok.returncode == 0, ok.stderr + ok.stdout
                return workload.finished(engine)
            return False

        try:
            wait_for("every ticket refunded or asked for bank details, every email sent", approved_when_gathered, timeout=900, interval=2)
        except AssertionError as exc:
            states = Counter(f"{r.name.split('-chunk-')[0]}: {r.state.type.value}/{r.state.name}" for r in _mass_runs(prefect_client, deployments))
            raise AssertionError(f"{exc}; claims {workload.progress(engine)}, unsent {workload.unsent(engine)}, "
                                 f"mass {workload.mass_status(engine)}; runs: {dict(states)}; logs in {root}") from None
        finished = time.monotonic()

        # The killed worker's runs: marked Crashed by the heartbeat automation, re-run (the same run) to completion.
        assert held, "worker A held no mass-cancellation run when it was killed"
        assert len(held) <= WORKER_LIMIT
        for run in held:
            history = [s.type.value for s in prefect_client.read_flow_run_states(run.id)]
            assert "CRASHED" in history, (run.name, history)
            wait_for(f"{run.name} completed after its re-run", lambda: prefect_client.read_flow_run(run.id).state.type.value == "COMPLETED",
                     timeout=120, interval=1)
        runs = _mass_runs(prefect_client, deployments)
        chunks = -(-TICKETS // CHUNK)
        assert Counter(r.state.type.value for r in runs) == {"COMPLETED": chunks + 1}  # one parent, one run per chunk: none twice

        # Every ticket has exactly one claim; every card ticket refunded once at the acquirer, nothing twice.
        assert workload.claims(engine) == dict.fromkeys(workload.tickets, 1)
        payouts = workload.payouts(engine)
        assert payouts["claims_with_more"] == 0 and payouts["claims_with_payout"] >= workload.card_tickets
        ledger = httpx.get(f"http://127.0.0.1:{services.acquirer_port}/_standin/ledger", timeout=30).json()
        refunds = Counter(r["payment_id"] for r in ledger["refunds"] if r["status"] == "succeeded")
        assert refunds == Counter(list(workload.payment_ids))  # each card payment refunded once
        from sqlalchemy import func, select

        from models.tables import Claim

        with engine.connect() as conn:
            paid = conn.execute(select(func.sum(func.coalesce(Claim.approved_amount, Claim.amount))).where(
                Claim.event_id == workload.event_id, Claim.state == "paid")).scalar_one()
        assert sum(int(r["amount"]["value"].replace(".", "")) for r in ledger["refunds"] if r["status"] == "succeeded") == paid

        # Every email delivered once: the sink holds exactly the sent outbox rows, each Message-ID once.
        sent = workload.sent(engine)
        assert {s for _, s in sent} == {"sent"}
        parser = BytesParser(policy=policy.compat32)
        received = Counter(parser.parsebytes(p.read_bytes(), headersonly=True)["Message-ID"] for p in services.mail_dir.glob("*.eml"))
        assert received == Counter(m for m, _ in sent)
        # At least one letter per claim: a held approval is replaced by «Деньги отправлены» or the request for
        # bank details (states.lifecycle.SUPERSEDES); a claim that left the batch gets both.
        assert len(sent) >= TICKETS

        # The shared result storage holds the runs' results; the checkout holds none.
        assert any(shared_results.iterdir())
        engine.dispose()

        print(json.dumps({"workload": workload.name, "tickets": TICKETS, "chunk_size": CHUNK, "chunk_runs": chunks, "workers": 2,
                          "worker_limit": WORKER_LIMIT, "pool_limit": POOL_LIMIT, "killed_runs": len(held),
                          "killed": sorted(r.name for r in held), "claims_at_kill": at_kill, "emails": len(sent),
                          "setup_s": round(seeded - started, 1), "kill_to_done_s": round(finished - killed_at, 1),
                          "workload_s": round(finished - seeded, 1), "total_s": round(time.monotonic() - started, 1),
                          "load_avg": [round(x, 2) for x in os.getloadavg()]}, ensure_ascii=False))
    finally:
        for proc in processes.values():
            _stop(proc)
        services.stop()
