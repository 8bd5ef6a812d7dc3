"""Two organizers, their claims and every kind of caller, for the organizer API and page tests.

Callers: organizer A's user, organizer B's user, staff support / supervisor / accounting (each with a
`vzu_` token AND a page session), a buyer token, the operator's service key, nobody, an expired session.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from freezegun import freeze_time
from sqlalchemy import select, update

from models.claim_store import apply_batch, claim_t, file_claims
from models.db import get_engine
from models.settings import get_settings
from tasks.accounts import create_user, issue_api_token
from tasks.auth import create_service_key

NOW = datetime(2026, 12, 8, 9, 0, tzinfo=UTC)  # a Tuesday
PASSWORD = "correct horse battery staple"
BUYER_TOKEN = "vzb_test-buyer-token-for-an-order-of-organizer-a"
PDF = b"%PDF-1.4\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n"


@dataclass
class Caller:
    name: str
    headers: dict[str, str] = field(default_factory=dict)
    csrf: str | None = None

    def with_csrf(self, form: dict) -> dict:
        return form | ({"csrf": self.csrf} if self.csrf else {})


@dataclass
class World:
    client: TestClient
    org_a: int
    org_b: int
    event_a: int
    callers: dict[str, Caller]
    users: dict[str, int]
    buyer_ticket: int = 0  # the buyer token's order's ticket (organizer A's event)

    def claim(self, organizer: str = "a", reason: str = "other", *, days_to_event: int = 20, decision_due=None) -> tuple[int, str]:
        """A new claim waiting for the organizer (assessed); returns (id, number)."""
        from tests import factories as f

        engine = get_engine()
        with engine.begin() as conn:
            if organizer == "a" and days_to_event == 20:
                event = self.event_a
            else:
                event = f.event(conn, starts_at=NOW + timedelta(days=days_to_event), organizer_id=self.org_a if organizer == "a" else self.org_b,
                                title="Щелкунчик" if organizer == "a" else "Лебединое озеро")
            ticket = f.ticket(conn, event_id=event, order_id=f.order(conn, created_at=NOW - timedelta(days=30), buyer_name="Петров Пётр"))
            (claim_id,) = file_claims(conn, ticket_ids=[ticket], reason=reason, actor="buyer", now=NOW)
            if reason in ("illness", "death"):
                f.document(conn, claim_id=claim_id, received_at=NOW, sick_from=NOW.date() - timedelta(days=1),
                           sick_to=NOW.date() + timedelta(days=30), person_name="Петров Пётр")
        apply_batch(engine, claim_ids=[claim_id], trigger="assess", actor="system", now=NOW)
        if decision_due is not None:
            with engine.begin() as conn:
                conn.execute(update(claim_t).where(claim_t.c.id == claim_id).values(decision_due=decision_due))
        with engine.connect() as conn:
            from sqlalchemy import select

            return claim_id, conn.execute(select(claim_t.c.number).where(claim_t.c.id == claim_id)).scalar_one()

    def stored_document(self, claim_id: int) -> int:
        from sqlalchemy import insert

        from models.tables import Document
        from tasks.documents import store

        stored = store(PDF)
        with get_engine().begin() as conn:
            return conn.execute(insert(Document.__table__).values(
                claim_id=claim_id, kind="death_certificate", received_at=NOW, person_name="Петров Пётр", filename="свидетельство.pdf",
                sha256=stored.sha256, size=stored.size, content_type=stored.content_type)).inserted_primary_key[0]


def session_cookie(user_id: int | None, csrf: str, *, at: datetime | None = None) -> str:
    from api.organizer import SESSION_COOKIE, session_cookie_value

    with freeze_time(at) if at else contextlib.nullcontext():
        return f"{SESSION_COOKIE}={session_cookie_value(user_id, csrf)}"


@pytest.fixture
def world(sqlite_url, tmp_path, monkeypatch):
    from api.app import app
    from api.clock import clock
    from tests import factories as f

    monkeypatch.setenv("VOZVRAT_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("VOZVRAT_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    get_engine.cache_clear()
    engine = get_engine()
    with engine.begin() as conn:
        org_a = f.organizer(conn, name="Агентство А", email="a@example.ru")
        org_b = f.organizer(conn, name="Агентство Б", email="b@example.ru")
        event_a = f.event(conn, starts_at=NOW + timedelta(days=20), organizer_id=org_a, title="Щелкунчик")
    people = {
        "organizer_a": dict(login="anna@a.ru", kind="organizer", organizer_id=org_a),
        "organizer_b": dict(login="boris@b.ru", kind="organizer", organizer_id=org_b),
        "support": dict(login="sveta@operator.ru", kind="staff", role="support"),
        "supervisor": dict(login="ivan@operator.ru", kind="staff", role="supervisor"),
        "accounting": dict(login="olga@operator.ru", kind="staff", role="accounting"),
    }
    callers: dict[str, Caller] = {}
    users: dict[str, int] = {}
    for name, kw in people.items():
        user = create_user(engine, password=PASSWORD, now=NOW - timedelta(days=1), **kw)
        users[name] = user.id
        token = issue_api_token(engine, user.id, name="test", now=datetime.now(UTC))
        csrf = f"csrf-{name}"
        callers[name] = Caller(name, {"Authorization": f"Bearer {token}", "Cookie": session_cookie(user.id, csrf)}, csrf)
    callers["service"] = Caller("service", {"Authorization": f"Bearer {create_service_key(engine, 'site', now=NOW)}"})
    callers["nobody"] = Caller("nobody")
    # Signed 13 hours ago: past the 12-hour session.
    callers["expired"] = Caller("expired", {"Cookie": session_cookie(users["organizer_a"], "csrf-expired",
                                                                     at=datetime.now(UTC) - timedelta(hours=13))}, "csrf-expired")

    # A real buyer: a `vzb_` token (tasks/buyer_auth.py) of an order for organizer A's event. The claims the
    # matrix acts on are other orders', so to this buyer they do not exist (404).
    from sqlalchemy import insert

    from models.tables import Order
    from tasks.auth import digest
    from tasks.buyer_auth import TOKEN_TTL, token_t

    with engine.begin() as conn:
        buyer_order = f.order(conn, created_at=NOW - timedelta(days=30), buyer_name="Сидоров Сидор")
        buyer_ticket = f.ticket(conn, event_id=event_a, order_id=buyer_order)
        buyer_order_number = conn.execute(select(Order.__table__.c.number).where(Order.__table__.c.id == buyer_order)).scalar_one()
        conn.execute(insert(token_t).values(order_number=buyer_order_number, token_sha256=digest(BUYER_TOKEN), created_at=NOW,
                                            expires_at=NOW + TOKEN_TTL))
    callers["buyer"] = Caller("buyer", {"Authorization": f"Bearer {BUYER_TOKEN}"})
    app.dependency_overrides[clock] = lambda: NOW
    with TestClient(app, follow_redirects=False) as client:
        yield World(client=client, org_a=org_a, org_b=org_b, event_a=event_a, callers=callers, users=users, buyer_ticket=buyer_ticket)
    app.dependency_overrides.clear()
    get_settings.cache_clear()
    get_engine.cache_clear()
