"""Art. 52.1: event cancelled, replaced or postponed -> 100 % of the ticket price; service fee and
delivery per operator policy."""
from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from states.policy import EVENT_REASONS, OrganizerPolicy, Reason, TicketPrice, quote_refund

MSK = ZoneInfo("Europe/Moscow")
EVENT = datetime(2026, 12, 20, 19, 0, tzinfo=MSK)
TICKET = TicketPrice(price_paid=400000, nominal=350000, service_fee=35000, delivery_fee=20000,
                     promo=True)


@pytest.mark.parametrize("reason", sorted(EVENT_REASONS))
@pytest.mark.parametrize(
    ("fee", "delivery", "amount"),
    [(False, False, 350000), (True, False, 385000), (False, True, 370000), (True, True, 405000)],
)
def test_event_reasons_refund_in_full(reason, fee, delivery, amount):
    policy = OrganizerPolicy(refuse_promo=True, refund_service_fee_on_cancellation=fee,
                             refund_delivery_on_cancellation=delivery)
    # Filed after the event and the ticket is a refused promo: neither matters when the event
    # itself is cancelled, replaced or postponed.
    quote = quote_refund(reason=reason, event_start=EVENT,
                         filed_at=datetime(2026, 12, 22, 12, 0, tzinfo=MSK),
                         ticket=TICKET, policy=policy)
    assert quote.eligible and quote.percent == 100 and quote.base == 350000
    assert quote.amount == amount
    assert quote.service_fee_refund == (35000 if fee else 0)
    assert quote.delivery_refund == (20000 if delivery else 0)
    assert quote.days_before is None and not quote.decided_by_organizer
    assert reason.value in quote.rule and quote.source.startswith("Art. 52.1")
    assert quote.to_json()["refund"] == f"{amount // 100}.00"


def test_reason_accepts_plain_strings():
    quote = quote_refund(reason="cancelled", event_start=EVENT,
                         filed_at=datetime(2026, 12, 1, tzinfo=MSK), ticket=TICKET)
    assert quote.reason is Reason.CANCELLED
