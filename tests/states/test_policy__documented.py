"""Decree 1491: illness of the buyer, death of a close relative; documents within 14 days."""
from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from states.policy import (
    CLOSE_RELATIVES,
    REFUSAL_MESSAGES_RU,
    DocumentEvidence,
    PolicyError,
    Reason,
    TicketPrice,
    check_documented_claim,
    documents_deadline,
    documents_last_day,
    documents_outstanding,
    quote_refund,
)

MSK = ZoneInfo("Europe/Moscow")
VVO = ZoneInfo("Asia/Vladivostok")
EVENT = datetime(2026, 12, 20, 19, 0, tzinfo=MSK)
FILED = datetime(2026, 12, 18, 12, 0, tzinfo=MSK)
ORDERED = datetime(2026, 11, 1, 12, 0, tzinfo=MSK)
BUYER = "Иванова Алёна Сергеевна"


def sick_leave(**overrides) -> DocumentEvidence:
    fields = dict(kind="sick_leave_gosuslugi", received_at=datetime(2026, 12, 22, tzinfo=MSK),
                  sick_from=date(2026, 12, 17), sick_to=date(2026, 12, 24),
                  person_name="ИВАНОВА Алена Сергеевна")
    return DocumentEvidence(**(fields | overrides))


def death_certificate(**overrides) -> DocumentEvidence:
    fields = dict(kind="death_certificate", received_at=datetime(2026, 12, 22, tzinfo=MSK),
                  person_name="Иванов Сергей Петрович", relation="parent")
    return DocumentEvidence(**(fields | overrides))


def codes(*, reason=Reason.ILLNESS, documents=(), filed_at=FILED, ordered=ORDERED,
          buyer=BUYER, explanation=None, event_start=EVENT, now=None) -> list[str]:
    refusals = check_documented_claim(
        reason=reason, event_start=event_start, filed_at=filed_at, order_created_at=ordered,
        buyer_name=buyer, name_mismatch_explanation=explanation, documents=list(documents),
        now=now)
    for refusal in refusals:
        assert refusal.message_ru and refusal.message_ru[0].isupper()
    return [refusal.code for refusal in refusals]


def test_a_clean_illness_claim_has_no_refusal():
    assert codes(documents=[sick_leave()]) == []


def test_a_clean_death_claim_has_no_refusal():
    assert codes(reason=Reason.DEATH, documents=[death_certificate()]) == []


@pytest.mark.parametrize("reason", [Reason.ILLNESS, Reason.DEATH])
def test_no_documents_yet_is_not_a_refusal(reason):
    assert codes(reason=reason) == []
    assert documents_outstanding(documents=[])


@pytest.mark.parametrize(
    ("documents", "outstanding"),
    [([], True), ([sick_leave(judged_false=True)], True), ([sick_leave()], False)],
)
def test_documents_outstanding(documents, outstanding):
    assert documents_outstanding(documents=documents) is outstanding


@pytest.mark.parametrize(
    ("received_at", "expected"),
    [
        (EVENT + timedelta(days=14), []),                                   # the event's hour on the 14th day
        # Regression: the window closed at the event's hour (19:00) of the 14th day, not at 24:00.
        (datetime(2027, 1, 3, 23, 59, 59, tzinfo=MSK), []),
        (datetime(2027, 1, 3, 20, 59, 59, tzinfo=ZoneInfo("UTC")), []),      # same instant, UTC
        (datetime(2027, 1, 4, 0, 0, tzinfo=MSK), ["DOCUMENTS_LATE"]),        # the 15th day has begun
    ],
)
def test_the_documents_window_runs_to_the_end_of_its_14th_day_in_the_venue_zone(received_at, expected):
    assert documents_last_day(EVENT) == date(2027, 1, 3)
    assert documents_deadline(EVENT) == datetime(2027, 1, 4, 0, 0, tzinfo=MSK)
    assert codes(documents=[sick_leave(received_at=received_at)]) == expected


def test_the_window_end_is_midnight_of_the_venue_not_of_moscow():
    # An event at 23:30 in Vladivostok on 20.12: the window closes at 00:00 of 04.01 Vladivostok time,
    # which is 17:00 on 03.01 in Moscow.
    event = datetime(2026, 12, 20, 23, 30, tzinfo=VVO)
    assert documents_deadline(event) == datetime(2027, 1, 4, 0, 0, tzinfo=VVO)
    late = sick_leave(received_at=datetime(2027, 1, 3, 17, 0, tzinfo=MSK), sick_from=date(2026, 12, 15), sick_to=date(2026, 12, 25))
    assert codes(event_start=event, filed_at=event - timedelta(days=1), documents=[late]) == ["DOCUMENTS_LATE"]


@pytest.mark.parametrize(
    ("now", "expected"),
    [(datetime(2027, 1, 3, 23, 59, tzinfo=MSK), []), (datetime(2027, 1, 4, 0, 0, tzinfo=MSK), ["DOCUMENTS_LATE"])],
)
def test_window_closed_without_documents(now, expected):
    assert codes(now=now) == expected


def test_one_late_extra_document_does_not_spoil_a_claim_whose_valid_document_came_in_time():
    """Regression: any document received after the window refused the whole claim (DOCUMENTS_LATE)."""
    in_time = sick_leave(received_at=EVENT + timedelta(days=2))
    extra = sick_leave(kind="eln_copy", received_at=EVENT + timedelta(days=20))
    assert codes(documents=[in_time, extra]) == []
    assert codes(documents=[in_time, extra], now=EVENT + timedelta(days=30)) == []
    # Only late documents: late.
    assert codes(documents=[extra]) == ["DOCUMENTS_LATE"]


@pytest.mark.parametrize(
    ("case", "kwargs", "expected"),
    [
        ("filed at the start", dict(filed_at=EVENT), ["FILED_AFTER_EVENT"]),
        ("filed after", dict(filed_at=EVENT + timedelta(hours=1)), ["FILED_AFTER_EVENT"]),
        ("false document", dict(documents=[sick_leave(judged_false=True)]), ["DOCUMENTS_FALSE"]),
        ("bought after illness began",
         dict(ordered=datetime(2026, 12, 18, 9, 0, tzinfo=MSK)), ["BOUGHT_AFTER_ILLNESS"]),
        ("bought on the first sick day",
         dict(ordered=datetime(2026, 12, 17, 9, 0, tzinfo=MSK)), []),
        ("sick period ends before the event",
         dict(documents=[sick_leave(sick_to=date(2026, 12, 19))]), ["EVENT_OUTSIDE_SICK_PERIOD"]),
        ("sick period starts after the event",
         dict(documents=[sick_leave(sick_from=date(2026, 12, 21), sick_to=date(2026, 12, 28))]),
         ["EVENT_OUTSIDE_SICK_PERIOD"]),
        ("sick period ends on the event day",
         dict(documents=[sick_leave(sick_to=date(2026, 12, 20))]), []),
        ("open sick leave", dict(documents=[sick_leave(sick_to=None)]), []),
        ("extension covers the event",
         dict(documents=[sick_leave(sick_to=date(2026, 12, 19)),
                         sick_leave(kind="eln_copy", sick_from=date(2026, 12, 19),
                                    sick_to=date(2026, 12, 26))]), []),
        ("other person's sick leave",
         dict(documents=[sick_leave(person_name="Петров Пётр Петрович")]), ["NAME_MISMATCH"]),
        ("explained name change",
         dict(documents=[sick_leave(person_name="Петрова Алёна Сергеевна")],
              explanation="Сменила фамилию после замужества"), []),
        ("blank explanation does not count",
         dict(documents=[sick_leave(person_name="Петрова Алёна Сергеевна")], explanation="  "),
         ["NAME_MISMATCH"]),
        ("word order and no patronymic",
         dict(documents=[sick_leave(person_name="алена иванова")]), []),
        ("death certificate for illness",
         dict(documents=[death_certificate()]), ["WRONG_DOCUMENT_KIND"]),
        ("another document kind may be agreed",
         dict(documents=[sick_leave(kind="other")]), []),
        ("pcr test", dict(documents=[sick_leave(kind="pcr_test")]), []),
    ],
)
def test_illness_refusals(case, kwargs, expected):
    assert codes(**({"documents": [sick_leave()]} | kwargs)) == expected, case


@pytest.mark.parametrize("relation", sorted(CLOSE_RELATIVES))
def test_every_family_code_relative_is_accepted(relation):
    assert codes(reason=Reason.DEATH, documents=[death_certificate(relation=relation)]) == []


@pytest.mark.parametrize(
    ("documents", "expected"),
    [
        ([death_certificate(relation="cousin")], ["NOT_CLOSE_RELATIVE"]),
        ([death_certificate(relation="friend")], ["NOT_CLOSE_RELATIVE"]),
        ([sick_leave()], ["WRONG_DOCUMENT_KIND"]),
        ([death_certificate(judged_false=True)], ["DOCUMENTS_FALSE"]),
        # The deceased's name differs from the buyer's: that is not a mismatch.
        ([death_certificate(person_name="Смирнов Олег")], []),
    ],
)
def test_death_refusals(documents, expected):
    assert codes(reason=Reason.DEATH, documents=documents) == expected


def test_refusals_accumulate_without_duplicates():
    documents = [sick_leave(judged_false=True, received_at=EVENT + timedelta(days=20)),
                 sick_leave(received_at=EVENT + timedelta(days=30))]
    assert codes(filed_at=EVENT + timedelta(days=1), documents=documents) == [
        "FILED_AFTER_EVENT", "DOCUMENTS_LATE", "DOCUMENTS_FALSE"]


def test_event_date_is_taken_in_the_venue_zone():
    # 01:00 on the 21st in Vladivostok is still the 20th in Moscow; the venue's date counts.
    event = datetime(2026, 12, 21, 1, 0, tzinfo=VVO)
    documents = [sick_leave(sick_from=date(2026, 12, 15), sick_to=date(2026, 12, 20))]
    assert codes(event_start=event, documents=documents) == ["EVENT_OUTSIDE_SICK_PERIOD"]


def test_seed_wording_in_messages():
    assert REFUSAL_MESSAGES_RU["FILED_AFTER_EVENT"] == "Заявка должна быть подана до начала мероприятия."
    assert REFUSAL_MESSAGES_RU["EVENT_OUTSIDE_SICK_PERIOD"].startswith(
        "Дата мероприятия должна входить в период болезни")
    assert REFUSAL_MESSAGES_RU["NAME_MISMATCH"].startswith("ФИО в заказе и в справке должны совпадать")


@pytest.mark.parametrize(
    ("filed_at", "eligible", "code"),
    [(FILED, True, None), (EVENT, False, "FILED_AFTER_EVENT")],
)
@pytest.mark.parametrize("reason", [Reason.ILLNESS, Reason.DEATH])
def test_documented_quote_is_full_price_if_approved(reason, filed_at, eligible, code):
    quote = quote_refund(reason=reason, event_start=EVENT, filed_at=filed_at,
                         ticket=TicketPrice(price_paid=400000, nominal=350000, service_fee=1))
    assert quote.decided_by_organizer and quote.source.startswith("Government Decree 1491")
    assert (quote.eligible, quote.refusal_code) == (eligible, code)
    assert quote.amount == (350000 if eligible else 0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(kind="selfie"), "unknown document kind"),
        (dict(received_at=datetime(2026, 12, 22)), "time zone"),
        (dict(sick_from=date(2026, 12, 20), sick_to=date(2026, 12, 19)), "before it starts"),
    ],
)
def test_bad_documents_are_refused(kwargs, message):
    with pytest.raises(PolicyError, match=message):
        sick_leave(**kwargs)


def test_only_documented_reasons_are_checked():
    with pytest.raises(PolicyError, match="not a documented reason"):
        codes(reason=Reason.OTHER)
