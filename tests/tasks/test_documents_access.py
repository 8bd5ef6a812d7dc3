"""A document's file is served only to the claim's organizer, staff and that order's buyer
(tasks/documents.open_for); the JSON document endpoint records a stored file's sha256, size and type."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import insert, select

from api.app import app, clock
from models.claim_store import document_t, file_claims
from models.db import get_engine
from models.settings import get_settings
from models.tables import Order
from tasks import documents
from tasks.auth import Principal, organizer
from tests import factories as f

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
PDF = b"%PDF-1.4\n% a scan\n%%EOF\n"


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("VOZVRAT_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    yield tmp_path / "data"
    get_settings.cache_clear()


def claim_with_document(engine, *, filename: str | None = "справка.pdf") -> tuple[int, int, int, str]:
    """(claim id, document id, organizer id, order number); the document's file is stored."""
    stored = documents.store(PDF)
    with engine.begin() as conn:
        org = f.organizer(conn)
        event = f.event(conn, starts_at=NOW + timedelta(days=20), organizer_id=org)
        order = f.order(conn, created_at=NOW - timedelta(days=30))
        ticket = f.ticket(conn, event_id=event, order_id=order)
        (claim_id,) = file_claims(conn, ticket_ids=[ticket], reason="illness", actor="buyer", now=NOW)
        doc = conn.execute(insert(document_t).values(claim_id=claim_id, kind="other", received_at=NOW, filename=filename, judged_false=False,
                                                     sha256=stored.sha256, size=stored.size, content_type=stored.content_type)
                           ).inserted_primary_key[0]
        number = conn.execute(select(Order.__table__.c.number).where(Order.__table__.c.id == order)).scalar_one()
    return claim_id, doc, org, number


def test_the_claims_organizer_staff_and_the_orders_buyer_get_the_file(engine, data_dir):
    _, doc, org, number = claim_with_document(engine)
    for principal in (organizer(org), Principal(kind="staff", audit="staff:support:olga", role="support"),
                      Principal(kind="buyer", audit=f"buyer:order:{number}", order_number=number)):
        assert documents.open_for(engine, principal, doc) == (PDF, "application/pdf", "справка.pdf")


def test_anyone_else_learns_nothing(engine, data_dir):
    _, doc, org, number = claim_with_document(engine)
    for principal in (organizer(org + 1), Principal(kind="buyer", audit="buyer:order:OTHER", order_number="OTHER"),
                      Principal(kind="service", audit="service:site")):
        with pytest.raises(LookupError):
            documents.open_for(engine, principal, doc)
    with pytest.raises(LookupError):  # a missing document looks the same
        documents.open_for(engine, organizer(org), doc + 1000)


def test_a_document_without_a_file_or_with_its_file_gone_is_not_found(engine, data_dir):
    _, doc, org, _ = claim_with_document(engine)
    with engine.begin() as conn:
        claim_id = conn.execute(select(document_t.c.claim_id).where(document_t.c.id == doc)).scalar_one()
        bare = conn.execute(insert(document_t).values(claim_id=claim_id, kind="other", received_at=NOW, judged_false=False)).inserted_primary_key[0]
    with pytest.raises(LookupError):
        documents.open_for(engine, organizer(org), bare)
    documents.path_of(documents.store(PDF).sha256).unlink()
    with pytest.raises(LookupError):
        documents.open_for(engine, organizer(org), doc)


def test_a_filename_never_carries_a_path_or_header_breaking_characters(engine, data_dir):
    _, doc, org, _ = claim_with_document(engine, filename='../../etc/pass"wd\r\n.pdf')
    assert documents.open_for(engine, organizer(org), doc)[2] == "passwd.pdf"
    _, doc, org, _ = claim_with_document(engine, filename=None)
    assert documents.open_for(engine, organizer(org), doc)[2] == f"document-{doc}.pdf"


@pytest.fixture
def client(sqlite_url, data_dir, monkeypatch):
    monkeypatch.setenv("VOZVRAT_DATABASE_URL", sqlite_url)
    get_settings.cache_clear()
    get_engine.cache_clear()
    app.dependency_overrides[clock] = lambda: NOW
    with TestClient(app) as c:
        yield c
    app.dependency_overrides.clear()
    get_engine().dispose()
    get_engine.cache_clear()


def test_the_document_endpoint_records_a_stored_files_sha256_size_and_type(client):
    claim_id, _, _, _ = claim_with_document(get_engine())
    scan = documents.store(b"\x89PNG\r\n\x1a\n" + b"\x00" * 100)
    answer = client.post(f"/claims/{claim_id}/documents", json={"kind": "eln_copy", "filename": "скан.png", "sha256": scan.sha256})
    assert answer.status_code == 201
    with get_engine().connect() as conn:
        row = conn.execute(select(document_t).where(document_t.c.claim_id == claim_id, document_t.c.kind == "eln_copy")).one()
    assert (row.sha256, row.size, row.content_type, row.filename) == (scan.sha256, 108, "image/png", "скан.png")


def test_a_sha256_of_no_stored_file_is_refused_field_by_field(client):
    claim_id, _, _, _ = claim_with_document(get_engine())
    missing = client.post(f"/claims/{claim_id}/documents", json={"kind": "other", "sha256": "0" * 64})
    assert missing.status_code == 422
    assert missing.json()["detail"] == [{"loc": ["body", "sha256"], "msg": "Файл не найден: сначала загрузите его.", "type": "not_found"}]
    malformed = client.post(f"/claims/{claim_id}/documents", json={"kind": "other", "sha256": "../../etc/passwd"})
    assert malformed.status_code == 422 and malformed.json()["detail"][0]["loc"] == ["body", "sha256"]
