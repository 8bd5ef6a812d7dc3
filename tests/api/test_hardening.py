"""Bad input never answers 500 (issue 9, item 4): against a real uvicorn server on each backend.

Each test is a reproduction from the fuzzing run against main: ids at or above 2**31, NUL and other
control characters in text fields, 30 concurrent uploads to one claim.
"""
from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import select

from api.app import app
from models.claim_store import apply_batch, claim_t, document_t, file_claims
from models.db import make_engine
from models.migrate import upgrade
from tasks.auth import create_service_key
from tasks.intake import issue_organizer_token
from tests import factories as f
from tests.api.uvicorn_server import api_server
from tests.conftest import _create_pg_database, _drop_pg_database

NOW = datetime.now(UTC)

CLAIM_PATHS = [
    ("post", "/organizer/claims/{id}/decision", {"decision": "approve"}),
    ("post", "/organizer/claims/{id}/extension", {"reason": "Нужна проверка документов"}),
]

# Every text field of every request body, with a valid body around it.
TEXT_FIELDS = [
    ("/claims", {"ticket_id": 1, "reason": "other"}, "description"),
    ("/claims", {"ticket_id": 1, "reason": "other"}, "name_mismatch_explanation"),
    ("/claims/{number}/documents", {"kind": "other"}, "person_name"),
    ("/claims/{number}/documents", {"kind": "other"}, "filename"),
    ("/organizer/claims/{id}/decision", {"decision": "reject"}, "note"),
    ("/organizer/claims/{id}/decision", {"decision": "reject", "note": "Нет"}, "decided_by"),
    ("/organizer/claims/{id}/extension", {}, "reason"),
    ("/organizer/claims/{id}/extension", {"reason": "Проверка"}, "decided_by"),
    ("/organizer/decisions", {"numbers": ["VZ-0000001-1"], "decision": "reject"}, "note"),
    ("/organizer/decisions", {"numbers": ["VZ-0000001-1"], "decision": "reject", "note": "Нет"}, "decided_by"),
]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def backend(request, tmp_path_factory):
    """One migrated database and one API server on it per backend, for the whole module."""
    root = tmp_path_factory.mktemp(f"hardening-{request.param}")
    pg_name = None
    if request.param == "sqlite":
        url = f"sqlite:///{root / 'vozvrat.db'}"
    else:
        request.getfixturevalue("postgres_available")
        pg_name, url = _create_pg_database()
    try:
        upgrade(url)
        engine = make_engine(url)
        with api_server({"VOZVRAT_DATABASE_URL": url}, root / "api.log") as base_url:
            yield {"engine": engine, "server": base_url}
        engine.dispose()
    finally:
        if pg_name:
            _drop_pg_database(pg_name)


@pytest.fixture
def server(backend):
    return backend["server"]


@pytest.fixture
def seeded(backend):
    """A new organizer with a token and one illness claim awaiting documents."""
    engine = backend["engine"]
    with engine.begin() as conn:
        org = f.organizer(conn)
        event = f.event(conn, starts_at=NOW + timedelta(days=20), organizer_id=org)
        ticket = f.ticket(conn, event_id=event, order_id=f.order(conn, created_at=NOW - timedelta(days=5)))
        (claim_id,) = file_claims(conn, ticket_ids=[ticket], reason="illness", actor="buyer", now=NOW)
        number = conn.execute(select(claim_t.c.number).where(claim_t.c.id == claim_id)).scalar_one()
    apply_batch(engine, claim_ids=[claim_id], trigger="assess", actor="system", now=NOW)
    # Buyer endpoints take the operator's service key (or that order's buyer token, issue 10).
    service = {"Authorization": f"Bearer {create_service_key(engine, f'site-{claim_id}', now=NOW)}"}
    return {"engine": engine, "claim_id": claim_id, "number": number, "ticket_id": ticket, "token": issue_organizer_token(engine, org),
            "service": service}


def _is_russian(text: str) -> bool:
    return any("а" <= ch.lower() <= "я" for ch in text)


@pytest.mark.parametrize("big", [2**31, 2**63, 2**64 + 7])
def test_ids_at_or_above_2_31_are_422_on_every_endpoint_and_keep_the_connection(server, seeded, big):
    """Used to: 500 on every endpoint for an id >= 2**31 (PostgreSQL INTEGER overflow), connection dropped."""
    auth = {"Authorization": f"Bearer {seeded['token']}"}
    with httpx.Client(base_url=server, headers=auth, timeout=10) as client:
        for method, path, body in CLAIM_PATHS:
            r = client.request(method, path.format(id=big), json=body)
            assert r.status_code == 422, (path, r.status_code, r.text)
            (error,) = r.json()["detail"]
            assert error["loc"] == ["path", "claim_id"] and error["type"] == "less_than_equal"
            assert error["msg"] == "Значение больше допустимого (2147483647)."
            assert r.headers.get("connection") != "close"
        r = client.post("/claims", json={"ticket_id": big, "reason": "voluntary"}, headers=seeded["service"])
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "ticket_id"], r.text
        r = client.post("/organizer/decisions", json={"numbers": ["VZ-0000001-1", f"VZ {big}"], "decision": "approve"})
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "numbers", 1], r.text
        # Claims are read by number (or id): the largest valid id and an unknown number are simply not there.
        for ref in (str(2**31 - 1), f"VZ-{big}-1"):
            r = client.get(f"/organizer/claims/{ref}")
            assert r.status_code == 404 and r.json()["detail"][0]["msg"] == "Заявка не найдена."


@pytest.mark.parametrize(("path", "body", "field"), TEXT_FIELDS, ids=[f"{p}:{fld}" for p, _, fld in TEXT_FIELDS])
def test_control_characters_in_any_text_field_are_422_naming_the_field(server, seeded, path, body, field):
    """Used to: a NUL in any text field answered 500 on PostgreSQL ("text fields cannot contain NUL")."""
    auth = seeded["service"] if path.startswith("/claims") else {"Authorization": f"Bearer {seeded['token']}"}
    with httpx.Client(base_url=server, headers=auth, timeout=10) as client:
        path = path.format(id=seeded["claim_id"], number=seeded["number"])
        for bad in ("\x00", "\x1b[31m", "\x7f", "\x85"):  # NUL, ESC, DEL, NEL
            r = client.post(path, json={**body, field: f"Иван{bad}ов"})
            assert r.status_code == 422, (repr(bad), r.text)
            assert r.json()["detail"] == [{"loc": ["body", field], "msg": "Текст содержит управляющие символы (например, NUL); уберите их.",
                                           "type": "control_characters"}], repr(bad)
        # A lone surrogate (valid JSON escape, not storable text).
        r = client.post(path, content=json.dumps({**body, field: "Иван\ud800ов"}),
                        headers={"Content-Type": "application/json"})
        assert r.status_code == 422, r.text
        assert r.json()["detail"] == [{"loc": ["body", field], "msg": "Текст содержит недопустимые символы Юникода.", "type": "string_unicode"}]


def test_ordinary_text_with_line_breaks_and_tabs_is_accepted(server, seeded):
    r = httpx.post(f"{server}/claims/{seeded['number']}/documents", timeout=10, headers=seeded["service"],
                   json={"kind": "sick_leave_gosuslugi", "person_name": "Пётр Ёлкин", "filename": "больничный\tлист (копия).pdf"})
    assert r.status_code == 201, r.text
    with seeded["engine"].connect() as conn:
        stored = conn.execute(select(document_t.c.filename).where(document_t.c.claim_id == seeded["claim_id"])).scalar_one()
    assert stored == "больничный\tлист (копия).pdf"


def test_thirty_concurrent_uploads_to_one_claim_each_succeed_or_answer_409_and_no_201_is_lost(server, seeded):
    """Used to: 30 concurrent uploads to one claim lost 14 documents with 500s."""
    barrier = threading.Barrier(30)
    answers: list[httpx.Response] = []
    lock = threading.Lock()

    def upload(i: int) -> None:
        with httpx.Client(base_url=server, timeout=60, headers=seeded["service"]) as client:
            barrier.wait()
            r = client.post(f"/claims/{seeded['number']}/documents", json={"kind": "other", "filename": f"скан-{i}.pdf"})
        with lock:
            answers.append(r)

    threads = [threading.Thread(target=upload, args=(i,)) for i in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(answers) == 30
    statuses = sorted(r.status_code for r in answers)
    assert set(statuses) <= {201, 409}, [(r.status_code, r.text[:200]) for r in answers if r.status_code not in (201, 409)]
    accepted = {r.request.content for r in answers if r.status_code == 201}
    with seeded["engine"].connect() as conn:
        stored = conn.execute(select(document_t.c.filename).where(document_t.c.claim_id == seeded["claim_id"])).scalars().all()
    # Every 201 is a stored document and nothing else was stored.
    assert len(stored) == len(accepted) == statuses.count(201) >= 1
    assert sorted(stored) == sorted(httpx.Response(200, content=c).json()["filename"] for c in accepted)
    for r in answers:
        if r.status_code == 409:
            assert r.headers["content-type"] == "application/json" and _is_russian(r.json()["detail"][0]["msg"])
    # A 409 is safe to repeat: the claim now awaits the organizer and takes the document.
    r = httpx.post(f"{server}/claims/{seeded['number']}/documents", json={"kind": "other", "filename": "повтор.pdf"}, timeout=10,
                   headers=seeded["service"])
    assert r.status_code == 201 and r.json()["state"] == "awaiting_organizer", r.text


def test_bodies_that_are_not_utf8_or_nest_too_deep_are_422_not_400_or_500(server, seeded):
    """Used to: both answered a bare 400 "There was an error parsing the body" that no operation documents."""
    path = f"{server}/claims/{seeded['number']}/documents"
    for body, msg in ((b'{"kind": "other", "filename": "\xff\xfe"}', "Тело запроса — не JSON в кодировке UTF-8."),
                      (b"[" * 100_000 + b"]" * 100_000, "Слишком глубокая вложенность JSON.")):
        r = httpx.post(path, content=body, headers={"Content-Type": "application/json", **seeded["service"]}, timeout=30)
        assert r.status_code == 422, r.text
        assert r.json() == {"detail": [{"loc": ["body"], "msg": msg, "type": "json_invalid"}]}


def test_unknown_path_and_method_answer_json_in_the_one_error_shape(server):
    r = httpx.get(server + "/no-such-page", timeout=10)
    assert r.status_code == 404 and r.json() == {"detail": [{"loc": [], "msg": "Не найдено.", "type": "http_error"}]}
    r = httpx.delete(server + "/claims", timeout=10)
    assert r.status_code == 405 and r.json()["detail"][0]["msg"] == "Метод не поддерживается."


def test_every_operation_documents_its_error_codes_with_the_error_model():
    """Used to: only 200 and FastAPI's 422 were documented; 401/404/409/503 answers were undocumented."""
    schema = app.openapi()
    error_ref = {"$ref": "#/components/schemas/ErrorResponse"}
    for path, operations in schema["paths"].items():
        for method, op in operations.items():
            responses = op["responses"]
            assert "503" in responses, (method, path)
            for code, response in responses.items():
                if code.startswith(("4", "5")) and path != "/health":
                    assert response["content"]["application/json"]["schema"] == error_ref, (method, path, code)
            if method == "post":
                assert "409" in responses and "422" in responses, (method, path)
            if "{claim_id}" in path:
                assert "404" in responses, (method, path)
            if path.startswith("/organizer"):
                assert "401" in responses, (method, path)
    assert "Retry-After" in schema["paths"]["/claims"]["post"]["responses"]["503"]["headers"]
