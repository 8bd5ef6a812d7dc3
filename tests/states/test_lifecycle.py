"""The claim lifecycle table (states/lifecycle.py): its edges pinned, its shape checked, its guards by example."""
from __future__ import annotations

from collections import deque
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from states.lifecycle import (
    FINAL_STATES,
    GUARDS,
    NOTIFICATIONS,
    OPEN_STATES,
    TRANSITIONS,
    ClaimFacts,
    ClaimState,
    InvalidTrigger,
    Trigger,
    edges,
    effects,
    fire,
    has_step,
    judge,
)
from states.policy import Reason, TicketPrice

S = ClaimState
MSK = ZoneInfo("Europe/Moscow")
EVENT = datetime(2026, 3, 20, 19, 0, tzinfo=MSK)
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=MSK)

# Every (source, target) pair of the lifecycle. Adding or removing a step must change this literal.
EXPECTED_EDGES = {
    ("filed", "rejected"),
    ("filed", "approved"),
    ("filed", "awaiting_documents"),
    ("filed", "awaiting_organizer"),
    ("filed", "withdrawn"),
    ("awaiting_documents", "awaiting_organizer"),
    ("awaiting_documents", "rejected"),
    ("awaiting_documents", "withdrawn"),
    ("awaiting_organizer", "approved"),
    ("awaiting_organizer", "rejected"),
    ("awaiting_organizer", "escalated"),
    ("awaiting_organizer", "withdrawn"),
    ("awaiting_organizer", "awaiting_organizer"),  # extend_review (internal)
    ("escalated", "approved"),
    ("escalated", "rejected"),
    ("escalated", "withdrawn"),
    ("approved", "payout_pending"),
    ("approved", "needs_bank_details"),
    ("approved", "approved"),  # flag_payout_overdue (internal)
    ("approved", "rejected"),  # refuse_scanned: the ticket was used after approval
    ("needs_bank_details", "rejected"),  # refuse_scanned
    ("needs_bank_details", "payout_pending"),
    ("needs_bank_details", "needs_bank_details"),
    ("payout_pending", "paid"),
    ("payout_pending", "payout_failed"),
    ("payout_pending", "payout_pending"),
    ("payout_failed", "payout_pending"),
    ("payout_failed", "payout_failed"),
    ("payout_failed", "needs_bank_details"),  # start_payout again: the card refused for good
    # close_refunded_elsewhere: the sales feed voided the ticket before our money left
    ("filed", "closed"),
    ("awaiting_documents", "closed"),
    ("awaiting_organizer", "closed"),
    ("escalated", "closed"),
    ("approved", "closed"),
    ("needs_bank_details", "closed"),
    # Decree 442 vouchers (issue 13): instead of money, then used (closed) or expired into the refund.
    ("filed", "voucher_issued"),
    ("approved", "voucher_issued"),
    ("voucher_issued", "closed"),  # redeem_voucher
    ("voucher_issued", "approved"),  # expire_voucher
}
# States kept for stored rows and indexes, with no step in until their driver exists.
UNDRIVEN_STATES: set[str] = set()
# Final for the ticket (a new claim may not be filed), yet a voucher is still used or expires into the refund.
VOUCHER_EXITS = {"voucher_issued": {"closed", "approved"}}


def facts(**kw) -> ClaimFacts:
    base = dict(reason=Reason.VOLUNTARY, state=S.FILED, filed_at=NOW, event_start=EVENT, ticket=TicketPrice(350000, 400000, 35000))
    return ClaimFacts(**(base | kw))


def _graph() -> dict[str, set[str]]:
    out: dict[str, set[str]] = {s.value: set() for s in ClaimState}
    for source, target in edges():
        out[source].add(target)
    return out


def test_edges_are_exactly_the_pinned_set():
    assert edges() == EXPECTED_EDGES


def test_every_state_is_reachable_from_filed():
    graph, seen, todo = _graph(), {"filed"}, deque(["filed"])
    while todo:
        for nxt in graph[todo.popleft()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    assert seen == {s.value for s in ClaimState} - UNDRIVEN_STATES


def test_every_open_state_has_a_way_out_and_final_states_have_none():
    graph = _graph()
    stuck = [s.value for s in OPEN_STATES if not graph[s.value] - {s.value}]
    assert stuck == []
    assert {s.value: graph[s.value] for s in FINAL_STATES} == {s.value: VOUCHER_EXITS.get(s.value, set()) for s in FINAL_STATES}


def test_undriven_triggers_are_not_in_the_machine():
    """Regression (issue 9): `close` had a row but nothing ever fired it."""
    assert "close" not in {t.value for t in Trigger}
    for state in ClaimState:
        assert not has_step("close", state)


def test_open_and_final_states_partition_the_states():
    assert OPEN_STATES | FINAL_STATES == set(ClaimState)
    assert not OPEN_STATES & FINAL_STATES


def test_table_uses_only_known_triggers_states_and_guards():
    states = {s.value for s in ClaimState}
    for row in TRANSITIONS:
        assert row["trigger"] in {t.value for t in Trigger}
        assert set(row["source"]) <= states
        assert row["dest"] is None or row["dest"] in states
        assert set(row["conditions"]) | set(row["unless"]) <= set(GUARDS)
    assert {row["trigger"] for row in TRANSITIONS} == {t.value for t in Trigger}


def test_every_notification_is_a_step_of_the_table():
    for trigger, dest in NOTIFICATIONS:
        assert any(row["trigger"] == trigger and (row["dest"] or row["source"][0]) == dest for row in TRANSITIONS), (trigger, dest)


@pytest.mark.parametrize(
    ("kw", "trigger", "now", "dest"),
    [
        pytest.param({}, "assess", NOW, "approved", id="voluntary d>=10 approved"),
        pytest.param({"filed_at": datetime(2026, 3, 18, 12, tzinfo=MSK)}, "assess", NOW, "rejected", id="voluntary d<3 rejected"),
        pytest.param({"barcode_status": "scanned", "reason": Reason.CANCELLED}, "assess", NOW, "rejected", id="scanned rejected"),
        pytest.param({"reason": Reason.ILLNESS}, "assess", NOW, "awaiting_documents", id="illness no documents"),
        pytest.param({"reason": Reason.OTHER}, "assess", NOW, "awaiting_organizer", id="other to organizer"),
        pytest.param({"reason": Reason.CANCELLED}, "assess", NOW, "approved", id="cancelled approved"),
        pytest.param({"state": S.AWAITING_ORGANIZER, "reason": Reason.OTHER}, "extend_review", NOW, "awaiting_organizer", id="extend internal"),
        pytest.param({"state": S.APPROVED, "payment_method": "cash"}, "start_payout", NOW, "needs_bank_details", id="cash no details"),
        pytest.param({"state": S.APPROVED, "acquirer_payment_id": "pay-1"}, "start_payout", NOW, "payout_pending", id="card"),
    ],
)
def test_judge_and_fire_pick_the_documented_target(kw, trigger, now, dest):
    f = facts(**kw)
    assert judge(trigger, f, now).dest == dest
    assert fire(trigger, f, now).dest == dest


def test_refusal_names_the_failed_guard():
    f = facts(state=S.AWAITING_ORGANIZER, reason=Reason.OTHER, decision_due=date(2026, 3, 16))
    on_due_day = datetime(2026, 3, 16, 23, 59, tzinfo=MSK)
    assert judge("escalate", f, on_due_day).refusals == ((GUARDS["decision_overdue"].code, GUARDS["decision_overdue"].message_ru),)
    assert fire("escalate", f, on_due_day).refusals[0][0] == "NOT_OVERDUE"
    assert judge("escalate", f, on_due_day + timedelta(minutes=1)).dest == "escalated"


def test_overdue_is_judged_in_the_venue_time_zone():
    # 21:30 UTC on the due day is already the next day in Moscow: overdue.
    f = facts(state=S.AWAITING_ORGANIZER, reason=Reason.OTHER, decision_due=date(2026, 3, 16))
    assert judge("escalate", f, datetime(2026, 3, 16, 21, 30, tzinfo=ZoneInfo("UTC"))).dest == "escalated"


@pytest.mark.parametrize("state", [S.PAID, S.CLOSED, S.REJECTED])
def test_a_trigger_missing_from_a_state_is_invalid_on_both_paths(state):
    with pytest.raises(InvalidTrigger):
        judge("approve", facts(state=state), NOW)
    with pytest.raises(InvalidTrigger):
        fire("approve", facts(state=state), NOW)


def test_effects_of_approval_and_submission():
    approved = effects("assess", "approved", facts(), NOW)
    assert approved["payout_due"] == date(2026, 3, 16)  # 10 working days; 9 March 2026 is a day off
    assert approved["decided_at"] == NOW
    submitted = effects("submit_documents", "awaiting_organizer", facts(reason=Reason.ILLNESS, state=S.AWAITING_DOCUMENTS), NOW)
    assert submitted["decision_due"] == date(2026, 3, 16)
    payout = effects("start_payout", "payout_pending", facts(state=S.APPROVED), NOW)
    assert payout["ticket_barcode_status"] == "void"


KGD = ZoneInfo("Europe/Kaliningrad")


@pytest.mark.parametrize("first", ["moscow", "kaliningrad"])
def test_two_venues_with_one_start_instant_are_judged_each_in_its_own_time_zone(first):
    """Regression: quotes memoised by event start reused one zone's day count for another zone at the same instant."""
    # The same instant is 20 May 00:30 in Moscow and 19 May 23:30 in Kaliningrad (a distinct instant per case).
    minute = {"moscow": 30, "kaliningrad": 31}[first]
    moscow = datetime(2026, 5, 20, 0, minute, tzinfo=MSK)
    filed = datetime(2026, 5, 16, 12, 0, tzinfo=ZoneInfo("UTC"))
    cases = {
        "moscow": (facts(event_start=moscow, filed_at=filed), "approved"),  # d = 3: 30 %
        "kaliningrad": (facts(event_start=moscow.astimezone(KGD), filed_at=filed), "rejected"),  # d = 2: TOO_LATE
    }
    order = [first] + [k for k in cases if k != first]
    got = {name: judge("assess", cases[name][0], filed).dest for name in order}
    assert got == {name: expected for name, (_, expected) in cases.items()}


def test_the_machine_is_built_once_and_every_condition_carries_its_guard():
    from states.lifecycle import MACHINE, GuardCondition

    transitions = MACHINE.get_transitions()
    assert {(t.source, t.dest or t.source) for t in transitions} == EXPECTED_EDGES
    conditions = [c for t in transitions for c in t.conditions]
    assert conditions and all(isinstance(c, GuardCondition) and c.guard is GUARDS[c.func] for c in conditions)
    assert MACHINE.models == []  # claims are handed to its events one at a time, never registered


def test_a_refusal_is_the_message_of_the_condition_the_machine_found_false():
    from states.lifecycle import MACHINE

    f = facts(state=S.APPROVED, barcode_status="scanned")
    (row,) = MACHINE.get_transitions(trigger="refuse_scanned", source="approved")
    # Both start_payout transitions fail on their first condition, ticket_not_scanned.
    assert [t.conditions[0].guard.name for t in MACHINE.get_transitions(trigger="start_payout", source="approved")] == ["ticket_not_scanned"] * 2
    expected = ((GUARDS["ticket_not_scanned"].code, GUARDS["ticket_not_scanned"].message_ru),)
    assert fire("start_payout", f, NOW).refusals == judge("start_payout", f, NOW).refusals == expected
    assert row.conditions[0].guard.name == "ticket_scanned"


def test_the_decidable_day_is_the_venues_day_the_documents_completed_the_claim():
    """docs/rules.md, "Decision deadline": counted from the day documents came, not from filing."""
    waiting = facts(reason=Reason.ILLNESS, state=S.AWAITING_DOCUMENTS, filed_at=datetime(2026, 3, 2, 10, tzinfo=MSK))
    late_evening_utc = datetime(2026, 3, 30, 22, 30, tzinfo=ZoneInfo("UTC"))  # 31.03 01:30 in Moscow
    submitted = effects("submit_documents", "awaiting_organizer", waiting, late_evening_utc)
    assert (submitted["decidable_on"], submitted["decision_due"]) == (date(2026, 3, 31), date(2026, 4, 14))
    assessed = effects("assess", "awaiting_organizer", facts(reason=Reason.OTHER), NOW)
    assert assessed["decidable_on"] == NOW.date()
    extended = effects("extend_review", "awaiting_organizer", facts(state=S.AWAITING_ORGANIZER, decidable_on=date(2026, 3, 31)), NOW)
    assert extended["decision_due"] == date(2026, 4, 28)  # 20 working days from 31.03, not from filing
