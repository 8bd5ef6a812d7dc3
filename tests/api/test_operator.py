"""PUT /operator/orders/{number}: the sales system's door, open to a live service key only."""
from __future__ import annotations

from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient

from api import operator
from api.app import app
from api.auth import optional_principal
from models.db import get_engine
from models.settings import get_settings
from tasks.auth import Principal, create_service_key, revoke_service_key
from tasks.intake import issue_organizer_token
from tests import factories as f

NOW = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)


@pytest.fixture
def client(sqlite_url, monkeypatch):
    monkeypatch.setenv("VOZVRAT_DATABASE_URL", sqlite_url)
    get_settings.cache_clear()
    get_engine.cache_clear()
    app.dependency_overrides[operator.clock] = lambda: NOW
    with TestClient(app) as c:
        yield c
    app.dependency_overrides.clear()
    get_settings.cache_clear()
    get_engine.cache_clear()


@pytest.fixture
def key(client) -> dict[str, str]:
    return {"Authorization": f"Bearer {create_service_key(get_engine(), 'sales', now=NOW)}"}


def put(client, order: dict, headers: dict | None = None, number: str | None = None):
    return client.put(f"/operator/orders/{number or order['number']}", json=order, headers=headers or {})


def test_created_then_unchanged_then_updated(client, key):
    order = f.sales_order()
    created = put(client, order, key)
    assert created.status_code == 201, created.text
    assert created.json()["result"] == "created"
    again = put(client, order, key)
    assert (again.status_code, again.json()["result"]) == (200, "unchanged")
    order["event"]["status"] = "cancelled"
    updated = put(client, order, key)
    assert (updated.status_code, updated.json()["result"], updated.json()["changed"]) == (200, "updated", ["event.status"])


def test_without_a_live_service_key_nothing_is_written(client, key):
    engine = get_engine()
    create_service_key(engine, "old", now=NOW)
    revoked = create_service_key(engine, "revoked", now=NOW)
    revoke_service_key(engine, "revoked", now=NOW)
    for headers in ({}, {"Authorization": "Bearer vzs_unknown"}, {"Authorization": f"Bearer {revoked}"}, {"Authorization": "Basic x"}):
        r = put(client, f.sales_order(), headers)
        assert r.status_code == 401, headers
        assert r.json()["detail"][0]["loc"] == ["header", "authorization"]
    with engine.connect() as conn:
        assert conn.exec_driver_sql("select count(*) from ticket_order").scalar_one() == 0


def test_an_organizer_token_is_forbidden(client):
    engine = get_engine()
    with engine.begin() as conn:
        org = f.organizer(conn)
    token = issue_organizer_token(engine, org, now=NOW)
    r = put(client, f.sales_order(), {"Authorization": f"Bearer {token}"})
    assert r.status_code == 403
    assert r.json()["detail"][0]["type"] == "forbidden"


@pytest.mark.parametrize("principal", [
    Principal(kind="buyer", audit="buyer:order:K-1000001", order_number="K-1000001"),
    Principal(kind="staff", audit="staff:support:ann", role="support"),
])
def test_a_buyer_or_staff_is_forbidden(client, principal):
    app.dependency_overrides[optional_principal] = lambda: principal
    r = put(client, f.sales_order())
    assert r.status_code == 403


def test_the_number_in_the_body_must_match_the_path(client, key):
    r = put(client, f.sales_order("K-1"), key, number="K-2")
    assert r.status_code == 422
    assert r.json()["detail"] == [{"loc": ["body", "number"], "msg": "Номер заказа в теле запроса не совпадает с номером в адресе.",
                                   "type": "number_mismatch"}]


def test_bad_fields_are_422_field_level_in_russian(client, key):
    order = f.sales_order()
    order["venue"]["timezone"] = "Moscow"
    order["tickets"][0]["price_paid"] = 3500.5
    del order["buyer"]["email"]
    r = put(client, order, key)
    assert r.status_code == 422
    by_loc = {tuple(e["loc"]): e["msg"] for e in r.json()["detail"]}
    assert by_loc[("body", "venue", "timezone")].startswith("Неизвестный часовой пояс")
    assert by_loc[("body", "tickets", 0, "price_paid")] == "Нужно целое число."
    assert by_loc[("body", "buyer", "email")] == "Обязательное поле."


def test_a_void_ticket_made_valid_again_is_409(client, key):
    assert put(client, f.sales_order(ticket_status="refunded"), key).status_code == 201
    r = put(client, f.sales_order(), key)
    assert r.status_code == 409
    (error,) = r.json()["detail"]
    assert error["loc"] == ["body", "tickets", 0, "status"] and error["type"] == "ticket_void"


def test_the_audit_row_names_the_service_key(client, key):
    put(client, f.sales_order(), key)
    engine = get_engine()
    from sqlalchemy import select

    from models.claim_store import apply_trigger, file_claims
    from models.tables import ClaimTransition, Ticket
    from states.policy import Reason

    with engine.connect() as conn:
        ticket_id = conn.execute(select(Ticket.id)).scalar_one()
    with engine.begin() as conn:
        (claim_id,) = file_claims(conn, ticket_ids=[ticket_id], reason=Reason.OTHER, actor="buyer", now=NOW)
        apply_trigger(conn, claim_id=claim_id, trigger="assess", actor="system", now=NOW)
    r = put(client, f.sales_order(ticket_status="scanned"), key)
    assert r.json()["claims_refused"] == [f"VZ-{ticket_id:07d}-1"]
    with engine.connect() as conn:
        actor = conn.execute(select(ClaimTransition.actor).where(ClaimTransition.trigger == "refuse_scanned")).scalar_one()
    assert actor == "service:sales"
