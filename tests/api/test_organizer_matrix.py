"""The authorization matrix: every route of the app (read from `app.routes`, so a new route without a row
fails here) against every kind of caller: organizer A, organizer B, each staff role, a buyer token, the
operator's service key, no credentials, an expired session.

Each cell is the status the caller gets. Organizer B asking for organizer A's claim gets 404 with
exactly the body of a claim that does not exist. State-changing cells each act on a fresh claim.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from fastapi.routing import iter_route_contexts

from models.db import get_engine
from tasks.accounts import disable_user
from tests.api import organizer_world
from tests.api.organizer_world import PASSWORD, World

world = organizer_world.world  # the fixture

CALLERS = ("organizer_a", "organizer_b", "support", "supervisor", "accounting", "buyer", "service", "nobody", "expired")


def cells(organizer_a, organizer_b, support, supervisor, accounting, buyer, service, nobody, expired) -> dict[str, int]:
    return dict(zip(CALLERS, (organizer_a, organizer_b, support, supervisor, accounting, buyer, service, nobody, expired)))


EVERYONE_200 = cells(*[200] * 9)
# Reads of organizer A's claims: A and reading staff; B is told the claim does not exist.
READ_A = cells(200, 404, 200, 200, 403, 403, 403, 401, 401)
READ_LIST = cells(200, 200, 200, 200, 403, 403, 403, 401, 401)
# Decisions on A's claim: A and a supervisor.
DECIDE_A = cells(200, 404, 403, 200, 403, 403, 403, 401, 401)
# Bulk by number: B's call succeeds but decides nothing ("not found" for A's claim).
BULK_A = cells(200, 200, 403, 200, 403, 403, 403, 401, 401)
# Pages: signed out (bearer tokens are not sessions) -> the login page; an expired session likewise, saying so.
PAGE_LIST = cells(200, 200, 200, 200, 403, 303, 303, 303, 303)
PAGE_CLAIM_A = cells(200, 404, 200, 200, 403, 303, 303, 303, 303)
PAGE_DECIDE_A = cells(200, 200, 403, 200, 403, 303, 303, 303, 303)


@dataclass
class Row:
    expected: dict[str, int]
    call: Callable[[World, str], object]  # (world, caller) -> response


def _a_claim(w: World, reason: str = "other") -> tuple[int, str]:
    return w.claim("a", reason)


def _get(path: str):
    def call(w: World, caller: str):
        return w.client.get(path, headers=w.callers[caller].headers)
    return call


def _read_claim(w: World, caller: str):
    _, number = _a_claim(w)
    return w.client.get(f"/organizer/claims/{number}", headers=w.callers[caller].headers)


def _read_document(w: World, caller: str):
    claim_id, number = _a_claim(w)
    doc = w.stored_document(claim_id)
    return w.client.get(f"/organizer/claims/{number}/documents/{doc}", headers=w.callers[caller].headers)


def _decide(w: World, caller: str):
    claim_id, _ = _a_claim(w)
    return w.client.post(f"/organizer/claims/{claim_id}/decision", headers=w.callers[caller].headers, json={"decision": "approve"})


def _extend(w: World, caller: str):
    claim_id, _ = _a_claim(w)
    return w.client.post(f"/organizer/claims/{claim_id}/extension", headers=w.callers[caller].headers, json={"reason": "Запросили справку"})


def _false_documents(w: World, caller: str):
    claim_id, _ = _a_claim(w, "illness")
    return w.client.post(f"/organizer/claims/{claim_id}/false-documents", headers=w.callers[caller].headers,
                         json={"note": "Номер больничного не существует"})


def _bulk(w: World, caller: str):
    _, number = _a_claim(w)
    return w.client.post("/organizer/decisions", headers=w.callers[caller].headers, json={"numbers": [number], "decision": "approve"})


def _form(w: World, caller: str, path: str, form: dict):
    return w.client.post(path, headers=w.callers[caller].headers, data=w.callers[caller].with_csrf(form))


def _page_claim(w: World, caller: str):
    _, number = _a_claim(w)
    return w.client.get(f"/organizer/claim/{number}", headers=w.callers[caller].headers)


def _page_confirm(w: World, caller: str):
    _, number = _a_claim(w)
    return _form(w, caller, "/organizer/confirm", {"numbers": [number], "decision": "approve"})


def _page_decide(w: World, caller: str):
    _, number = _a_claim(w)
    return _form(w, caller, "/organizer/decide", {"numbers": [number], "decision": "approve", "idempotency_key": f"k-{caller}"})


def _login(w: World, caller: str):
    # A wrong password with the session's CSRF token: 401 on the page; without a CSRF token (no session): 403.
    return _form(w, caller, "/organizer/login", {"login": "anna@a.ru", "password": "not the password"})


def _logout(w: World, caller: str):
    return _form(w, caller, "/organizer/logout", {})


SESSION_FORM = cells(200, 200, 200, 200, 200, 403, 403, 403, 403)

MATRIX: dict[tuple[str, str], Row] = {
    ("GET", "/health"): Row(EVERYONE_200, _get("/health")),
    ("GET", "/openapi.json"): Row(EVERYONE_200, _get("/openapi.json")),
    ("GET", "/docs"): Row(EVERYONE_200, _get("/docs")),
    ("GET", "/docs/oauth2-redirect"): Row(EVERYONE_200, _get("/docs/oauth2-redirect")),
    ("GET", "/redoc"): Row(EVERYONE_200, _get("/redoc")),
    # Buyers' routes (issue 10 scopes them to the buyer): an unknown ticket / claim / email is 404 for everyone.
    ("POST", "/claims"): Row(cells(*[404] * 9), lambda w, c: w.client.post("/claims", headers=w.callers[c].headers,
                                                                          json={"ticket_id": 2**31 - 1, "reason": "voluntary"})),
    ("POST", "/claims/{claim_id}/documents"): Row(cells(*[404] * 9), lambda w, c: w.client.post(
        f"/claims/{2**31 - 1}/documents", headers=w.callers[c].headers, json={"kind": "other"})),
    ("POST", "/claims/{number}/withdrawal"): Row(cells(*[404] * 9), lambda w, c: w.client.post(
        f"/claims/{_a_claim(w)[1]}/withdrawal", headers=w.callers[c].headers, json={"email": "someone.else@example.ru"})),
    ("GET", "/organizer/claims"): Row(READ_LIST, _get("/organizer/claims")),
    ("GET", "/organizer/claims/{number}"): Row(READ_A, _read_claim),
    ("GET", "/organizer/claims/{number}/documents/{doc_id}"): Row(READ_A, _read_document),
    ("POST", "/organizer/claims/{claim_id}/decision"): Row(DECIDE_A, _decide),
    ("POST", "/organizer/claims/{claim_id}/extension"): Row(DECIDE_A, _extend),
    ("POST", "/organizer/claims/{claim_id}/false-documents"): Row(DECIDE_A, _false_documents),
    ("POST", "/organizer/decisions"): Row(BULK_A, _bulk),
    ("GET", "/organizer/login"): Row(EVERYONE_200, _get("/organizer/login")),
    ("POST", "/organizer/login"): Row(cells(401, 401, 401, 401, 401, 403, 403, 403, 403), _login),
    ("POST", "/organizer/logout"): Row(cells(303, 303, 303, 303, 303, 403, 403, 403, 403), _logout),
    ("GET", "/organizer"): Row(PAGE_LIST, _get("/organizer")),
    ("GET", "/organizer/claim/{number}"): Row(PAGE_CLAIM_A, _page_claim),
    ("POST", "/organizer/confirm"): Row(PAGE_DECIDE_A, _page_confirm),
    ("POST", "/organizer/decide"): Row(PAGE_DECIDE_A, _page_decide),
}


def app_routes() -> set[tuple[str, str]]:
    from api.app import app

    return {(method, route.path) for route in iter_route_contexts(app.routes) for method in (route.methods or ()) if method != "HEAD"}


def test_every_route_of_the_app_has_a_row():
    """A route added without deciding who may call it fails here."""
    assert app_routes() == set(MATRIX), {"missing rows": app_routes() - set(MATRIX), "stale rows": set(MATRIX) - app_routes()}


@pytest.mark.parametrize("route", sorted(MATRIX), ids=[f"{m} {p}" for m, p in sorted(MATRIX)])
def test_the_matrix(world, route):
    row = MATRIX[route]
    got = {caller: row.call(world, caller).status_code for caller in CALLERS}
    assert got == row.expected


def test_another_organizers_claim_is_404_and_reveals_nothing(world):
    claim_id, number = world.claim("a", "illness")
    doc = world.stored_document(claim_id)
    b = world.callers["organizer_b"].headers
    missing = world.client.get("/organizer/claims/VZ-9999999-1", headers=b)
    theirs = world.client.get(f"/organizer/claims/{number}", headers=b)
    assert theirs.status_code == missing.status_code == 404 and theirs.json() == missing.json()
    by_id = world.client.get(f"/organizer/claims/{claim_id}", headers=b)
    assert by_id.status_code == 404 and by_id.json() == missing.json()
    r = world.client.get(f"/organizer/claims/{number}/documents/{doc}", headers=b)
    assert r.status_code == 404 and r.content != b"" and b"%PDF" not in r.content
    assert world.client.get("/organizer/claims/VZ-9999999-1/documents/999999", headers=b).json() == r.json()
    # The list leaves them out, and so does the page; a bulk decision says "not found", like a typo.
    assert number not in world.client.get("/organizer/claims", headers=b).text
    assert number not in world.client.get("/organizer", headers=b).text
    page = world.client.get(f"/organizer/claim/{number}", headers=b)
    assert page.status_code == 404 and "Петров" not in page.text
    r = world.client.post("/organizer/decisions", headers={"Authorization": b["Authorization"]}, json={"numbers": [number], "decision": "approve"})
    assert r.json()["results"] == [{"number": number, "outcome": "refused", "state": None, "type": "not_found", "msg": "Заявка не найдена."}]
    # Organizer A sees it all.
    a = world.callers["organizer_a"].headers
    assert world.client.get(f"/organizer/claims/{number}/documents/{doc}", headers=a).content.startswith(b"%PDF")


def test_an_expired_session_is_sent_to_sign_in_again_and_a_disabled_user_is_signed_out(world):
    r = world.client.get("/organizer", headers=world.callers["expired"].headers)
    assert r.status_code == 303 and "expired=1" in r.headers["location"]
    assert "Сессия истекла" in world.client.get(r.headers["location"]).text
    disable_user(get_engine(), "anna@a.ru", now=datetime.now(UTC))
    assert world.client.get("/organizer", headers={"Cookie": world.callers["organizer_a"].headers["Cookie"]}).status_code == 303
    assert world.client.get("/organizer/claims", headers={"Authorization": world.callers["organizer_a"].headers["Authorization"]}).status_code == 401


def test_signing_in_sets_a_signed_httponly_lax_cookie_and_a_cross_site_form_is_refused(world):
    c = world.client
    login_page = c.get("/organizer/login")
    cookie = login_page.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/organizer" in cookie and "Max-Age=" in cookie
    assert "Secure" not in cookie  # plain http in the test; https sets Secure
    csrf = login_page.text.split('name="csrf" value="')[1].split('"')[0]
    session = cookie.split(";")[0]
    r = c.post("/organizer/login", headers={"Cookie": session}, data={"csrf": csrf, "login": "anna@a.ru", "password": PASSWORD, "next": "/organizer"})
    assert r.status_code == 303 and r.headers["location"] == "/organizer"
    signed_in = r.headers["set-cookie"].split(";")[0]
    assert signed_in != session  # a new session (and CSRF token) at sign-in
    assert c.get("/organizer", headers={"Cookie": signed_in}).status_code == 200
    # A form without the session's CSRF token (a cross-site post) changes nothing.
    _, number = world.claim("a")
    r = c.post("/organizer/decide", headers={"Cookie": signed_in}, data={"numbers": [number], "decision": "approve", "csrf": "forged"})
    assert r.status_code == 403
    assert c.get(f"/organizer/claims/{number}", headers={"Cookie": signed_in}).json()["state"] == "awaiting_organizer"
    # The cookie is not a bearer for JSON decisions.
    assert c.post("/organizer/decisions", headers={"Cookie": signed_in}, json={"numbers": [number], "decision": "approve"}).status_code == 401
    # An open redirect through `next` is not possible.
    r = c.post("/organizer/login", headers={"Cookie": session}, data={"csrf": csrf, "login": "anna@a.ru", "password": PASSWORD,
                                                                       "next": "https://evil.example/"})
    assert r.headers["location"] == "/organizer"
