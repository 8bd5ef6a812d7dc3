"""Decree 442 end to end on the real stack (API, run starter, Prefect deployments, SMTP sink): a regime
ends, an event is postponed by 12 months, buyers are told, one takes a voucher, one claims and is
refused because the organizer keeps tickets valid, and sla-watch warns before the 14-day notice runs
out for an event whose fate is not published yet. The clock is a parameter of sla-watch, never waited for."""
from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
from prefect import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from prefect.deployments import run_deployment
from sqlalchemy import select

from models.claim_views import read_claim
from models.db import get_engine
from models.tables import Voucher
from tasks.accounts import create_user, issue_api_token
from tasks.auth import create_service_key
from tests import factories as f
from tests.flows.conftest import body_text, mail_in, wait_for

MSK = ZoneInfo("Europe/Moscow")


def test_regime_postponement_voucher_refusal_and_publication_warning(stack):
    engine = get_engine()
    now = datetime.now(UTC)
    today = now.astimezone(MSK).date()
    starts_on, ends_on = today - timedelta(days=40), today - timedelta(days=2)  # the regime ended two days ago
    original = datetime.combine(today - timedelta(days=20), datetime.min.time(), tzinfo=MSK).replace(hour=19)
    with engine.begin() as conn:
        org = f.organizer(conn, email="festival@example.ru", name="Фестиваль", policy={"regime_postponed_refunds": False, "vouchers_offered": True})
        venue = f.venue(conn, region="87")  # Chukotka: no other test declares a regime there
        event = f.event(conn, starts_at=original, organizer_id=org, venue_id=venue, title="Летний фестиваль")
        unpublished = f.event(conn, starts_at=original + timedelta(days=3), organizer_id=org, venue_id=venue, title="Ночной концерт")
        keeper = f.ticket(conn, event_id=event, order_id=f.order(conn, created_at=original - timedelta(days=90), buyer_email="voucher-taker@example.ru"))
        claimer = f.ticket(conn, event_id=event, order_id=f.order(conn, created_at=original - timedelta(days=90), buyer_email="refund-seeker@example.ru"))
    staff = create_user(engine, login="duty@operator.ru", password=None, kind="staff", role="supervisor", now=now)
    organizer = create_user(engine, login="anna@festival.ru", password=None, kind="organizer", organizer_id=org, now=now)
    as_staff = {"Authorization": f"Bearer {issue_api_token(engine, staff.id, name='e2e', now=now)}"}
    as_organizer = {"Authorization": f"Bearer {issue_api_token(engine, organizer.id, name='e2e', now=now)}"}
    as_site = {"Authorization": f"Bearer {create_service_key(engine, 'site-e2e', now=now)}"}

    with httpx.Client(base_url=stack.api_url, timeout=30) as api:
        regime = api.post("/regimes", json={"region": "RU-CHU", "starts_on": starts_on.isoformat()}, headers=as_staff)
        assert regime.status_code == 201, regime.text
        ended = api.post(f"/regimes/{regime.json()['id']}/end", json={"ends_on": ends_on.isoformat()}, headers=as_staff)
        assert ended.status_code == 200, ended.text

        # Postponed by 12 months: within 18 months of the original date, tickets stay valid.
        moved = api.post(f"/events/{event}/postponement", headers=as_organizer,
                         json={"new_starts_at": (original + timedelta(days=365)).isoformat()})
        assert moved.status_code == 201, moved.text
        assert moved.json()["regime_rule"]["rule"] == "decree_442_postponed_within_18_months"

        told = wait_for("both buyers told", lambda: [m for m in mail_in(stack.mail_dir) if "«Летний фестиваль» перенесено" in m["Subject"]])
        assert {m["To"] for m in told} == {"voucher-taker@example.ru", "refund-seeker@example.ru"}
        assert "№ 442" in body_text(told[0]) and "ваучер" in body_text(told[0])

        voucher = api.post("/vouchers", json={"ticket_id": keeper}, headers=as_site)
        assert voucher.status_code == 201, voucher.text
        number = voucher.json()["number"]
        mail = wait_for("the voucher's email", lambda: [m for m in mail_in(stack.mail_dir) if number in m["Subject"]])
        assert mail[0]["To"] == "voucher-taker@example.ru" and number in body_text(mail[0])

        claim = api.post("/claims", json={"ticket_id": claimer, "reason": "postponed"}, headers=as_site)
        assert claim.status_code == 201, claim.text
    claim_id = claim.json()["id"]
    refused = wait_for("the claim refused by its run", lambda: read_claim(claim_id, engine=engine).state == "rejected")
    assert refused
    letter = wait_for("the refusal email", lambda: [m for m in mail_in(stack.mail_dir)
                                                  if m["To"] == "refund-seeker@example.ru" and "отказ" in m["Subject"].lower()])
    assert "№ 442" in body_text(letter[0]) and "сохранил билеты действительными" in body_text(letter[0])
    with engine.connect() as conn:
        assert conn.execute(select(Voucher.status).where(Voucher.number == number)).scalar_one() == "issued"

    # The other event of the regime's days has no published fate: one day before the 14th day passes, sla-watch warns.
    last_day = ends_on + timedelta(days=14)
    run = run_deployment("sla-watch/sla-watch", parameters={"now": datetime.combine(last_day - timedelta(days=1), datetime.min.time(), tzinfo=MSK)
                                                            .replace(hour=10).isoformat()}, timeout=180, as_subflow=False)
    assert run.state.is_completed(), run.state
    warned = wait_for("publication warnings", lambda: [m for m in mail_in(stack.mail_dir)
                                                       if "Истекает срок публикации" in m["Subject"] and "Ночной концерт" in m["Subject"]])
    assert {m["To"] for m in warned} == {"festival@example.ru", "supervisor@example.ru"}
    assert f"мероприятие № {unpublished}" in warned[0]["Subject"] and "№ 442" in body_text(warned[0])
    with get_client(sync_client=True) as client:
        assert client.read_flow_run(run.id).state.is_completed()


def test_the_event_postponement_flow_tells_every_buyer_and_issues_vouchers_in_chunks_once(stack):
    engine = get_engine()
    now = datetime.now(UTC)
    today = now.astimezone(MSK).date()
    original = datetime.combine(today - timedelta(days=5), datetime.min.time(), tzinfo=MSK).replace(hour=19)
    with engine.begin() as conn:
        org = f.organizer(conn, email="stadium@example.ru", policy={"vouchers_offered": True, "regime_postponed_refunds": False})
        regime = f.regime(conn, region="flow-e2e", starts_on=today - timedelta(days=30))
        venue = f.venue(conn, region="flow-e2e")
        event = f.event(conn, starts_at=original, organizer_id=org, venue_id=venue, title="Стадион", regime_id=regime)
        for i in range(5):
            f.ticket(conn, event_id=event, order_id=f.order(conn, created_at=original - timedelta(days=60), buyer_email=f"fan{i}@example.ru"))
    from tasks.postponement import record_postponement

    change = record_postponement(engine, event_id=event, new_starts_at=original + timedelta(days=300), claims_until=None, actor="staff:ops", now=now)
    params = {"change_id": change.change_id, "issue_vouchers": True, "chunk_size": 2, "now": now.isoformat()}
    first = run_deployment("event-postponement/event-postponement", parameters=params, timeout=240, as_subflow=False)
    assert first.state.is_completed(), first.state
    second = run_deployment("event-postponement/event-postponement", parameters=params, timeout=240, as_subflow=False)
    assert second.state.is_completed(), second.state
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[first.id, second.id])))

    def summary(run) -> dict:
        (table,) = [a for a in artifacts if a.flow_run_id == run.id and a.key == f"event-postponement-{change.change_id}"]
        data = json.loads(table.data) if isinstance(table.data, str) else table.data
        return {row["что"]: row["значение"] for row in data}

    assert (summary(first)["оповещений записано"], summary(first)["выдано ваучеров"], summary(first)["частей"]) == ("5", "5", "6")
    assert (summary(second)["оповещений записано"], summary(second)["выдано ваучеров"]) == ("0", "0")  # re-run: nothing twice
    progress = [a for a in artifacts if a.flow_run_id == first.id and a.type == "progress"]
    assert len(progress) == 1 and float(progress[0].data) == 100.0
    with engine.connect() as conn:
        assert len(conn.execute(select(Voucher.number).where(Voucher.event_id == event)).all()) == 5
    told = wait_for("five fans told", lambda: {m["To"] for m in mail_in(stack.mail_dir) if "«Стадион» перенесено" in m["Subject"]} == {
        f"fan{i}@example.ru" for i in range(5)})
    assert told
