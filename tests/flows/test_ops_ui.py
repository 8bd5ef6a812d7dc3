"""What ops see in the Prefect UI, checked through the Prefect API on the real stack: the very scenario
`python -m cli.screenshots` photographs (docs/ui-waiting.png, ui-escalated.png, ui-bank-details.png).

Used to go wrong: every waiting claim's run was just «Suspended», whoever it waited on and whatever
its deadline; an escalated claim's run looked like any other; tags carried bare ids.
"""
from __future__ import annotations

import uuid
from datetime import UTC, datetime

import httpx
import pytest
from prefect import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterKey,
    DeploymentFilter,
    DeploymentFilterName,
    FlowRunFilter,
    FlowRunFilterId,
)
from sqlalchemy import select

from cli.screenshots import EVENT_TITLE, ORGANIZER_NAME, build_scenario
from models.claim_views import read_claim
from models.db import get_engine
from models.tables import Claim
from tasks.claim_card import card_key
from tasks.escalation_alert import AUTOMATION_NAME
from tests.flows.conftest import mail_in, run_of, run_state, wait_for


@pytest.fixture(scope="module")
def scenario(stack):
    return build_scenario(get_engine(), datetime.now(UTC))


def _claim_row(claim_id: int):
    with get_engine().connect() as conn:
        return conn.execute(select(Claim.decision_due, Claim.payout_due).where(Claim.id == claim_id)).one()


def _latest_artifact(key: str):
    with get_client(sync_client=True) as client:
        found = client.read_latest_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])), limit=1)
    assert found, f"no artifact {key}"
    return found[0]


def test_each_waiting_run_names_whom_it_waits_on_and_until_when(scenario):
    waiting, escalated, bank = (scenario.claims[s] for s in ("waiting", "escalated", "bank"))
    due = _claim_row(waiting.claim_id).decision_due

    state = run_of(waiting.flow_run_id).state
    assert state.type.value == "PAUSED"
    assert state.name == f"Ждёт организатора · до {due:%d.%m.%Y}"
    assert "организатор: решение по заявке" in state.message and "осталось" in state.message and ORGANIZER_NAME in state.message

    state = run_of(escalated.flow_run_id).state
    assert state.type.value == "PAUSED"
    assert state.name == f"Эскалация: ждёт организатора · срок был {_claim_row(escalated.claim_id).decision_due:%d.%m.%Y}"
    assert "срок истёк" in state.message

    state = run_of(bank.flow_run_id).state
    assert state.type.value == "PAUSED"
    assert state.name == f"Ждёт реквизиты покупателя · до {_claim_row(bank.claim_id).payout_due:%d.%m.%Y}"
    assert "банковские реквизиты" in state.message


def test_tags_carry_readable_names_and_mark_the_escalated_run(scenario):
    org_tag = f"organizer:{scenario.organizer_id} {ORGANIZER_NAME}"
    event_tag = f"event:{scenario.event_id} {EVENT_TITLE}"
    for story, claim in scenario.claims.items():
        tags = set(run_of(claim.flow_run_id).tags)
        assert {org_tag, event_tag} <= tags, (story, tags)
        assert ("escalated" in tags) == (story == "escalated"), (story, tags)


def test_the_claim_card_is_published_under_a_stable_key_and_shows_the_state_holder_deadline_amount_and_steps(scenario):
    escalated = scenario.claims["escalated"]
    assert card_key(escalated.number) == f"claim-{escalated.number.lower()}"
    card = _latest_artifact(card_key(escalated.number))
    assert card.type == "markdown"
    text = str(card.data)
    for expected in (f"Карточка заявки {escalated.number}", "срок решения истёк", "**эскалация**", "Кто держит",
                     "организатор, под контролем руководителя", "4 500,00 ₽", ORGANIZER_NAME, EVENT_TITLE, "Последние шаги", "`escalate`",
                     f"/runs/flow-run/{escalated.flow_run_id}"):
        assert expected in text, expected
    assert "Покупатель Тестовый" not in text  # no buyer's personal data in Prefect

    bank = _latest_artifact(card_key(scenario.claims["bank"].number))
    assert "покупатель: банковские реквизиты" in str(bank.data) and "банковский перевод" in str(bank.data)


def test_the_resume_form_is_described_and_prefilled_for_the_state(scenario):
    waiting = scenario.claims["waiting"]
    state = run_of(waiting.flow_run_id).state
    keyset = state.state_details.run_input_keyset
    assert keyset["description"] == f"suspended-{state.state_details.pause_key}-description"  # Prefect's own keyset
    with get_client(sync_client=True) as client:
        description = client.read_flow_run_input(waiting.flow_run_id, keyset["description"])
        schema = client.read_flow_run_input(waiting.flow_run_id, keyset["schema"])
    assert waiting.number in description and "`reject`" in description and "`extend`" in description
    assert '"default": "approve"' in schema.replace('":"', '": "') or "'default': 'approve'" in schema
    assert "4500" in schema.replace(" ", "") or "450000" in schema.replace(" ", "")  # «Прочее»: the amount, pre-filled in kopecks


def test_the_sla_breaches_artifact_names_the_organizer_and_links_the_run_and_the_claim(stack, scenario):
    escalated = scenario.claims["escalated"]
    text = str(_latest_artifact("sla-breaches").data)
    line = next(row for row in text.splitlines() if escalated.number in row)
    assert f"{ORGANIZER_NAME} (id {scenario.organizer_id})" in line
    assert f"({stack.prefect_ui_url}/runs/flow-run/{escalated.flow_run_id})" in line
    assert f"{stack.api_url}/organizer/claims/{escalated.claim_id})" in line


def test_a_run_resumed_from_the_ui_form_applies_the_decision_and_ends_saying_so(scenario):
    waiting = scenario.claims["waiting"]
    with get_client(sync_client=True) as client:
        client.resume_flow_run(waiting.flow_run_id, run_input={"decision": "reject", "note": "Командировка не основание.",
                                                              "decided_by": "prefect-ui"})
    wait_for("the run completed", lambda: run_state(waiting.flow_run_id) == "COMPLETED")
    assert read_claim(waiting.claim_id).state == "rejected"
    assert "в возврате отказано" in run_of(waiting.flow_run_id).state.message
    assert "в возврате отказано" in str(_latest_artifact(card_key(waiting.number)).data)


def test_an_escalation_event_fires_the_automation_that_mails_the_supervisor(stack, scenario):
    """Emit the event sla-watch emits (for a claim sla-watch never saw) → the automation runs
    escalation-alert with the claim's number → «Просрочен срок» reaches the supervisor's mailbox."""
    with get_client(sync_client=True) as client:
        automations = client.read_automations_by_name(AUTOMATION_NAME)
    assert len(automations) == 1 and automations[0].enabled
    bank = scenario.claims["bank"]  # its supervisor notice was never queued
    r = httpx.post(stack.prefect_api_url + "/events", json=[{
        "id": str(uuid.uuid4()), "occurred": datetime.now(UTC).isoformat(), "event": "vozvrat.claim.escalated",
        "resource": {"prefect.resource.id": f"vozvrat.claim.{bank.claim_id}", "prefect.resource.name": bank.number},
        "payload": {"kind": "payout", "due": "2026-12-10", "reason": "voluntary"}}], timeout=10)
    assert r.status_code == 204, r.text

    def alert_runs():
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=["escalation-alert"])))
        return [run for run in runs if run.parameters.get("claim_number") == bank.number]

    (run,) = wait_for("the automation's escalation-alert run", alert_runs, timeout=120)
    assert run.parameters["kind"] == "payout"
    wait_for("escalation-alert completed", lambda: run_state(str(run.id)) == "COMPLETED")
    notices = wait_for("the supervisor's notice", lambda: [m for m in mail_in(stack.mail_dir)
                                                            if m["To"] == "supervisor@example.ru" and bank.number in m["Subject"]])
    assert len(notices) == 1
    with get_client(sync_client=True) as client:
        assert client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])))[0].state.is_completed()


def test_mail_left_behind_gets_one_outbox_dispatch_run_and_nothing_left_gets_none(stack, scenario):
    """The run starter's gate (tasks/sweep_gate.py) against the real stack: an email due for minutes makes
    one tagged outbox-dispatch run, which sends it; then there is nothing to start a run for."""
    from datetime import timedelta

    from sqlmodel import Session

    from tasks.outbox import enqueue_email
    from tasks.sweep_gate import start_outbox_dispatch_if_needed

    engine = get_engine()
    now = datetime.now(UTC)
    with Session(engine) as session:
        enqueue_email(session, dedup_key=f"test:left-behind:{uuid.uuid4()}", claim_id=None, template="escalation_notice",
                      recipient="left-behind@example.ru", now=now - timedelta(minutes=3),
                      payload={"claim_number": "VZ-LEFT-1", "event_title": EVENT_TITLE, "deadline": "2026-12-10", "kind": "decision",
                               "overdue_working_days": 1, "reason": "other"})
        session.commit()
    run_id = start_outbox_dispatch_if_needed(engine, now=now)
    assert run_id is not None
    assert "mail-left-behind" in run_of(run_id).tags
    wait_for("outbox-dispatch completed", lambda: run_state(run_id) == "COMPLETED")
    assert wait_for("the mail sent", lambda: [m for m in mail_in(stack.mail_dir) if m["To"] == "left-behind@example.ru"])
    assert start_outbox_dispatch_if_needed(engine, now=datetime.now(UTC)) is None
