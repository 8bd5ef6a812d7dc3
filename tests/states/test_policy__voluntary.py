"""Art. 52.1 voluntary refunds: the d table, time zones, base, rounding, promo."""
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
    days_before_event,
    quote_refund,
)

MSK = ZoneInfo("Europe/Moscow")
VVO = ZoneInfo("Asia/Vladivostok")
KGD = ZoneInfo("Europe/Kaliningrad")
EVENT = datetime(2026, 12, 20, 19, 0, tzinfo=MSK)
TICKET = TicketPrice(price_paid=350000)


def voluntary(filed_at, *, event_start=EVENT, ticket=TICKET, policy=LEGAL_POLICY):
    return quote_refund(reason=Reason.VOLUNTARY, event_start=event_start, filed_at=filed_at,
                        ticket=ticket, policy=policy)


@pytest.mark.parametrize(
    ("filed_day", "d", "percent", "amount", "eligible"),
    [
        (1, 18, 100, 350000, True),
        (9, 10, 100, 350000, True),
        (10, 9, 50, 175000, True),
        (14, 5, 50, 175000, True),
        (15, 4, 30, 105000, True),
        (16, 3, 30, 105000, True),
        (17, 2, 0, 0, False),
        (19, 0, 0, 0, False),
        (20, 0, 0, 0, False),  # same day, before the start
    ],
)
def test_voluntary_table_at_every_boundary(filed_day, d, percent, amount, eligible):
    quote = voluntary(datetime(2026, 12, filed_day, 12, 0, tzinfo=MSK))
    assert (quote.days_before, quote.percent, quote.amount, quote.eligible) == (
        d, percent, amount, eligible)
    assert quote.source.startswith("Art. 52.1")
    if eligible:
        assert f"{percent} %" in quote.rule and f"d = {d}" in quote.rule
        assert quote.refusal_code is None
    else:
        assert quote.refusal_code == "TOO_LATE"
        assert "трёх дней" in quote.refusal_message_ru


def test_json_shape_matches_the_cli_contract():
    data = voluntary(datetime(2026, 12, 12, 12, 0, tzinfo=MSK)).to_json()
    assert data["percent"] == 50 and data["refund"] == "1750.00" and data["days_before"] == 7
    assert data["eligible"] is True and data["base"] == "3500.00"
    assert data["service_fee_refund"] == "0.00"
    assert data["rule"] == "Art. 52.1: 5 <= d < 10 -> 50 % (d = 7)"


@pytest.mark.parametrize(
    ("filed_at", "d"),
    [
        # Event at 00:30 on the 20th: filing late on the 16th still leaves 17, 18, 19.
        (datetime(2026, 12, 16, 23, 59, tzinfo=MSK), 3),
        (datetime(2026, 12, 17, 0, 1, tzinfo=MSK), 2),
        (datetime(2026, 12, 20, 0, 29, tzinfo=MSK), 0),
    ],
)
def test_event_just_after_midnight(filed_at, d):
    event = datetime(2026, 12, 20, 0, 30, tzinfo=MSK)
    assert days_before_event(event_start=event, filed_at=filed_at) == d


@pytest.mark.parametrize(
    ("venue", "filed_at", "d", "percent"),
    [
        # 23:50 Moscow on the 9th is already 06:50 on the 10th in Vladivostok: d = 9, not 10.
        (VVO, datetime(2026, 12, 9, 23, 50, tzinfo=MSK), 9, 50),
        (VVO, datetime(2026, 12, 9, 16, 50, tzinfo=MSK), 10, 100),  # 23:50 on the 9th in VVO
        # 00:30 Moscow on the 10th is still 23:30 on the 9th in Kaliningrad: d = 10, not 9.
        (KGD, datetime(2026, 12, 10, 0, 30, tzinfo=MSK), 10, 100),
        (KGD, datetime(2026, 12, 10, 1, 0, tzinfo=MSK), 9, 50),
        # A UTC filing time is converted to the venue zone too.
        (VVO, datetime(2026, 12, 14, 14, 30, tzinfo=ZoneInfo("UTC")), 4, 30),
    ],
)
def test_d_is_counted_in_the_venue_time_zone(venue, filed_at, d, percent):
    event = datetime(2026, 12, 20, 19, 0, tzinfo=venue)
    quote = voluntary(filed_at, event_start=event)
    assert (quote.days_before, quote.percent) == (d, percent)


@pytest.mark.parametrize(
    "filed_at",
    [datetime(2026, 12, 20, 19, 0, tzinfo=MSK), datetime(2026, 12, 21, 9, 0, tzinfo=MSK)],
)
def test_filing_at_or_after_the_start_is_an_error(filed_at):
    with pytest.raises(PolicyError, match="^filing after the event start"):
        voluntary(filed_at)


def test_naive_times_are_refused():
    with pytest.raises(PolicyError, match="time zone"):
        voluntary(datetime(2026, 12, 1, 12, 0))


@pytest.mark.parametrize(
    ("price", "nominal", "filed_day", "expected"),
    [
        (33333, None, 16, 10000),      # 30 % of 333.33 = 99.999 -> 100.00
        (333333, None, 12, 166667),    # 50 % of 3333.33 = 1666.665 -> 1666.67
        (1, None, 12, 1),              # 50 % of one kopeck is still one kopeck
        (400000, 350000, 12, 175000),  # paid above nominal: nominal is the base
        (300000, 350000, 12, 150000),  # discounted: what was paid is the base
        (0, 350000, 1, 0),             # free ticket returns nothing
    ],
)
def test_base_and_rounding_up_to_the_kopeck(price, nominal, filed_day, expected):
    ticket = TicketPrice(price_paid=price, nominal=nominal, service_fee=35000, delivery_fee=20000)
    quote = voluntary(datetime(2026, 12, filed_day, 12, 0, tzinfo=MSK), ticket=ticket)
    assert quote.amount == quote.ticket_refund == expected
    assert quote.service_fee_refund == quote.delivery_refund == 0
    assert quote.base == min(price, nominal or price)


@pytest.mark.parametrize(
    ("promo", "refuse_promo", "code", "amount"),
    [
        (True, True, "PROMO_REFUSED", 0),
        (True, False, None, 350000),
        (False, True, None, 350000),
    ],
)
def test_promo_tickets_may_be_refused(promo, refuse_promo, code, amount):
    quote = voluntary(datetime(2026, 12, 1, 12, 0, tzinfo=MSK),
                      ticket=TicketPrice(price_paid=350000, promo=promo),
                      policy=OrganizerPolicy(refuse_promo=refuse_promo))
    assert (quote.refusal_code, quote.amount, quote.eligible) == (code, amount, code is None)
    if code:
        assert "акции" in quote.refusal_message_ru


@pytest.mark.parametrize(
    "kwargs",
    [{"price_paid": -1}, {"price_paid": 1.5}, {"price_paid": 100, "nominal": -5},
     {"price_paid": 100, "service_fee": -1}, {"price_paid": True}],
)
def test_bad_ticket_prices_are_refused(kwargs):
    with pytest.raises(PolicyError):
        TicketPrice(**kwargs)


def test_unknown_reason_is_a_policy_error():
    with pytest.raises(PolicyError, match="unknown reason"):
        quote_refund(reason="refund-me", event_start=EVENT,
                     filed_at=datetime(2026, 12, 1, tzinfo=MSK), ticket=TICKET)
