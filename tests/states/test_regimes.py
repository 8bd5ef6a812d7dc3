"""Decree 442 rules (states/regimes.py), table-driven; time is an argument, never read."""
from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

import pytest

from states.lifecycle import ClaimFacts, ClaimState, Trigger, effects, fire, intake_refusal
from states.policy import OrganizerPolicy, PolicyError, Reason, TicketPrice, quote_refund
from states.regimes import (
    PUBLICATION_WARNING_DAYS,
    REFUND_WARNING_DAYS,
    Alert,
    RegimeError,
    RegimeSpan,
    Rule,
    applicable_regime,
    deadline_alert,
    postponement_limit,
    publication_last_day,
    refund_last_day,
    rule_for,
)

MSK = ZoneInfo("Europe/Moscow")
ENDED = RegimeSpan(1, "77", date(2026, 3, 16), date(2026, 4, 30))
IN_FORCE = RegimeSpan(2, "77", date(2026, 3, 16), None)
ORIGINAL = date(2026, 4, 10)


def test_deadlines_count_calendar_days_from_the_regimes_end():
    assert publication_last_day(date(2026, 4, 30)) == date(2026, 5, 14)
    assert refund_last_day(date(2026, 4, 30)) == date(2026, 10, 27)


@pytest.mark.parametrize(("today", "expected"), [
    (date(2026, 5, 6), None),  # 8 days left: not yet
    (date(2026, 5, 7), (Alert.WARNING, 7)),
    (date(2026, 5, 12), (Alert.WARNING, 7)),  # same level: sent once (dedup by level)
    (date(2026, 5, 13), (Alert.WARNING, 1)),
    (date(2026, 5, 14), (Alert.WARNING, 1)),  # the 14th day itself is in time
    (date(2026, 5, 15), (Alert.OVERDUE, 1)),  # the next day is late: escalate
    (date(2026, 6, 1), (Alert.OVERDUE, 18)),
])
def test_publication_14_days_after_the_regime_ends(today, expected):
    assert deadline_alert(publication_last_day(ENDED.ends_on), today, warning_days=PUBLICATION_WARNING_DAYS) == expected


@pytest.mark.parametrize(("today", "expected"), [
    (date(2026, 9, 26), None),  # 31 days left
    (date(2026, 9, 27), (Alert.WARNING, 30)),  # 30 days before
    (date(2026, 10, 19), (Alert.WARNING, 30)),  # 8 days left
    (date(2026, 10, 20), (Alert.WARNING, 7)),  # 7 days before
    (date(2026, 10, 27), (Alert.WARNING, 7)),  # the 180th day is in time
    (date(2026, 10, 28), (Alert.OVERDUE, 1)),  # escalation after
])
def test_refund_180_days_after_the_regime_ends_warned_at_30_and_7_days(today, expected):
    assert deadline_alert(refund_last_day(ENDED.ends_on), today, warning_days=REFUND_WARNING_DAYS) == expected


@pytest.mark.parametrize(("status", "original", "new_day", "today", "rule", "cancelled"), [
    ("cancelled", ORIGINAL, None, date(2026, 5, 1), Rule.CANCELLED, True),
    # 18 months from the ORIGINAL date, that day included; one day more is treated as cancelled.
    ("postponed", ORIGINAL, date(2027, 10, 10), date(2026, 5, 1), Rule.POSTPONED_WITHIN_18_MONTHS, False),
    ("postponed", ORIGINAL, date(2027, 10, 11), date(2026, 5, 1), Rule.POSTPONED_BEYOND_18_MONTHS, True),
    # Month ends: 31 August + 18 months is 29 February of a leap year.
    ("postponed", date(2026, 8, 31), date(2028, 2, 29), date(2026, 5, 1), Rule.POSTPONED_WITHIN_18_MONTHS, False),
    ("postponed", date(2026, 8, 31), date(2028, 3, 1), date(2026, 5, 1), Rule.POSTPONED_BEYOND_18_MONTHS, True),
    # No new date at all: tickets wait to the regime's end + 14 days (that day in time), then cancelled.
    ("postponed", ORIGINAL, None, date(2026, 5, 14), Rule.AWAITING_NEW_DATE, False),
    ("postponed", ORIGINAL, None, date(2026, 5, 15), Rule.NO_NEW_DATE, True),
])
def test_which_decree_442_rule_applies(status, original, new_day, today, rule, cancelled):
    ruling = rule_for(regime=ENDED, event_status=status, original_day=original, new_day=new_day, today=today)
    assert ruling is not None
    assert (ruling.rule, ruling.treated_as_cancelled, ruling.tickets_stay_valid) == (rule, cancelled, not cancelled)
    assert ruling.publication_due == date(2026, 5, 14)
    assert ruling.refund_due == (date(2026, 10, 27) if cancelled else None)
    assert "№ 442" in ruling.text_ru


def test_a_postponed_event_counts_18_months_from_its_original_date_not_the_last_one():
    # Postponed once to 2027-03-01, then again: the limit stays 18 months after 10.04.2026.
    assert postponement_limit(ORIGINAL) == date(2027, 10, 10)
    again = rule_for(regime=ENDED, event_status="postponed", original_day=ORIGINAL, new_day=date(2027, 12, 1), today=date(2026, 5, 1))
    assert again.rule == Rule.POSTPONED_BEYOND_18_MONTHS


def test_a_regime_still_in_force_knows_no_deadlines_yet_and_a_date_less_event_waits():
    ruling = rule_for(regime=IN_FORCE, event_status="postponed", original_day=ORIGINAL, new_day=None, today=date(2030, 1, 1))
    assert ruling.rule == Rule.AWAITING_NEW_DATE and ruling.publication_due is None and ruling.refund_due is None
    assert rule_for(regime=IN_FORCE, event_status="cancelled", original_day=ORIGINAL, new_day=None, today=date(2026, 4, 1)).refund_due is None


def test_an_event_neither_cancelled_nor_postponed_follows_no_decree_442_rule():
    assert rule_for(regime=ENDED, event_status="scheduled", original_day=ORIGINAL, new_day=None, today=date(2026, 5, 1)) is None
    assert rule_for(regime=ENDED, event_status="replaced", original_day=ORIGINAL, new_day=None, today=date(2026, 5, 1)) is None


@pytest.mark.parametrize(("region", "original_day", "changed_on", "found"), [
    ("77", ORIGINAL, date(2026, 4, 1), 1),  # the event's date fell in the regime
    ("77", date(2026, 6, 1), date(2026, 4, 20), 1),  # changed while the regime was in force
    ("77", date(2026, 6, 1), date(2026, 5, 5), None),  # after the regime, about a later event: Art. 52.1
    ("50", ORIGINAL, date(2026, 4, 1), None),  # an event in another region
    ("", ORIGINAL, date(2026, 4, 1), None),  # a venue with no region
])
def test_an_event_is_under_its_venues_regions_regime(region, original_day, changed_on, found):
    regime = applicable_regime([ENDED, RegimeSpan(3, "78", date(2026, 1, 1))], region=region, original_day=original_day, changed_on=changed_on)
    assert (regime.id if regime else None) == found


def test_a_regime_cannot_end_before_it_starts():
    with pytest.raises(RegimeError):
        RegimeSpan(None, "77", date(2026, 5, 1), date(2026, 4, 30))


# --- quotes cite the rule ---------------------------------------------------------------------------

TICKET = TicketPrice(350000, 400000, 35000)
EVENT = datetime(2027, 3, 1, 19, 0, tzinfo=MSK)
FILED = datetime(2026, 5, 5, 12, 0, tzinfo=MSK)
WITHIN = rule_for(regime=ENDED, event_status="postponed", original_day=ORIGINAL, new_day=date(2027, 3, 1), today=date(2026, 5, 5))
CANCELLED = rule_for(regime=ENDED, event_status="cancelled", original_day=ORIGINAL, new_day=None, today=date(2026, 5, 5))
KEEP = OrganizerPolicy(regime_postponed_refunds=False)
KEEP_OR_VOUCHER = OrganizerPolicy(regime_postponed_refunds=False, vouchers_offered=True, voucher_valid_days=180)


@pytest.mark.parametrize(("reason", "policy", "ruling", "eligible", "amount", "code"), [
    (Reason.POSTPONED, KEEP, WITHIN, False, 0, "REGIME_TICKETS_VALID"),
    (Reason.POSTPONED, OrganizerPolicy(), WITHIN, True, 350000, None),  # the organizer accepts refunds
    (Reason.CANCELLED, KEEP, CANCELLED, True, 350000, None),  # cancelled: money, whatever the policy
    (Reason.POSTPONED, KEEP, None, True, 350000, None),  # outside a regime: Art. 52.1, 100 %
])
def test_quote_under_a_regime_cites_decree_442(reason, policy, ruling, eligible, amount, code):
    quote = quote_refund(reason=reason, event_start=EVENT, filed_at=FILED, ticket=TICKET, policy=policy, regime=ruling)
    assert (quote.eligible, quote.amount, quote.refusal_code) == (eligible, amount, code)
    if ruling is None:
        assert quote.source.startswith("Art. 52.1") and quote.rule_ru is None
    else:
        assert "Decree 442" in quote.rule and quote.rule_ru == ruling.text_ru and "№ 442" in quote.to_json()["rule_ru"]


def test_refusal_mentions_the_voucher_when_the_organizer_offers_one():
    quote = quote_refund(reason=Reason.POSTPONED, event_start=EVENT, filed_at=FILED, ticket=TICKET, policy=KEEP_OR_VOUCHER, regime=WITHIN)
    assert "№ 442" in quote.refusal_message_ru and "ваучер" in quote.refusal_message_ru


def test_voucher_policy_is_data_and_checked():
    policy = OrganizerPolicy.from_mapping({"vouchers_offered": True, "voucher_valid_days": 540, "regime_postponed_refunds": False})
    assert OrganizerPolicy.from_mapping(policy.to_mapping()) == policy
    for bad in ({"voucher_valid_days": 0}, {"voucher_valid_days": "a year"}, {"vouchers_offered": "yes"}):
        with pytest.raises(PolicyError):
            OrganizerPolicy.from_mapping(bad)


# --- the machine: voucher steps with guards from the policy -------------------------------------------

def facts(**kw) -> ClaimFacts:
    base = dict(reason=Reason.POSTPONED, state=ClaimState.FILED, filed_at=FILED, event_start=EVENT, ticket=TICKET,
                event_status="postponed", regime=WITHIN, high_alert_regime=True, policy=KEEP_OR_VOUCHER)
    return ClaimFacts(**(base | kw))


NOW = datetime(2026, 5, 5, 12, 0, tzinfo=MSK)


@pytest.mark.parametrize(("kw", "dest", "code"), [
    ({}, "voucher_issued", None),
    ({"policy": KEEP}, None, "VOUCHER_NOT_OFFERED"),  # the organizer offers no vouchers
    ({"regime": None, "high_alert_regime": False}, None, "VOUCHER_NOT_OFFERED"),  # outside a regime: money, Art. 52.1
    ({"state": ClaimState.APPROVED, "reason": Reason.CANCELLED, "regime": CANCELLED}, "voucher_issued", None),  # instead of money
])
def test_issue_voucher(kw, dest, code):
    outcome = fire(Trigger.ISSUE_VOUCHER, facts(**kw), NOW)
    assert outcome.dest == dest
    assert code is None or outcome.refusals[0][0] == code


@pytest.mark.parametrize(("today", "redeem", "expire"), [
    (date(2026, 11, 1), "closed", None),  # valid: used
    (date(2026, 11, 2), "closed", None),  # the last valid day itself
    (date(2026, 11, 3), None, "approved"),  # the day after: expired into the refund
])
def test_voucher_redeemed_or_expired_by_its_last_day(today, redeem, expire):
    held = facts(state=ClaimState.VOUCHER_ISSUED, voucher_valid_until=date(2026, 11, 2))
    at = datetime.combine(today, datetime.min.time(), tzinfo=MSK).replace(hour=12)
    assert fire(Trigger.REDEEM_VOUCHER, held, at).dest == redeem
    assert fire(Trigger.EXPIRE_VOUCHER, held, at).dest == expire


def test_an_expired_voucher_of_a_cancelled_event_is_paid_under_the_180_day_deadline():
    held = facts(state=ClaimState.VOUCHER_ISSUED, reason=Reason.CANCELLED, regime=CANCELLED, voucher_valid_until=date(2026, 8, 1))
    at = datetime(2026, 8, 2, 10, 0, tzinfo=MSK)
    assert fire(Trigger.EXPIRE_VOUCHER, held, at).dest == "approved"
    out = effects(Trigger.EXPIRE_VOUCHER, "approved", held, at)
    assert out["payout_due"] == out["regime_refund_due"] == date(2026, 10, 27)


def test_a_postponed_claim_is_refused_with_the_rule_when_the_organizer_keeps_tickets_valid():
    claim = facts(policy=KEEP)
    outcome = fire(Trigger.ASSESS, claim, NOW)
    assert outcome.dest == "rejected"
    code, message = intake_refusal(claim, NOW)
    assert code == "REGIME_TICKETS_VALID" and "№ 442" in message


def test_a_regime_cancelled_claim_is_approved_with_the_180_day_deadline():
    claim = facts(reason=Reason.CANCELLED, event_status="cancelled", regime=CANCELLED)
    assert fire(Trigger.ASSESS, claim, NOW).dest == "approved"
    assert effects(Trigger.ASSESS, "approved", claim, NOW)["payout_due"] == date(2026, 10, 27)
