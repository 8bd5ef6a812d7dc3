"""A document's file is served only to the claim's organizer, staff and that order's buyer
(tasks/documents.open_for); the JSON document endpoint records a stored file's sha256, size and type."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert, select

from models.claim_store import document_t, file_claims
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


# The upload itself (multipart, checked by content, recorded with sha256, size and type) is
# tests/api/test_buyer.py: the buyer's documents endpoint by claim number.
