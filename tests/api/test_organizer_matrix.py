"""The authorization matrix: every route of the app (read from `app.routes`, so a new route without a row
fails here) against every kind of caller: organizer A, organizer B, each staff role, a buyer token, the
operator's service key, no credentials, an expired session.

Each cell is the status the caller gets. Organizer B asking for organizer A's claim gets 404 with
exactly the body of a claim that does not exist. State-changing cells each act on a fresh claim.
"""
from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from unittest.mock import patch

import pytest
from fastapi.routing import iter_route_contexts

from models.db import get_engine
from states.regions import SUBJECT_TO_ISO
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
# The confirmation of A's claim for B: nothing B may decide is selected, so an error page (422), not «Заявок: 0».
PAGE_CONFIRM_A = cells(200, 422, 403, 200, 403, 303, 303, 303, 303)


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


# --- the routes merged after the organizer routes --------------------------------------------------

def _event(w: World, organizer: str = "a") -> int:
    from tests import factories as f

    with get_engine().begin() as conn:
        return f.event(conn, starts_at=organizer_world.NOW + timedelta(days=20), organizer_id=w.org_a if organizer == "a" else w.org_b,
                       title="Щелкунчик")


def _ticket(w: World) -> int:
    """A ticket of a fresh order for organizer A's event (not the buyer token's order)."""
    from tests import factories as f

    with get_engine().begin() as conn:
        return f.ticket(conn, event_id=w.event_a, order_id=f.order(conn, created_at=organizer_world.NOW - timedelta(days=30)))


def _post(path: Callable[[World], str] | str, json: dict | None = None):
    def call(w: World, caller: str):
        return w.client.post(path(w) if callable(path) else path, headers=w.callers[caller].headers, json=json)
    return call


def _buyer_form(path: Callable[[World], str] | str, form: dict, *, files=None):
    """A buyer page's form: its CSRF cookie and field (api/buyer_pages.py) sent along with the caller's own headers."""
    def call(w: World, caller: str):
        headers = dict(w.callers[caller].headers)
        headers["Cookie"] = "; ".join(c for c in (headers.get("Cookie"), "vz_csrf=matrix-csrf") if c)
        return w.client.post(path(w) if callable(path) else path, headers=headers, data=form | {"csrf": "matrix-csrf"}, files=files)
    return call


def _link(w: World) -> str:
    from tasks.buyer_links import status_link_token

    return status_link_token(_a_claim(w)[1], now=organizer_world.NOW)


_DEDUP = itertools.count()


def _fresh_mass_send(w: World) -> int:
    """A held mass send started by another supervisor: the matrix's supervisor is the second person."""
    from tasks.mass_sends import queue_mass_send

    payload = {"claim_number": "VZ-1", "event_title": "Концерт", "refund_kopecks": 100, "payout_deadline": "2026-12-20", "buyer_name": "А"}
    with get_engine().begin() as conn:
        mass_send_id = queue_mass_send(conn, template="decision_approved", started_by="staff:supervisor:first@operator.ru",
                                       now=organizer_world.NOW, messages=[(None, f"m{i}@example.ru", payload, f"matrix-{next(_DEDUP)}")
                                                                          for i in range(200)])
    assert mass_send_id is not None  # above the threshold: held
    return mass_send_id


def _rejected_mass_send(w: World) -> int:
    """A mass send rejected by another supervisor, its claimed recipients never told: the matrix's caller resends it."""
    from sqlalchemy import update

    from models.tables import OutboxMessage
    from tasks.auth import Principal
    from tasks.mass_sends import reject_mass_send

    mass_send_id = _fresh_mass_send(w)
    claim_id, _ = w.claim("a")
    outbox_t = OutboxMessage.__table__
    with get_engine().begin() as conn:
        first = conn.execute(outbox_t.select().where(outbox_t.c.mass_send_id == mass_send_id).order_by(outbox_t.c.id).limit(1)).first()
        conn.execute(update(outbox_t).where(outbox_t.c.id == first.id).values(claim_id=claim_id))
    reject_mass_send(get_engine(), mass_send_id, principal=Principal(kind="staff", audit="staff:supervisor:second@operator.ru", role="supervisor"),
                     now=organizer_world.NOW, note="не та формулировка")
    return mass_send_id


def _cancel(w: World, caller: str):
    async def started(**kw):
        return "run-matrix", "http://prefect.test/runs/run-matrix"

    with patch("api.events.start_run", started):
        return w.client.post(f"/events/{_event(w)}/cancellation", headers=w.callers[caller].headers, json={"reason": "Артист заболел"})


# A region of its own for each regime made here (a second regime in a region at the same dates is refused);
# 87 (Chukotka) is left for the POST /regimes row.
_REGIONS = iter([code for code in sorted(SUBJECT_TO_ISO) if code != "87"])


def _regime(w: World) -> int:
    from tasks.regimes import add_regime

    return add_regime(get_engine(), region=next(_REGIONS), starts_on=date(2026, 12, 1), ends_on=None,
                      actor="staff:supervisor:first@operator.ru", now=organizer_world.NOW).id


ORDER_IN = {"number": "K-OTHER"}  # the path says K-1000001: 422 for a caller let in, before anything is written
SERVICE_ONLY_422 = cells(403, 403, 403, 403, 403, 403, 422, 401, 401)
# Buyerish (api/auth.py): the buyer of the order or the operator's site; the buyer token's order is not the claim's.
BUYERISH = dict(organizer_a=403, organizer_b=403, support=403, supervisor=403, accounting=403, nobody=401, expired=401)
# The event's organizer, or a staff supervisor; another organizer's event is a missing one.
EVENT_A = cells(None, 404, 403, None, 403, 403, 403, 401, 401)
SUPERVISOR = cells(403, 403, 403, 200, 403, 403, 403, 401, 401)
STAFF_ANY = cells(403, 403, 200, 200, 200, 403, 403, 401, 401)
SERVICE_OR_STAFF = cells(403, 403, None, None, None, 403, None, 401, 401)


def _with(base: dict[str, int | None], ok: int) -> dict[str, int]:
    return {k: ok if v is None else v for k, v in base.items()}


def same_for_all(status: int) -> dict[str, int]:
    """A public route, or one whose credential is in the URL or the form: a bearer / session changes nothing."""
    return cells(*[status] * 9)


SESSION_FORM = cells(200, 200, 200, 200, 200, 403, 403, 403, 403)

MATRIX: dict[tuple[str, str], Row] = {
    ("GET", "/health"): Row(EVERYONE_200, _get("/health")),
    ("GET", "/openapi.json"): Row(EVERYONE_200, _get("/openapi.json")),
    ("GET", "/docs"): Row(EVERYONE_200, _get("/docs")),
    ("GET", "/static/docs/{name}"): Row(EVERYONE_200, _get("/static/docs/swagger-ui.css")),
    ("GET", "/redoc"): Row(EVERYONE_200, _get("/redoc")),
    # Buyers' API (api/buyer.py): Buyerish; a claim or ticket of another order is a missing one (404).
    ("POST", "/claims"): Row(BUYERISH | dict(buyer=404, service=201), lambda w, c: w.client.post(
        "/claims", headers=w.callers[c].headers, json={"ticket_id": _ticket(w), "reason": "voluntary"})),
    ("GET", "/claims/{number}"): Row(BUYERISH | dict(buyer=404, service=200), lambda w, c: w.client.get(
        f"/claims/{_a_claim(w)[1]}", headers=w.callers[c].headers)),
    ("POST", "/claims/{number}/documents"): Row(BUYERISH | dict(buyer=404, service=201), lambda w, c: w.client.post(
        f"/claims/{_a_claim(w)[1]}/documents", headers=w.callers[c].headers, json={"kind": "other"})),
    ("POST", "/claims/{number}/bank-details"): Row(BUYERISH | dict(buyer=404, service=409), lambda w, c: w.client.post(
        f"/claims/{_a_claim(w)[1]}/bank-details", headers=w.callers[c].headers,
        json={"bik": "044525225", "account": "40817810938160925982", "name": "Петров Пётр"})),
    ("POST", "/claims/{number}/withdrawal"): Row(BUYERISH | dict(buyer=404, service=200), lambda w, c: w.client.post(
        f"/claims/{_a_claim(w)[1]}/withdrawal", headers=w.callers[c].headers, json={"reason": "Передумал"})),
    # Buyer sign-in (public by design: the same answer whoever asks, revealing no order).
    ("POST", "/buyer/session"): Row(same_for_all(202), _post("/buyer/session", {"order_number": "ORD-999999", "email": "x@example.ru"})),
    ("POST", "/buyer/session/verify"): Row(same_for_all(422), _post("/buyer/session/verify", {"order_number": "ORD-999999", "code": "000000"})),
    # Buyer pages: the buyer's own session cookie (vz_buyer) or nothing; bearer tokens and organizer sessions are not it.
    ("GET", "/buyer"): Row(EVERYONE_200, _get("/buyer")),
    ("POST", "/buyer/sign-in"): Row(EVERYONE_200, _buyer_form("/buyer/sign-in", {"order_number": "ORD-999999", "email": "x@example.ru"})),
    ("POST", "/buyer/sign-in/code"): Row(same_for_all(422), _buyer_form("/buyer/sign-in/code", {"order_number": "ORD-999999", "code": "000000"})),
    ("POST", "/buyer/sign-out"): Row(same_for_all(303), _buyer_form("/buyer/sign-out", {})),
    ("POST", "/buyer/claims"): Row(same_for_all(401), _buyer_form(lambda w: "/buyer/claims", {"ticket_id": "1", "reason": "voluntary"})),
    # Status pages: the signed link is the credential (a forged or expired one: test_a_forged_or_expired_link_is_refused).
    ("GET", "/s/{link}"): Row(EVERYONE_200, lambda w, c: w.client.get(f"/s/{_link(w)}", headers=w.callers[c].headers)),
    ("POST", "/s/{link}/documents"): Row(same_for_all(303), lambda w, c: _buyer_form(
        f"/s/{_link(w)}/documents", {"kind": "other"}, files={"file": ("справка.pdf", organizer_world.PDF, "application/pdf")})(w, c)),
    ("POST", "/s/{link}/bank-details"): Row(same_for_all(409), lambda w, c: _buyer_form(
        f"/s/{_link(w)}/bank-details", {"bik": "044525225", "account": "40817810938160925982", "name": "Петров Пётр"})(w, c)),
    ("POST", "/s/{link}/withdrawal"): Row(same_for_all(303), lambda w, c: _buyer_form(f"/s/{_link(w)}/withdrawal", {"confirm": "yes", "reason": "Передумал"})(w, c)),
    # Events: the event's organizer or a staff supervisor (api/events.py, api/regimes.py).
    ("POST", "/events/{event_id}/cancellation"): Row(_with(EVENT_A, 202), _cancel),
    ("POST", "/events/{event_id}/postponement"): Row(_with(EVENT_A, 201), lambda w, c: w.client.post(
        f"/events/{_event(w)}/postponement", headers=w.callers[c].headers, json={"note": "Дата будет объявлена позже"})),
    ("POST", "/events/{event_id}/vouchers"): Row(_with(EVENT_A, 409), _post(lambda w: f"/events/{_event(w)}/vouchers")),
    ("GET", "/events/{event_id}/changes"): Row(cells(200, 404, 200, 200, 200, 403, 403, 401, 401), lambda w, c: w.client.get(
        f"/events/{w.event_a}/changes", headers=w.callers[c].headers)),
    # Regimes: staff.
    ("GET", "/regimes"): Row(STAFF_ANY, _get("/regimes")),
    ("POST", "/regimes"): Row(_with(SUPERVISOR, 201) | dict(supervisor=201), lambda w, c: w.client.post(
        "/regimes", headers=w.callers[c].headers, json={"region": "87", "starts_on": "2026-12-01"})),
    ("POST", "/regimes/{regime_id}/end"): Row(SUPERVISOR, lambda w, c: w.client.post(
        f"/regimes/{_regime(w)}/end", headers=w.callers[c].headers, json={"ends_on": "2026-12-31"})),
    # Vouchers: the buyer (or the site for them) asks; the sales system's key or staff read and redeem.
    ("POST", "/vouchers"): Row(BUYERISH | dict(buyer=404, service=409), lambda w, c: w.client.post(
        "/vouchers", headers=w.callers[c].headers, json={"ticket_id": _ticket(w)})),
    ("GET", "/vouchers/{number}"): Row(_with(SERVICE_OR_STAFF, 404), _get("/vouchers/VCH-NOPE-1")),
    ("POST", "/vouchers/{number}/redemption"): Row(_with(SERVICE_OR_STAFF, 404), lambda w, c: w.client.post(
        "/vouchers/VCH-NOPE-1/redemption", headers=w.callers[c].headers, json={"event_id": w.event_a})),
    # The outbound-mail kill switch: staff supervisors (released here: holding it would hold the world's mail).
    ("GET", "/mail/switch"): Row(SUPERVISOR, _get("/mail/switch")),
    ("POST", "/mail/switch"): Row(SUPERVISOR, _post("/mail/switch", json={"held": False})),
    # Mass sends: staff supervisors; approved or rejected by a second one.
    ("GET", "/mass-sends"): Row(SUPERVISOR, _get("/mass-sends")),
    ("GET", "/mass-sends/{mass_send_id}"): Row(SUPERVISOR, lambda w, c: w.client.get(f"/mass-sends/{_fresh_mass_send(w)}", headers=w.callers[c].headers)),
    ("POST", "/mass-sends/{mass_send_id}/approve"): Row(SUPERVISOR, _post(lambda w: f"/mass-sends/{_fresh_mass_send(w)}/approve")),
    ("POST", "/mass-sends/{mass_send_id}/reject"): Row(SUPERVISOR, _post(lambda w: f"/mass-sends/{_fresh_mass_send(w)}/reject")),
    ("POST", "/mass-sends/{mass_send_id}/resend"): Row(cells(403, 403, 201, 201, 403, 403, 403, 401, 401),
                                                      _post(lambda w: f"/mass-sends/{_rejected_mass_send(w)}/resend")),
    ("GET", "/mass-sends/buyer-not-told"): Row(STAFF_ANY, _get("/mass-sends/buyer-not-told")),
    # The operator's sales feed: the service key only.
    ("PUT", "/operator/orders/{order_number}"): Row(SERVICE_ONLY_422, lambda w, c: w.client.put(
        "/operator/orders/K-1000001", headers=w.callers[c].headers, json=ORDER_IN)),
    # Claims by email: the signed token or the emailed code is the credential.
    ("GET", "/inbound/confirm/{token}"): Row(same_for_all(404), _get("/inbound/confirm/forged.token.here")),
    ("POST", "/inbound/confirm/{token}"): Row(same_for_all(404), _post("/inbound/confirm/forged.token.here")),
    ("GET", "/inbound/confirm"): Row(EVERYONE_200, _get("/inbound/confirm")),
    ("POST", "/inbound/confirm"): Row(same_for_all(422), lambda w, c: w.client.post(
        "/inbound/confirm", headers=w.callers[c].headers, data={"reference": "999999", "code": "000000"})),
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
    ("POST", "/organizer/confirm"): Row(PAGE_CONFIRM_A, _page_confirm),
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


def test_a_forged_or_expired_link_is_refused_whoever_calls(world):
    """The signed link is the credential of /s/… and /inbound/confirm/…: forged or expired, no header helps."""
    from tasks.buyer_links import status_link_token

    _, number = world.claim("a")
    good = status_link_token(number, now=organizer_world.NOW)
    forged = good[:-4] + ("AAAA" if not good.endswith("AAAA") else "BBBB")
    expired = status_link_token(number, now=organizer_world.NOW - timedelta(days=365))
    for caller in ("organizer_a", "supervisor", "buyer", "service", "nobody"):
        headers = world.callers[caller].headers
        r = world.client.get(f"/s/{forged}", headers=headers)
        assert r.status_code == 404 and number not in r.text
        r = world.client.get(f"/s/{expired}", headers=headers)
        assert r.status_code == 410 and number not in r.text
        r = _buyer_form(f"/s/{forged}/withdrawal", {"confirm": "yes"})(world, caller)
        assert r.status_code == 404
        assert world.client.get("/inbound/confirm/forged.token", headers=headers).status_code == 404
        assert world.client.post("/inbound/confirm/forged.token", headers=headers).status_code == 404
    # Nothing was withdrawn by the forged posts.
    assert world.client.get(f"/organizer/claims/{number}", headers=world.callers["organizer_a"].headers).json()["state"] == "awaiting_organizer"


def test_the_buyer_token_reaches_its_own_order_only(world):
    """The matrix's buyer gets 404 for other orders' claims; its own order's ticket it may claim and read."""
    b = world.callers["buyer"].headers
    r = world.client.post("/claims", headers=b, json={"ticket_id": world.buyer_ticket, "reason": "voluntary"})
    assert r.status_code == 201, r.text
    number = r.json()["number"]
    assert world.client.get(f"/claims/{number}", headers=b).status_code == 200
    # Organizer B and a bearer token for the organizer routes do not reach it either.
    assert world.client.get(f"/claims/{number}", headers=world.callers["organizer_b"].headers).status_code == 403
    assert world.client.get(f"/organizer/claims/{number}", headers=world.callers["organizer_b"].headers).status_code == 404
