"""mass-cancellation on the real embedded stack (Prefect server, served deployments, API, SMTP sink,
acquirer stand-in): started from the API, the CLI and a scheduled run; a few hundred tickets of mixed
payment channels, a declined card, cash and BSO without bank details, a scanned ticket; the mass mail
waits for a second staff supervisor; a run that dies after a chunk resumes; a re-run creates nothing twice."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from models.db import get_engine
from models.payouts import Payout
from models.tables import Claim, ClaimTransition, MassSend, OutboxMessage
from tasks.accounts import create_user, issue_api_token
from tests import factories as f
from tests.flows.conftest import mail_in, run_state, wait_for

claim_t, outbox_t, audit_t, payout_t, mass_send_t = (Claim.__table__, OutboxMessage.__table__, ClaimTransition.__table__,
                                                     Payout.__table__, MassSend.__table__)
PASSWORD = "correct horse battery staple"


@pytest.fixture(scope="module")
def people(stack):
    """Two staff supervisors: anna starts, boris approves (the two-person rule)."""
    engine, now = get_engine(), datetime.now(UTC)
    anna = create_user(engine, login="anna.mass@example.ru", password=PASSWORD, kind="staff", role="supervisor", now=now)
    boris = create_user(engine, login="boris.mass@example.ru", password=PASSWORD, kind="staff", role="supervisor", now=now)
    return {name: {"user": u, "token": issue_api_token(engine, u.id, name="tests", now=now)} for name, u in (("anna", anna), ("boris", boris))}


def event_with_tickets(stack, *, card: int, cash: int = 0, bso: int = 0, scanned: int = 0) -> dict:
    with get_engine().begin() as conn:
        data = f.mass_event(conn, starts_at=datetime.now(UTC) + timedelta(days=20), card=card, cash=cash, bso=bso, scanned=scanned)
    stack.register_payments(data["payments"])
    return data


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def states(event_id: int) -> dict[str, int]:
    with get_engine().connect() as conn:
        return dict(conn.execute(select(claim_t.c.state, func.count()).where(claim_t.c.event_id == event_id).group_by(claim_t.c.state)).all())


def mass_sends(event_id: int) -> dict[str, tuple[int, int]]:
    with get_engine().connect() as conn:
        rows = conn.execute(select(mass_send_t.c.template, mass_send_t.c.id, mass_send_t.c.recipient_count)
                            .where(mass_send_t.c.event_id == event_id)).all()
    return {r.template: (r.id, r.recipient_count) for r in rows}


def artifacts(key: str) -> list:
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        return client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))


def test_from_the_api_every_ticket_is_refunded_or_followed_up_and_the_mail_waits_for_a_second_person(stack, people):
    data = event_with_tickets(stack, card=180, cash=25, bso=15, scanned=3)
    declined = sorted(data["payments"])[-1]
    httpx.post(f"http://127.0.0.1:{stack.acquirer_port}/_standin/faults",
               json={"kind": "cancel", "payment_id": declined, "reason": "rejected_by_payee"}, timeout=5).raise_for_status()
    event_id = data["event_id"]
    with httpx.Client(base_url=stack.api_url, timeout=30) as api:
        r = api.post(f"/events/{event_id}/cancellation", json={"reason": "Артист заболел"}, headers=bearer(people["anna"]["token"]))
        assert r.status_code == 202, r.text
        started = r.json()
        assert started["started_by"] == "staff:supervisor:anna.mass@example.ru"
        assert started["prefect_url"].endswith(started["flow_run_id"])
        wait_for("the mass run completed", lambda: run_state(started["flow_run_id"]) in ("COMPLETED", "FAILED", "CRASHED"), timeout=300)
        assert run_state(started["flow_run_id"]) == "COMPLETED"

        # 220 tickets, 3 scanned take no claim; 176 cards paid, the declined card and 40 cash/BSO need bank details.
        assert states(event_id) == {"paid": 176, "needs_bank_details": 41}
        assert artifacts(f"mass-cancellation-event-{event_id}")  # the summary table
        progress = artifacts(f"mass-cancellation-event-{event_id}-progress")
        assert progress and progress[0].data == 100.0
        with get_engine().connect() as conn:
            assert conn.execute(select(func.count()).select_from(audit_t).join(claim_t, claim_t.c.id == audit_t.c.claim_id)
                                .where(claim_t.c.event_id == event_id, audit_t.c.trigger == "file",
                                       audit_t.c.actor == started["started_by"])).scalar_one() == 217

        # One letter per buyer where the refund stands: each held approval was replaced by the claim's
        # «деньги отправлены» (176, a mass send) or «нужны реквизиты» (40, under the threshold: released).
        # The declined card left the batch before its approval could be replaced: that one goes out too.
        sends = mass_sends(event_id)
        assert {t: n for t, (_, n) in sends.items()} == {"refund_sent": 176}
        before = len(mail_in(stack.mail_dir))
        approve_id = sends["refund_sent"][0]
        # Anna started it: she may not approve it (409, in Russian); a buyer-facing mail has not left.
        r = api.post(f"/mass-sends/{approve_id}/approve", headers=bearer(people["anna"]["token"]))
        assert r.status_code == 409 and "другой сотрудник" in r.json()["detail"][0]["msg"]
        r = api.get(f"/mass-sends/{approve_id}", headers=bearer(people["boris"]["token"]))
        assert r.status_code == 200 and r.json()["recipient_count"] == 176 and "одобрен" in r.json()["sample_text"]
        r = api.post(f"/mass-sends/{approve_id}/approve", headers=bearer(people["boris"]["token"]))
        assert r.status_code == 200 and r.json()["approved_by"] == "staff:supervisor:boris.mass@example.ru"

    from tasks.claims import send_claim_mail

    while send_claim_mail(None, datetime.now(UTC)).sent:
        pass
    received = mail_in(stack.mail_dir)[before:]
    templates = [m["X-Vozvrat-Template"] for m in received]
    assert sorted(templates) == sorted(["decision_approved"] + ["refund_sent"] * 176 + ["bank_details_needed"] * 41)
    assert len({m["To"] for m in received}) == 217  # every buyer told
    with get_engine().connect() as conn:
        statuses = dict(conn.execute(select(mass_send_t.c.template, mass_send_t.c.status).where(mass_send_t.c.event_id == event_id)).all())
    assert statuses == {"refund_sent": "done"}
    # Each card refunded once at the acquirer.
    ledger = httpx.get(f"http://127.0.0.1:{stack.acquirer_port}/_standin/ledger", timeout=10).json()
    ours = [r for r in ledger["refunds"] if r["payment_id"] in data["payments"]]
    assert len(ours) == len({r["payment_id"] for r in ours}) == 177  # 180 cards, 3 scanned


def test_a_run_that_dies_after_a_chunk_resumes_and_a_rerun_creates_nothing_twice(stack, people, monkeypatch):
    from flows.mass_cancellation import mass_cancellation
    from tasks import event_artifacts

    data = event_with_tickets(stack, card=90, cash=10)
    event_id = data["event_id"]
    calls = {"n": 0}
    real_update = event_artifacts.report_progress

    def dies_after_two_chunks(*args, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise SystemError("worker lost after chunk 3 committed")
        return real_update(*args, **kw)

    monkeypatch.setattr(event_artifacts, "report_progress", dies_after_two_chunks)
    with pytest.raises(SystemError):
        mass_cancellation(event_id=event_id, action="cancelled", reason="Площадка закрыта", started_by="staff:supervisor:anna.mass@example.ru",
                          chunk_size=25)
    monkeypatch.setattr(event_artifacts, "report_progress", real_update)
    with get_engine().connect() as conn:
        assert conn.execute(select(func.count()).select_from(claim_t).where(claim_t.c.event_id == event_id)).scalar_one() == 75

    def counts():
        with get_engine().connect() as conn:
            ids = select(claim_t.c.id).where(claim_t.c.event_id == event_id).scalar_subquery()
            return tuple(conn.execute(select(func.count()).select_from(t).where(col.in_(ids))).scalar_one()
                         for t, col in ((audit_t, audit_t.c.claim_id), (outbox_t, outbox_t.c.claim_id), (payout_t, payout_t.c.claim_id)))

    summary = mass_cancellation(event_id=event_id, action="cancelled", reason="Площадка закрыта",
                                started_by="staff:supervisor:anna.mass@example.ru", chunk_size=25)
    assert summary["claims"] == 100 and states(event_id) == {"paid": 90, "needs_bank_details": 10}
    after = counts()
    again = mass_cancellation(event_id=event_id, action="cancelled", reason="Площадка закрыта",
                              started_by="staff:supervisor:anna.mass@example.ru", chunk_size=25)
    assert again["claims"] == 100 and counts() == after
    ledger = httpx.get(f"http://127.0.0.1:{stack.acquirer_port}/_standin/ledger", timeout=10).json()
    assert len([r for r in ledger["refunds"] if r["payment_id"] in data["payments"]]) == 90


def test_from_the_cli_with_a_progress_bar_and_refusals_in_one_line(stack, people, tmp_path):
    from cli.main import app

    data = event_with_tickets(stack, card=20)
    password_file = tmp_path / "password"
    password_file.write_text(PASSWORD + "\n")
    runner = CliRunner()
    who = ["--as", "anna.mass@example.ru", "--password-file", str(password_file)]
    result = runner.invoke(app, ["events", "replace", str(data["event_id"]), "--reason", "Замена программы", "--wait", *who])
    assert result.exit_code == 0, result.output
    assert "Prefect UI: http://127.0.0.1:" in result.output and "run" in result.output
    assert states(data["event_id"]) == {"paid": 20}

    refused = runner.invoke(app, ["events", "cancel", str(data["event_id"]), "--reason", "Отмена", *who])
    # already replaced: not cancelled as well, said in Russian (never the code «replaced»)
    assert refused.exit_code == 2 and "уже запущено действие «замена»" in refused.output and "replaced" not in refused.output
    unknown = runner.invoke(app, ["events", "cancel", "999999", "--reason", "Отмена", *who])
    assert unknown.exit_code == 2 and "не найдено" in unknown.output
    wrong = runner.invoke(app, ["mass-sends", "approve", "1", "--as", "anna.mass@example.ru", "--password-file", str(tmp_path / "none")])
    assert wrong.exit_code == 2


def test_a_run_scheduled_in_the_prefect_ui_runs_at_its_time(stack, people):
    from prefect import get_client
    from prefect.states import Scheduled

    data = event_with_tickets(stack, card=10)
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("mass-cancellation/mass-cancellation")
        run = client.create_flow_run_from_deployment(
            deployment.id, parameters={"event_id": data["event_id"], "action": "cancelled", "reason": "Отмена вечером",
                                       "started_by": "staff:supervisor:anna.mass@example.ru"},
            state=Scheduled(scheduled_time=datetime.now(UTC) + timedelta(seconds=3)))
    wait_for("the scheduled mass run completed", lambda: run_state(str(run.id)) == "COMPLETED", timeout=180)
    assert states(data["event_id"]) == {"paid": 10}


def chunk_runs(event_id: int) -> list:
    from prefect import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName, FlowRunFilter, FlowRunFilterTags

    with get_client(sync_client=True) as client:
        return client.read_flow_runs(flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[f"event-{event_id}"])),
                                     deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["mass-cancellation-chunk"])))


def test_a_deployed_run_shares_its_chunks_as_runs_of_the_chunk_deployment_and_a_second_run_makes_none_again(stack, people):
    """Issue 12 (scale-out): the chunks are runs any worker (here: the serving process) takes, one per
    chunk and event (idempotency key); a second run of the event finds them done and creates nothing."""
    from prefect import get_client

    data = event_with_tickets(stack, card=9, cash=2)
    parameters = {"event_id": data["event_id"], "action": "cancelled", "reason": "Отмена: гастроли перенесены",
                  "started_by": "staff:supervisor:anna.mass@example.ru", "chunk_size": 4}
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("mass-cancellation/mass-cancellation")
        first = client.create_flow_run_from_deployment(deployment.id, parameters=parameters)
    wait_for("the mass run completed", lambda: run_state(str(first.id)) in ("COMPLETED", "FAILED", "CRASHED"), timeout=240)
    assert run_state(str(first.id)) == "COMPLETED"
    chunks = chunk_runs(data["event_id"])
    assert sorted(r.name for r in chunks) == sorted(f"event-{data['event_id']}-chunk-{t[0]}-{t[-1]}"
                                                    for t in (data["tickets"][i:i + 4] for i in range(0, 11, 4)))
    assert {r.state.type.value for r in chunks} == {"COMPLETED"} and all(r.parent_task_run_id for r in chunks)
    assert states(data["event_id"]) == {"paid": 9, "needs_bank_details": 2}
    progress = artifacts(f"mass-cancellation-event-{data['event_id']}-progress")
    assert progress and progress[0].data == 100.0

    with get_client(sync_client=True) as client:
        again = client.create_flow_run_from_deployment(deployment.id, parameters=parameters)
    wait_for("the second mass run completed", lambda: run_state(str(again.id)) in ("COMPLETED", "FAILED", "CRASHED"), timeout=240)
    assert run_state(str(again.id)) == "COMPLETED"
    assert sorted(r.id for r in chunk_runs(data["event_id"])) == sorted(r.id for r in chunks)  # the same runs, none made again
    assert states(data["event_id"]) == {"paid": 9, "needs_bank_details": 2}
    ledger = httpx.get(f"http://127.0.0.1:{stack.acquirer_port}/_standin/ledger", timeout=10).json()
    assert len([r for r in ledger["refunds"] if r["payment_id"] in data["payments"]]) == 9
