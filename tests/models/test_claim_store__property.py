"""Properties of the lifecycle, against the rules rather than against the table.

`rules_say` below restates DESIGN.md ("The rules") and docs/rules.md step by step, without reading the
transitions table or its guards. Both paths that ask the one `transitions` machine (`fire` for one
claim, `judge` for a batch), and the stored paths over them (`apply_trigger`, `apply_batch`), must
agree with it. A mutated row or guard makes these tests fail: try it (edit a row or a guard in
states/lifecycle.py, run this file, watch it fail, revert).
"""
from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select, update

from models.claim_store import TransitionRefused, apply_batch, apply_trigger, file_claims, load_facts
from models.db import make_engine
from models.tables import Claim, ClaimTransition, Ticket
from states.lifecycle import ClaimFacts, ClaimState, InvalidTrigger, edges, fire, judge
from states.policy import (
    CLOSE_RELATIVES,
    DOCUMENT_KINDS,
    LEGAL_POLICY,
    DocumentEvidence,
    OrganizerPolicy,
    PolicyError,
    Reason,
    TicketPrice,
    check_documented_claim,
    documents_deadline,
    quote_refund,
)
from states.regimes import RegimeSpan, rule_for
from tests import factories

MSK = ZoneInfo("Europe/Moscow")
EVENT = datetime(2026, 4, 15, 19, 0, tzinfo=MSK)
claim_t, audit_t = Claim.__table__, ClaimTransition.__table__

# Every trigger name anyone may send, including the two with no driver (no row: invalid everywhere).
TRIGGERS = [
    "assess", "submit_documents", "expire_documents", "approve", "reject", "extend_review", "escalate", "withdraw",
    "start_payout", "refuse_scanned", "bank_details_received", "payout_succeeded", "payout_failed", "retry_payout",
    "flag_payout_overdue", "close_refunded_elsewhere", "issue_voucher", "redeem_voucher", "expire_voucher", "close",
]
INVALID = "invalid"


def moved(dest: str) -> tuple[str, str]:
    return ("moved", dest)


def refused(*codes: str) -> tuple[str, frozenset[str] | None]:
    return ("refused", frozenset(codes) if codes else None)  # None: refused, whatever the reasons


def rules_say(trigger: str, f: ClaimFacts, now: datetime):
    """What the rules allow, written out by hand: intake, documents, the organizer's decision and its
    deadline, payouts. Returns INVALID, moved(state) or refused(codes)."""
    s = f.state.value if isinstance(f.state, ClaimState) else f.state
    scanned = f.barcode_status == "scanned"
    today = now.astimezone(f.event_start.tzinfo).date()  # deadlines are days in the venue's zone
    if trigger == "assess" and s == "filed":
        if scanned:  # a ticket used at the door is never refunded
            return moved("rejected")
        if f.reason is Reason.VOLUNTARY or f.reason in (Reason.CANCELLED, Reason.POSTPONED, Reason.REPLACED):
            try:
                q = quote_refund(reason=f.reason, event_start=f.event_start, filed_at=f.filed_at, ticket=f.ticket, policy=f.policy,
                                 regime=f.regime)
            except PolicyError:
                q = None
            if q is not None and q.eligible and q.amount > 0:
                return moved("approved")  # Art. 52.1: no one needs to decide
            return moved("rejected")  # too late, nothing to pay, or Decree 442 keeps the tickets valid
        if f.reason in (Reason.ILLNESS, Reason.DEATH):
            if check_documented_claim(reason=f.reason, event_start=f.event_start, filed_at=f.filed_at,
                                      order_created_at=f.order_created_at or f.filed_at, buyer_name=f.buyer_name,
                                      name_mismatch_explanation=f.name_mismatch_explanation, documents=f.documents):
                return moved("rejected")  # Decree 1491 grounds to refuse
            if not f.documents:
                return moved("awaiting_documents")
        return moved("awaiting_organizer")
    if trigger == "submit_documents" and s == "awaiting_documents":
        return moved("awaiting_organizer") if f.documents else refused("NO_DOCUMENTS")
    if trigger == "expire_documents" and s == "awaiting_documents":
        # The window closes at 24:00 of its last day; from then on the claim is refused.
        return moved("rejected") if now >= documents_deadline(f.event_start) else refused("DOCUMENTS_WINDOW_OPEN")
    if trigger == "approve" and s in ("awaiting_organizer", "escalated"):
        return refused("TICKET_SCANNED") if scanned else moved("approved")
    if trigger == "reject" and s in ("awaiting_documents", "awaiting_organizer", "escalated"):
        return moved("rejected")
    if trigger == "extend_review" and s == "awaiting_organizer":
        return refused("ALREADY_EXTENDED") if f.extended else moved("awaiting_organizer")  # once, 10 -> 20
    if trigger == "escalate" and s == "awaiting_organizer":
        # Overdue only after the due day has passed: the due day itself is in time.
        return moved("escalated") if f.decision_due is not None and today > f.decision_due else refused("NOT_OVERDUE")
    if trigger == "withdraw" and s in ("filed", "awaiting_documents", "awaiting_organizer", "escalated"):
        return moved("withdrawn")
    if trigger == "start_payout" and s == "approved":
        if scanned:
            return refused("TICKET_SCANNED")
        ready = bool(f.acquirer_payment_id) if f.payment_method == "card" else f.has_bank_details
        return moved("payout_pending" if ready else "needs_bank_details")
    if trigger == "start_payout" and s == "payout_failed":
        return moved("needs_bank_details")  # the card refused for good: the buyer's bank account instead
    if trigger == "refuse_scanned" and s in ("approved", "needs_bank_details", "filed", "awaiting_documents", "awaiting_organizer", "escalated"):
        return moved("rejected") if scanned else refused("TICKET_SCANNED")
    if trigger == "close_refunded_elsewhere" and s in ("filed", "awaiting_documents", "awaiting_organizer", "escalated", "approved",
                                                       "needs_bank_details"):
        return moved("closed") if f.barcode_status == "void" else refused("TICKET_NOT_VOID")
    if trigger == "bank_details_received" and s == "needs_bank_details":
        return moved("payout_pending") if f.has_bank_details else refused("BANK_DETAILS_MISSING")
    if trigger == "payout_succeeded" and s == "payout_pending":
        return moved("paid")
    if trigger == "payout_failed" and s == "payout_pending":
        return moved("payout_failed")
    if trigger == "retry_payout" and s == "payout_failed":
        return moved("payout_pending")
    if trigger == "flag_payout_overdue" and s in ("approved", "payout_pending", "payout_failed", "needs_bank_details"):
        return moved(s) if f.payout_due is not None and today > f.payout_due else refused("PAYOUT_NOT_OVERDUE")
    if trigger == "issue_voucher" and s in ("filed", "approved"):
        # Decree 442: a voucher instead of money, for an event reason under a regime, if the organizer offers vouchers.
        offered = f.reason in (Reason.CANCELLED, Reason.POSTPONED, Reason.REPLACED) and f.regime is not None and f.policy.vouchers_offered
        return moved("voucher_issued") if offered else refused("VOUCHER_NOT_OFFERED")
    if trigger in ("redeem_voucher", "expire_voucher") and s == "voucher_issued":
        expired = f.voucher_valid_until is None or today > f.voucher_valid_until
        if trigger == "redeem_voucher":
            return moved("closed") if f.voucher_valid_until is not None and not expired else refused("VOUCHER_EXPIRED")
        return moved("approved") if f.voucher_valid_until is not None and expired else refused("VOUCHER_STILL_VALID")
    return INVALID


def matches(got, expected) -> bool:
    if expected == INVALID or got == INVALID or expected[0] == "moved":
        return got == expected
    return got[0] == "refused" and (expected[1] is None or got[1] == expected[1])


def _outcome(evaluator, trigger, facts, now):
    try:
        outcome = evaluator(trigger, facts, now)
    except InvalidTrigger:
        return INVALID
    if outcome.allowed:
        return moved(outcome.dest)
    assert outcome.refusals and all(code and message for code, message in outcome.refusals)  # a refusal says why, in Russian
    return ("refused", frozenset(code for code, _ in outcome.refusals))


# --- the machine, pure: both paths agree with the rules --------------------------------------------

def aware(lo: datetime, hi: datetime, tz=MSK):
    return st.datetimes(min_value=lo.replace(tzinfo=None), max_value=hi.replace(tzinfo=None), timezones=st.just(tz))


LO, HI = datetime(2025, 10, 1), datetime(2026, 9, 1)
days = st.dates(min_value=LO.date(), max_value=HI.date())


@st.composite
def documents(draw):
    sick_from = draw(st.none() | days)
    sick_to = None if sick_from is None else draw(st.none() | st.dates(min_value=sick_from, max_value=HI.date()))
    return DocumentEvidence(
        kind=draw(st.sampled_from(sorted(DOCUMENT_KINDS))),
        received_at=draw(aware(LO, HI, UTC)),
        sick_from=sick_from,
        sick_to=sick_to,
        person_name=draw(st.sampled_from([None, "Иванов Иван Иванович", "Петров Пётр"])),
        relation=draw(st.sampled_from([None, "friend", *sorted(CLOSE_RELATIVES)])),
        judged_false=draw(st.booleans()),
    )


def _probe(state: ClaimState) -> ClaimFacts:
    return ClaimFacts(reason=Reason.OTHER, state=state, filed_at=EVENT, event_start=EVENT, ticket=TicketPrice(1))


# For each trigger, the states the rules let it start from.
SOURCES = {t: [s for s in ClaimState if rules_say(t, _probe(s), EVENT) != INVALID] for t in TRIGGERS}


_REGIME = RegimeSpan(1, "77", date(2026, 1, 1), date(2026, 2, 1))
# Decree 442 rulings a claim may carry: none (no regime), tickets kept valid, treated as cancelled.
RULINGS = [None] + [rule_for(regime=_REGIME, event_status=status, original_day=date(2026, 1, 15), new_day=new_day, today=date(2026, 2, 5))
                    for status, new_day in (("postponed", date(2027, 1, 15)), ("postponed", date(2028, 1, 15)), ("cancelled", None))]
POLICIES = [LEGAL_POLICY, OrganizerPolicy(refuse_promo=True), OrganizerPolicy(regime_postponed_refunds=False, vouchers_offered=True)]


@st.composite
def claim_facts(draw, state):
    price = draw(st.integers(0, 1_000_000))
    return ClaimFacts(
        reason=draw(st.sampled_from(list(Reason))),
        state=state,
        filed_at=draw(aware(LO, HI, UTC)),
        event_start=draw(aware(LO, HI)),
        ticket=TicketPrice(price, draw(st.none() | st.integers(0, 1_000_000)), draw(st.integers(0, 50_000)), 0, draw(st.booleans())),
        barcode_status=draw(st.sampled_from(["valid", "scanned", "void"])),
        payment_method=draw(st.sampled_from(["card", "cash", "bso"])),
        acquirer_payment_id=draw(st.sampled_from([None, "2d1f5a0e-000f-5000-9000-1b2c3d4e5f60"])),
        has_bank_details=draw(st.booleans()),
        event_status=draw(st.sampled_from(["scheduled", "cancelled", "postponed", "replaced"])),
        high_alert_regime=draw(st.booleans()),
        regime=draw(st.sampled_from(RULINGS)),
        voucher_valid_until=draw(st.none() | days),
        policy=draw(st.sampled_from(POLICIES)),
        order_created_at=draw(st.none() | aware(LO, HI, UTC)),
        buyer_name="Иванов Иван Иванович",
        name_mismatch_explanation=draw(st.sampled_from([None, "Билет куплен на имя мужа"])),
        documents=tuple(draw(st.lists(documents(), max_size=2))),
        extended=draw(st.booleans()),
        decision_due=draw(st.none() | days),
        payout_due=draw(st.none() | days),
    )


@st.composite
def trigger_and_facts(draw):
    """A trigger and a claim, mostly in a state the trigger starts from (so guards get exercised)."""
    trigger = draw(st.sampled_from(TRIGGERS))
    sources = SOURCES[trigger]
    if sources and draw(st.integers(0, 9), label="from a source state") < 8:
        state = draw(st.sampled_from(sources))
    else:
        state = draw(st.sampled_from(list(ClaimState)))
    return trigger, draw(claim_facts(state))


@settings(max_examples=1000, deadline=None)
@given(case=trigger_and_facts(), now=aware(LO, HI, UTC))
def test_the_machine_does_what_the_rules_say_on_both_paths(case, now):
    trigger, facts = case
    expected = rules_say(trigger, facts, now)
    single, batch = _outcome(fire, trigger, facts, now), _outcome(judge, trigger, facts, now)
    assert matches(single, expected), (trigger, facts.state, single, expected)
    assert matches(batch, expected), (trigger, facts.state, batch, expected)
    assert single == batch
    if expected != INVALID and expected[0] == "moved":
        assert (facts.state.value, expected[1]) in edges()


# --- stored: any sequence of steps, through one claim or a batch, follows the rules ---------------

# Besides triggers, a scenario may bring the facts a trigger waits for.
ADD_DOCUMENT, ADD_BANK_DETAILS = "+document", "+bank_details"


def next_action(data, state: str) -> str:
    """Mostly a trigger the rules allow from `state` (so scenarios go deep), sometimes anything at all."""
    # withdraw ends a scenario early: leave it to the "anything" branch.
    from_state = sorted(t for t in TRIGGERS if t != "withdraw" and ClaimState(state) in SOURCES[t])
    if from_state and data.draw(st.integers(0, 9), label="pick") < 7:
        return data.draw(st.sampled_from(from_state + [ADD_DOCUMENT, ADD_BANK_DETAILS]), label="action")
    return data.draw(st.sampled_from(TRIGGERS + [ADD_DOCUMENT, ADD_BANK_DETAILS]), label="action")


@pytest.fixture
def sqlite_engine(sqlite_url):
    engine = make_engine(sqlite_url)
    yield engine
    engine.dispose()


def _stored_step(engine, claim_id: int, action: str, now: datetime, as_batch: bool):
    if as_batch:
        result = apply_batch(engine, claim_ids=[claim_id], trigger=action, actor="property", now=now)
        assert not result.conflicts
        if result.invalid:
            return INVALID
        if result.refused:
            return ("refused", frozenset(code for code, _ in result.refused[claim_id]))
        ((dest, _),) = result.moved.items()
        return moved(dest)
    try:
        with engine.begin() as conn:
            return moved(apply_trigger(conn, claim_id=claim_id, trigger=action, actor="property", now=now).dest)
    except TransitionRefused as exc:
        return ("refused", frozenset(code for code, _ in exc.refusals))
    except InvalidTrigger:
        return INVALID


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    reason=st.sampled_from(list(Reason)),
    payment_method=st.sampled_from(["card", "cash"]),
    scanned=st.integers(0, 5).map(lambda n: n == 0),  # a scanned ticket ends at intake: keep it rare
    in_regime=st.booleans(),
    days_before=st.integers(1, 30),
    length=st.integers(0, 16),
    data=st.data(),
)
def test_any_step_sequence_follows_the_rules_and_leaves_a_chained_audit_trail(
        sqlite_engine, reason, payment_method, scanned, in_regime, days_before, length, data):
    engine = sqlite_engine
    now = EVENT - timedelta(days=days_before)
    # An event reason is a reason only when the event's status says so.
    status = reason.value if reason in (Reason.CANCELLED, Reason.POSTPONED, Reason.REPLACED) else "scheduled"
    with engine.begin() as conn:  # a new event, order and ticket per example: the database is shared
        regime_id = factories.regime(conn, starts_on=date(2026, 1, 1)) if in_regime else None
        event_id = factories.event(conn, starts_at=EVENT, regime_id=regime_id, status=status)
        order_id = factories.order(conn, created_at=EVENT - timedelta(days=60), payment_method=payment_method)
        ticket_id = factories.ticket(conn, event_id=event_id, order_id=order_id)
        (claim_id,) = file_claims(conn, ticket_ids=[ticket_id], reason=reason, actor="buyer", now=now)
        if scanned:  # used at the door after filing (a scanned ticket takes no new claim)
            conn.execute(update(Ticket.__table__).where(Ticket.__table__.c.id == ticket_id).values(barcode_status="scanned"))

    applied: list[tuple[str, str, str]] = []
    state = "filed"
    for _ in range(length):
        action = next_action(data, state)
        now += timedelta(hours=data.draw(st.integers(0, 24 * 12), label="hours later"))
        with engine.begin() as conn:
            if action == ADD_DOCUMENT:
                factories.document(conn, claim_id=claim_id, received_at=now, sick_from=EVENT.date() - timedelta(days=3),
                                   sick_to=EVENT.date() + timedelta(days=3), relation="parent")
                continue
            if action == ADD_BANK_DETAILS:
                conn.execute(update(claim_t).where(claim_t.c.id == claim_id).values(bank_details="gAAAA-encrypted"))
                continue
            _, facts = load_facts(conn, [claim_id], now)[claim_id]
        expected = rules_say(action, facts, now)
        got = _stored_step(engine, claim_id, action, now, as_batch=data.draw(st.booleans(), label="as batch"))
        assert matches(got, expected), (action, state, got, expected)
        if got != INVALID and got[0] == "moved":
            applied.append((action, state, got[1]))
            state = got[1]

    with engine.connect() as conn:
        trail = conn.execute(select(audit_t.c.trigger, audit_t.c.from_state, audit_t.c.to_state)
                             .where(audit_t.c.claim_id == claim_id).order_by(audit_t.c.id)).all()
        state, version = conn.execute(select(claim_t.c.state, claim_t.c.version).where(claim_t.c.id == claim_id)).one()

    assert trail[0] == ("file", "", "filed")
    assert [tuple(r) for r in trail[1:]] == applied
    assert len(trail) == 1 + len(applied) == version
    assert {(r.from_state, r.to_state) for r in trail[1:]} <= edges()
    for previous, following in zip(trail, trail[1:]):
        assert previous.to_state == following.from_state
    assert state == trail[-1].to_state
