"""Organizer policy: generous tiers are allowed, tiers below Art. 52.1 are refused; "other"
claims are decided by the organizer, with a voluntary fallback offer on refusal."""
from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from states.policy import (
    LEGAL_POLICY,
    OrganizerPolicy,
    PolicyError,
    Reason,
    TicketPrice,
    fallback_offer,
    quote_refund,
)

MSK = ZoneInfo("Europe/Moscow")
EVENT = datetime(2026, 12, 20, 19, 0, tzinfo=MSK)
TICKET = TicketPrice(price_paid=350000)
GENEROUS = OrganizerPolicy(voluntary_percents=((10, 100), (5, 70), (3, 50), (1, 10)))


@pytest.mark.parametrize(
    ("filed_day", "percent", "amount"),
    [(9, 100, 350000), (12, 70, 245000), (16, 50, 175000), (18, 10, 35000), (19, 0, 0)],
)
def test_generous_policy_pays_more(filed_day, percent, amount):
    quote = quote_refund(reason=Reason.VOLUNTARY, event_start=EVENT,
                         filed_at=datetime(2026, 12, filed_day, 10, 0, tzinfo=MSK),
                         ticket=TICKET, policy=GENEROUS)
    assert (quote.percent, quote.amount) == (percent, amount)
    assert quote.source.startswith("organizer policy")
    if percent:
        assert "legal minimum" in quote.rule
    else:
        assert quote.refusal_code == "TOO_LATE"


@pytest.mark.parametrize(
    ("tiers", "message"),
    [
        (((10, 100), (5, 40), (3, 30)), r"tier \(5, 40\) gives 40 % at d = 5, below .* 50 %"),
        (((10, 90), (5, 50), (3, 30)), r"tier \(10, 90\)"),
        (((10, 100), (5, 50), (3, 20)), r"tier \(3, 20\)"),
        (((12, 100), (5, 50), (3, 30)), r"tier \(5, 50\) gives 50 % at d = 10"),
        (((10, 100), (5, 50), (4, 30)), r"no voluntary tier covers d = 3"),
        (((10, 100),), r"no voluntary tier covers d = 3; .* 30 % for 3 <= d < 5"),
        (((10, 101), (5, 50), (3, 30)), r"0 <= percent <= 100"),
        (((10, 100), (10, 100), (3, 30)), r"same min days"),
        ((), r"must not be empty"),
        (((10,),), r"pairs"),
    ],
)
def test_illegal_policies_are_refused_with_the_offending_tier(tiers, message):
    with pytest.raises(PolicyError, match=message):
        OrganizerPolicy(voluntary_percents=tiers)


def test_tiers_are_stored_sorted_and_legal_default_is_the_law():
    policy = OrganizerPolicy(voluntary_percents=((3, 30), (10, 100), (5, 50)))
    assert policy.voluntary_percents == ((10, 100), (5, 50), (3, 30)) == LEGAL_POLICY.voluntary_percents


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({}, LEGAL_POLICY),
        ({"voluntary_percents": {"10": 100, "5": 70, "3": 50}, "refuse_promo": True},
         OrganizerPolicy(voluntary_percents=((10, 100), (5, 70), (3, 50)), refuse_promo=True)),
        ({"voluntary_percents": [[10, 100], [5, 50], [3, 30]],
          "refund_service_fee_on_cancellation": True},
         OrganizerPolicy(refund_service_fee_on_cancellation=True)),
    ],
)
def test_from_mapping(data, expected):
    assert OrganizerPolicy.from_mapping(data) == expected
    assert OrganizerPolicy.from_mapping(expected.to_mapping()) == expected


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"refund_everything": True}, "unknown keys refund_everything"),
        ({"refuse_promo": "yes"}, "refuse_promo must be true or false"),
        ({"voluntary_percents": {"ten": 100}}, "whole days"),
        ({"voluntary_percents": "10:100"}, "pairs"),
        ({"voluntary_percents": {"10": 100, "5": 30, "3": 30}}, r"tier \(5, 30\)"),
    ],
)
def test_from_mapping_refuses_bad_data(data, message):
    with pytest.raises(PolicyError, match=message):
        OrganizerPolicy.from_mapping(data)


def test_other_reason_quotes_the_maximum_and_leaves_the_decision_to_the_organizer():
    quote = quote_refund(reason=Reason.OTHER, event_start=EVENT,
                         filed_at=datetime(2026, 12, 18, 12, 0, tzinfo=MSK),
                         ticket=TicketPrice(price_paid=350000, service_fee=35000))
    assert (quote.percent, quote.amount, quote.days_before) == (100, 350000, 1)
    assert quote.decided_by_organizer and quote.eligible
    assert "organizer decides" in quote.rule


@pytest.mark.parametrize(
    ("now", "percent"),
    [
        (datetime(2026, 12, 1, 12, 0, tzinfo=MSK), 100),
        (datetime(2026, 12, 12, 12, 0, tzinfo=MSK), 50),
        (datetime(2026, 12, 16, 12, 0, tzinfo=MSK), 30),   # d = 3: still offered
        (datetime(2026, 12, 17, 12, 0, tzinfo=MSK), None),  # d = 2: nothing to offer
        (datetime(2026, 12, 21, 12, 0, tzinfo=MSK), None),  # after the event
    ],
)
def test_fallback_offer_after_an_other_refusal(now, percent):
    offer = fallback_offer(event_start=EVENT, now=now, ticket=TICKET)
    assert (offer.percent if offer else None) == percent
    if offer:
        assert offer.reason is Reason.VOLUNTARY and not offer.decided_by_organizer


def test_no_fallback_offer_for_a_refused_promo_ticket():
    assert fallback_offer(event_start=EVENT, now=datetime(2026, 12, 1, tzinfo=MSK),
                          ticket=TicketPrice(price_paid=350000, promo=True),
                          policy=OrganizerPolicy(refuse_promo=True)) is None
