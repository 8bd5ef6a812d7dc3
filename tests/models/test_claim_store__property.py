"""Properties of the lifecycle: any sequence of triggers leaves a consistent audit trail (SQLite), and the
batch evaluator `decide` always agrees with the `transitions` machine behind `fire`."""
from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select, update

from models.claim_store import TransitionRefused, apply_trigger, file_claims
from models.db import make_engine
from models.tables import Claim, ClaimTransition, Ticket
from states.lifecycle import TRANSITIONS, ClaimFacts, ClaimState, InvalidTrigger, Trigger, decide, edges, fire
from states.policy import CLOSE_RELATIVES, DOCUMENT_KINDS, LEGAL_POLICY, DocumentEvidence, OrganizerPolicy, Reason, TicketPrice
from tests import factories

MSK = ZoneInfo("Europe/Moscow")
EVENT = datetime(2026, 4, 15, 19, 0, tzinfo=MSK)
claim_t, audit_t = Claim.__table__, ClaimTransition.__table__

# Besides triggers, a scenario may bring the facts a trigger waits for.
ADD_DOCUMENT, ADD_BANK_DETAILS = "+document", "+bank_details"
ANY_ACTION = st.sampled_from([t.value for t in Trigger] + [ADD_DOCUMENT, ADD_BANK_DETAILS])


def next_action(data, state: str) -> str:
    """Mostly a trigger the table has from `state` (so scenarios go deep), sometimes anything at all."""
    # withdraw and close end a scenario early: leave them to the "anything" branch.
    from_state = sorted({row["trigger"] for row in TRANSITIONS if state in row["source"]} - {"withdraw", "close"})
    if from_state and data.draw(st.integers(0, 9), label="pick") < 7:
        return data.draw(st.sampled_from(from_state + [ADD_DOCUMENT, ADD_BANK_DETAILS]), label="action")
    return data.draw(ANY_ACTION, label="action")


@pytest.fixture
def sqlite_engine(sqlite_url):
    engine = make_engine(sqlite_url)
    yield engine
    engine.dispose()


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
def test_any_trigger_sequence_leaves_a_chained_audit_trail(sqlite_engine, reason, payment_method, scanned, in_regime, days_before, length, data):
    engine = sqlite_engine
    now = EVENT - timedelta(days=days_before)
    with engine.begin() as conn:  # a new event, order and ticket per example: the database is shared
        regime_id = factories.regime(conn, starts_on=date(2026, 1, 1)) if in_regime else None
        event_id = factories.event(conn, starts_at=EVENT, regime_id=regime_id,
                                   status="cancelled" if reason in (Reason.CANCELLED, Reason.REPLACED) else "scheduled")
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
        try:
            with engine.begin() as conn:
                outcome = apply_trigger(conn, claim_id=claim_id, trigger=action, actor="property", now=now)
        except (TransitionRefused, InvalidTrigger):
            continue
        applied.append((action, outcome.source, outcome.dest))
        state = outcome.dest

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


# --- decide() and fire() agree -------------------------------------------------------------------

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
        received_at=draw(aware(LO, HI, timezone.utc)),
        sick_from=sick_from,
        sick_to=sick_to,
        person_name=draw(st.sampled_from([None, "Иванов Иван Иванович", "Петров Пётр"])),
        relation=draw(st.sampled_from([None, "friend", *sorted(CLOSE_RELATIVES)])),
        judged_false=draw(st.booleans()),
    )


@st.composite
def claim_facts(draw):
    price = draw(st.integers(0, 1_000_000))
    return ClaimFacts(
        reason=draw(st.sampled_from(list(Reason))),
        state=draw(st.sampled_from(list(ClaimState))),
        filed_at=draw(aware(LO, HI, timezone.utc)),
        event_start=draw(aware(LO, HI)),
        ticket=TicketPrice(price, draw(st.none() | st.integers(0, 1_000_000)), draw(st.integers(0, 50_000)), 0, draw(st.booleans())),
        barcode_status=draw(st.sampled_from(["valid", "scanned", "void"])),
        payment_method=draw(st.sampled_from(["card", "cash", "bso"])),
        acquirer_payment_id=draw(st.sampled_from([None, "2d1f5a0e-000f-5000-9000-1b2c3d4e5f60"])),
        has_bank_details=draw(st.booleans()),
        event_status=draw(st.sampled_from(["scheduled", "cancelled", "postponed", "replaced"])),
        high_alert_regime=draw(st.booleans()),
        policy=draw(st.sampled_from([LEGAL_POLICY, OrganizerPolicy(refuse_promo=True)])),
        order_created_at=draw(st.none() | aware(LO, HI, timezone.utc)),
        buyer_name="Иванов Иван Иванович",
        name_mismatch_explanation=draw(st.sampled_from([None, "Билет куплен на имя мужа"])),
        documents=tuple(draw(st.lists(documents(), max_size=2))),
        extended=draw(st.booleans()),
        decision_due=draw(st.none() | days),
        payout_due=draw(st.none() | days),
    )


def _evaluate(evaluator, trigger, facts, now):
    try:
        outcome = evaluator(trigger, facts, now)
    except InvalidTrigger:
        return "invalid"
    return outcome.dest if outcome.allowed else ("refused", outcome.refusals)


@settings(max_examples=300, deadline=None)
@given(facts=claim_facts(), trigger=st.sampled_from([t.value for t in Trigger]), now=aware(LO, HI, timezone.utc))
def test_decide_agrees_with_the_transitions_machine(facts, trigger, now):
    expected = _evaluate(decide, trigger, facts, now)
    assert _evaluate(fire, trigger, facts, now) == expected
    if expected not in ("invalid",) and not isinstance(expected, tuple):
        assert (facts.state.value, expected) in edges()
