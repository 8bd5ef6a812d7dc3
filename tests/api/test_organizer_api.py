"""The organizers' read and decide API: the list (filters, deadlines in working days, paging), one claim in
full, and the bulk decision by number (idempotent, per-claim results, audit naming the user, resumes queued)."""
from __future__ import annotations

from datetime import date, timedelta

from sqlalchemy import func, select

from models.claim_store import audit_t, claim_t
from models.db import get_engine
from models.tables import BulkDecision, RunAction
from tests.api import organizer_world
from tests.api.organizer_world import NOW, World

world = organizer_world.world  # the fixture


def _auth(w: World, who: str) -> dict[str, str]:
    return {"Authorization": w.callers[who].headers["Authorization"]}


def _audit(claim_id: int) -> list[tuple]:
    with get_engine().connect() as conn:
        return [tuple(r) for r in conn.execute(select(audit_t.c.trigger, audit_t.c.to_state, audit_t.c.actor)
                                                .where(audit_t.c.claim_id == claim_id).order_by(audit_t.c.id))]


def test_the_list_filters_by_event_reason_state_and_deadline_newest_deadline_first_and_pages(world):
    # NOW is Tuesday 8 December 2026. Deadlines: overdue (Friday 4th), today, in 2 and in 6 working days.
    overdue = world.claim("a", decision_due=date(2026, 12, 4))
    today = world.claim("a", decision_due=date(2026, 12, 8))
    soon = world.claim("a", decision_due=date(2026, 12, 10))
    later_other_event = world.claim("a", "illness", days_to_event=25, decision_due=date(2026, 12, 16))
    world.claim("b")  # organizer B's: never in A's list
    a = _auth(world, "organizer_a")
    body = world.client.get("/organizer/claims", headers=a).json()
    assert body["total"] == 4
    assert [i["number"] for i in body["items"]] == [later_other_event[1], soon[1], today[1], overdue[1]]
    by_number = {i["number"]: i for i in body["items"]}
    assert by_number[overdue[1]]["working_days_left"] == -2 and by_number[overdue[1]]["overdue"] is True  # Mon 7th, Tue 8th
    assert by_number[today[1]]["working_days_left"] == 0 and by_number[today[1]]["overdue"] is False
    assert by_number[soon[1]]["working_days_left"] == 2
    assert by_number[later_other_event[1]]["working_days_left"] == 6
    assert by_number[soon[1]]["buyer_name"] == "Петров Пётр" and by_number[soon[1]]["organizer_name"] == "Агентство А"

    def numbers(**params) -> list[str]:
        r = world.client.get("/organizer/claims", headers=a, params=params)
        assert r.status_code == 200, r.text
        return [i["number"] for i in r.json()["items"]]

    assert numbers(overdue="true") == [overdue[1]]
    assert numbers(due_within_days=2) == [soon[1], today[1], overdue[1]]
    assert numbers(due_within_days=0) == [today[1], overdue[1]]
    assert numbers(reason="illness") == [later_other_event[1]]
    assert numbers(event_id=world.event_a) == [soon[1], today[1], overdue[1]]
    assert numbers(state="approved") == []
    # Support reads every organizer's waiting claims.
    assert world.client.get("/organizer/claims", headers=_auth(world, "support")).json()["total"] == 5

    # Pages of two, by cursor, cover the list once, in order.
    seen, cursor = [], None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        page = world.client.get("/organizer/claims", headers=a, params=params).json()
        seen += [i["number"] for i in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == [i["number"] for i in body["items"]]

    r = world.client.get("/organizer/claims", headers=a, params={"cursor": "bm90LWEtY3Vyc29y", "due_within_days": 99})
    assert r.status_code == 422
    assert {e["loc"][-1] for e in r.json()["detail"]} == {"due_within_days"}
    r = world.client.get("/organizer/claims", headers=a, params={"cursor": "bm90LWEtY3Vyc29y"})
    assert r.status_code == 422 and r.json()["detail"] == [{"loc": ["query", "cursor"], "msg": "Неверный курсор страницы.", "type": "value_error"}]


def test_one_claim_has_its_reason_documents_amount_rule_deadline_version_and_history(world):
    claim_id, number = world.claim("a", "illness")
    doc = world.stored_document(claim_id)
    r = world.client.get(f"/organizer/claims/{number}", headers=_auth(world, "organizer_a"))
    assert r.status_code == 200, r.text
    c = r.json()
    assert c["number"] == number and c["reason"] == "illness" and c["state"] == "awaiting_organizer" and c["version"] == 2
    assert c["buyer_name"] == "Петров Пётр" and c["event_title"] == "Щелкунчик"
    assert c["amount"]["amount_kopecks"] == 350000 and c["amount"]["quote"]["percent"] == 100
    assert "Постановление" in c["amount"]["basis_ru"] or "1491" in c["amount"]["basis_ru"]
    assert c["decision_due"] and c["working_days_left"] == 10
    assert [h["to"] for h in c["history"]] == ["filed", "awaiting_organizer"]
    docs = {d["id"]: d for d in c["documents"]}
    assert docs[doc]["download_url"] == f"/organizer/claims/{number}/documents/{doc}" and docs[doc]["content_type"] == "application/pdf"
    assert [d["download_url"] for d in c["documents"] if d["id"] != doc] == [None]  # the facts-only document has no file
    f = world.client.get(docs[doc]["download_url"], headers=_auth(world, "organizer_a"))
    assert f.status_code == 200 and f.headers["content-type"] == "application/pdf" and f.content.startswith(b"%PDF")
    assert "attachment" in f.headers["content-disposition"]
    # By id too (older clients), with `version` usable as expected_version.
    assert world.client.get(f"/organizer/claims/{claim_id}", headers=_auth(world, "organizer_a")).json()["number"] == number
    r = world.client.post(f"/organizer/claims/{claim_id}/decision", headers=_auth(world, "organizer_a"),
                          json={"decision": "approve", "expected_version": c["version"] - 1})
    assert r.status_code == 409


def test_a_bulk_decision_approves_what_it_may_explains_the_rest_and_names_the_user(world):
    waiting = [world.claim("a") for _ in range(3)]
    decided_before = world.claim("a")
    world.client.post("/organizer/decisions", headers=_auth(world, "organizer_a"),
                      json={"numbers": [decided_before[1]], "decision": "reject", "note": "Нет оснований", "reason_code": "ORGANIZER_REFUSED"})
    theirs = world.claim("b")
    numbers = [n for _, n in waiting] + [decided_before[1], theirs[1], "VZ-0000000-9"]
    r = world.client.post("/organizer/decisions", headers=_auth(world, "organizer_a") | {"Idempotency-Key": "batch-1"},
                          json={"numbers": numbers, "decision": "approve", "amounts": {waiting[0][1]: 100000}})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["requested"], body["decided"], body["refused"]) == (6, 3, 3)
    assert body["approved_kopecks"] == 100000 + 2 * 350000 and body["approved_rub"] == "8000.00"
    assert body["resumes_queued"] == 3 and body["decided_by"] == f"organizer:{world.org_a}:user:anna@a.ru"
    results = {x["number"]: x for x in body["results"]}
    assert all(results[n]["outcome"] == "decided" and results[n]["state"] == "approved" for _, n in waiting)
    assert results[decided_before[1]]["type"] == "already_decided"
    assert results[theirs[1]] == results["VZ-0000000-9"] | {"number": theirs[1]}  # another organizer's: exactly like a missing one
    for claim_id, _ in waiting:
        assert _audit(claim_id)[-1] == ("approve", "approved", f"organizer:{world.org_a}:user:anna@a.ru")
    with get_engine().connect() as conn:
        assert conn.execute(select(claim_t.c.approved_amount).where(claim_t.c.id == waiting[0][0])).scalar_one() == 100000
        resumes = conn.execute(select(func.count()).select_from(RunAction).where(
            RunAction.claim_id.in_([i for i, _ in waiting]), RunAction.kind == "resume")).scalar_one()
    assert resumes == 3

    # The same key and body: the stored answer, nothing applied twice.
    again = world.client.post("/organizer/decisions", headers=_auth(world, "organizer_a") | {"Idempotency-Key": "batch-1"},
                              json={"numbers": numbers, "decision": "approve", "amounts": {waiting[0][1]: 100000}})
    assert again.status_code == 200 and again.json() == body and again.headers["idempotent-replayed"] == "true"
    # The same key, another body: 422 naming the header.
    other = world.client.post("/organizer/decisions", headers=_auth(world, "organizer_a") | {"Idempotency-Key": "batch-1"},
                              json={"numbers": numbers[:1], "decision": "approve"})
    assert other.status_code == 422 and other.json()["detail"][0]["loc"] == ["header", "idempotency-key"]
    # Another caller's key space is its own.
    mine = world.client.post("/organizer/decisions", headers=_auth(world, "supervisor") | {"Idempotency-Key": "batch-1"},
                             json={"numbers": [theirs[1]], "decision": "extend", "note": "Проверяем документы у артиста"})
    assert mine.status_code == 200 and mine.json()["decided"] == 1
    with get_engine().connect() as conn:
        assert conn.execute(select(func.count()).select_from(BulkDecision)).scalar_one() == 2
    assert _audit(theirs[0])[-1] == ("extend_review", "awaiting_organizer", "staff:supervisor:ivan@operator.ru")


def test_reject_and_extend_in_bulk_need_a_reason_and_carry_it(world):
    a = _auth(world, "organizer_a")
    first, second = world.claim("a"), world.claim("a")
    r = world.client.post("/organizer/decisions", headers=a, json={"numbers": [first[1]], "decision": "reject"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"][-1] == "note"
    r = world.client.post("/organizer/decisions", headers=a, json={"numbers": [first[1]], "decision": "reject", "note": "x", "reason_code": "MAYBE"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "reason_code"]
    r = world.client.post("/organizer/decisions", headers=a, json={"numbers": [first[1]], "decision": "reject",
                                                                    "note": "Документы не подтверждают болезнь", "reason_code": "DOCUMENTS_INSUFFICIENT"})
    assert r.json()["decided"] == 1
    with get_engine().connect() as conn:
        row = conn.execute(select(claim_t.c.refusal_code, claim_t.c.refusal_message).where(claim_t.c.id == first[0])).one()
    assert tuple(row) == ("DOCUMENTS_INSUFFICIENT", "Документы не подтверждают болезнь")

    r = world.client.post("/organizer/decisions", headers=a, json={"numbers": [second[1]], "decision": "extend", "note": "Ждём ответа клиники"})
    assert r.json()["decided"] == 1 and r.json()["resumes_queued"] == 0  # an extension keeps the run waiting
    c = world.client.get(f"/organizer/claims/{second[1]}", headers=a).json()
    assert c["extended"] is True and c["extension_reason"] == "Ждём ответа клиники" and c["working_days_left"] == 20
    r = world.client.post("/organizer/decisions", headers=a, json={"numbers": [second[1]], "decision": "extend", "note": "Ещё раз"})
    assert r.json()["results"][0]["type"] == "ALREADY_EXTENDED"

    r = world.client.post("/organizer/decisions", headers=a, json={"numbers": ["VZ-1"] * 10_001, "decision": "approve"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "numbers"]
    r = world.client.post("/organizer/decisions", headers=a, json={"numbers": [], "decision": "approve"})
    assert r.status_code == 422


def test_the_page_lists_confirms_with_count_and_money_then_shows_each_result(world):
    a = world.callers["organizer_a"]
    claims = [world.claim("a") for _ in range(3)]
    overdue = world.claim("a", decision_due=NOW.date() - timedelta(days=7))
    page = world.client.get("/organizer", headers=a.headers)
    assert page.status_code == 200 and all(n in page.text for _, n in claims)
    assert 'class="overdue"' in page.text and "просрочено на 5 раб. дн." in page.text
    assert page.headers["cache-control"] == "no-store"
    assert "anna@a.ru" in page.text and f"organizer:{world.org_a}:user:" not in page.text  # the login, not the audit form
    numbers = [n for _, n in claims] + [overdue[1]]
    confirm = world.client.post("/organizer/confirm", headers=a.headers, data=a.with_csrf({"numbers": numbers, "decision": "approve"}))
    assert confirm.status_code == 200
    assert '<strong id="confirm-count">4</strong>' in confirm.text and "14 000,00 ₽" in confirm.text
    key = confirm.text.split('name="idempotency_key" value="')[1].split('"')[0]
    form = a.with_csrf({"numbers": numbers, "decision": "approve", "idempotency_key": key})
    done = world.client.post("/organizer/decide", headers=a.headers, data=form)
    assert done.status_code == 200 and '<strong id="decided-count">4</strong>' in done.text
    # A double submit shows the same result and decides nothing again.
    twice = world.client.post("/organizer/decide", headers=a.headers, data=form)
    assert twice.status_code == 200 and "уже было принято" in twice.text
    assert _audit(claims[0][0]).count(("approve", "approved", f"organizer:{world.org_a}:user:anna@a.ru")) == 1
    r = world.client.post("/organizer/confirm", headers=a.headers, data=a.with_csrf({"numbers": numbers, "decision": "reject"}))
    assert r.status_code == 422 and "Укажите причину" in r.text


def test_the_claim_page_names_documents_in_russian_and_a_malformed_number_is_a_not_found_page(world):
    a = world.callers["organizer_a"]
    claim_id, number = world.claim("a", reason="death")
    world.stored_document(claim_id)
    page = world.client.get(f"/organizer/claim/{number}", headers=a.headers)
    assert page.status_code == 200
    assert "Больничный с Госуслуг (снимок экрана)" in page.text and "Свидетельство о смерти «свидетельство.pdf»" in page.text
    assert "sick_leave_gosuslugi" not in page.text
    # the event's time in its venue's zone (09:00 UTC is 12:00 in Moscow), in the list as well
    assert "28.12.2026 12:00, время площадки" in page.text and "09:00 UTC" not in page.text
    assert world.client.get(f"/organizer/claims/{number}", headers=a.headers).json()["event_timezone"] == "Europe/Moscow"
    for bad in ("%27%3Bdrop", "x" * 41):
        r = world.client.get(f"/organizer/claim/{bad}", headers=a.headers)
        assert r.status_code == 404 and r.headers["content-type"].startswith("text/html") and "Заявка не найдена" in r.text


def test_a_stale_page_form_is_an_error_page_in_russian_and_decides_nothing(world):
    a = world.callers["organizer_a"]
    claim_id, number = world.claim("a")
    r = world.client.post("/organizer/confirm", headers=a.headers, data={"csrf": "stale", "numbers": [number], "decision": "approve"})
    assert r.status_code == 403 and r.headers["content-type"].startswith("text/html") and "Форма устарела" in r.text
    r = world.client.post("/organizer/decide", headers=a.headers,
                          data={"csrf": "stale", "numbers": [number], "decision": "approve", "idempotency_key": "k-stale"})
    assert r.status_code == 403 and "Форма устарела" in r.text
    assert [t for t, _, _ in _audit(claim_id)] == ["file", "assess"]


def test_the_confirmation_counts_only_claims_still_open_and_refuses_when_none_is(world):
    """Used to go wrong: a claim decided already (another tab, another colleague) was counted in the
    confirmation's count and money, and a selection with nothing left to decide still offered
    «Подтвердить» under «Заявок: 0»."""
    a = world.callers["organizer_a"]
    (_, done), (waiting_id, waiting) = world.claim("a"), world.claim("a")
    r = world.client.post("/organizer/decisions", headers=_auth(world, "organizer_a"), json={"numbers": [done], "decision": "approve"})
    assert r.json()["decided"] == 1
    confirm = world.client.post("/organizer/confirm", headers=a.headers,
                                data=a.with_csrf({"numbers": [done, waiting, "VZ-9999999-1"], "decision": "approve"}))
    assert confirm.status_code == 200
    assert '<strong id="confirm-count">1</strong>' in confirm.text and "3 500,00 ₽" in confirm.text and "7 000,00 ₽" not in confirm.text
    assert "ещё 1 не найдены" in confirm.text and "ещё 1 — решение уже принято" in confirm.text
    nothing = world.client.post("/organizer/confirm", headers=a.headers, data=a.with_csrf({"numbers": [done, "VZ-9999999-1"], "decision": "approve"}))
    assert nothing.status_code == 422 and nothing.headers["content-type"].startswith("text/html")
    assert "нет заявок, по которым можно принять решение (не найдено: 1, решение уже принято: 1)" in nothing.text
    assert 'action="/organizer/decide"' not in nothing.text
    assert [t for t, _, _ in _audit(waiting_id)] == ["file", "assess"]  # confirming decides nothing
