"""The refund policy: how much a buyer gets back, and when a documented claim must be refused.

Sources (see DESIGN.md, "The rules"):
  * Art. 52.1 of the Fundamentals of Culture Legislation (added by 193-FZ of 18.07.2019):
    voluntary refunds by days before the event, and 100 % when an event is cancelled, replaced or
    postponed.
  * Government Decree 1491 of 18.09.2020: illness of the buyer, death of a family member or close
    relative; documents may follow within 14 days of the event.
  * The operators' own rules (seed text): promo tickets, service fee and delivery, "other" reasons.

Pure: no I/O, no clock; every time is an argument. Money is integer kopecks.
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from enum import StrEnum

from states.money import format_rub
from states.regimes import DECREE_442_RU, SOURCE_DECREE_442, RegimeRuling

__all__ = [
    "Reason",
    "DOCUMENTED_REASONS",
    "ORGANIZER_DECIDES",
    "EVENT_REASONS",
    "PolicyError",
    "ReasonNotAllowed",
    "check_reason_for_event",
    "reasons_for_event",
    "DECISION_DEADLINE_RULE",
    "OrganizerPolicy",
    "LEGAL_POLICY",
    "LEGAL_VOLUNTARY_PERCENTS",
    "TicketPrice",
    "Quote",
    "days_before_event",
    "quote_refund",
    "fallback_offer",
    "DocumentEvidence",
    "Refusal",
    "REFUSAL_MESSAGES_RU",
    "DOCUMENT_KINDS",
    "CLOSE_RELATIVES",
    "DOCUMENTS_WINDOW",
    "documents_deadline",
    "documents_last_day",
    "check_documented_claim",
    "documents_outstanding",
]

SOURCE_ART_52_1 = "Art. 52.1 Fundamentals of Culture Legislation (193-FZ of 18.07.2019)"
SOURCE_DECREE_1491 = "Government Decree 1491 of 18.09.2020"
SOURCE_OPERATOR = "operator rules (seed)"
# docs/rules.md, "Decision deadline": cited by every quote the organizer decides.
DECISION_DEADLINE_RULE = (
    "Decision deadline (docs/rules.md): the organizer decides within 10 working days of the day the "
    "claim became decidable (filed; for illness or death, the day its documents are complete), 20 if "
    "extended; money is paid within 10 working days of the decision"
)


class Reason(StrEnum):
    VOLUNTARY = "voluntary"
    ILLNESS = "illness"
    DEATH = "death"
    OTHER = "other"
    CANCELLED = "cancelled"
    POSTPONED = "postponed"
    REPLACED = "replaced"


DOCUMENTED_REASONS: frozenset[Reason] = frozenset({Reason.ILLNESS, Reason.DEATH})
ORGANIZER_DECIDES: frozenset[Reason] = frozenset({Reason.ILLNESS, Reason.DEATH, Reason.OTHER})
EVENT_REASONS: frozenset[Reason] = frozenset(
    {Reason.CANCELLED, Reason.POSTPONED, Reason.REPLACED}
)


class PolicyError(ValueError):
    """An illegal organizer policy or bad input to the policy; the message is one English line."""


class ReasonNotAllowed(PolicyError):
    """A buyer's claim the rules refuse at the door: `field` names the input, `code` the rule,
    `message_ru` is what the buyer reads (the API answers 422 with it)."""

    def __init__(self, code: str, message_ru: str, field: str = "reason"):
        super().__init__(f"{field}: {code}")
        self.code, self.message_ru, self.field = code, message_ru, field


# Event status -> the one event reason it supports (Art. 52.1: the event itself was cancelled,
# replaced or postponed; a buyer's word is not enough).
_STATUS_FOR_REASON = {"cancelled": "cancelled", "postponed": "postponed", "replaced": "replaced"}
_NOT_SO_RU = {
    "cancelled": "Мероприятие не отменено, поэтому вернуть билет по причине отмены нельзя. Выберите другую причину возврата.",
    "postponed": "Мероприятие не перенесено, поэтому вернуть билет по причине переноса нельзя. Выберите другую причину возврата.",
    "replaced": "Мероприятие не заменено, поэтому вернуть билет по причине замены нельзя. Выберите другую причину возврата.",
}


# Art. 52.1: a cancelled or replaced event is refunded in full by the event's own reason; a buyer's
# own reason (voluntary, illness, death, «Прочее») would price it by days before or make it wait for
# the organizer. A postponed event leaves the buyer the choice (the tickets stay valid for the new date).
_EVENT_REASON_ONLY_RU = {
    "cancelled": "Мероприятие отменено: выберите причину возврата «Отмена мероприятия», и мы вернём 100 % стоимости билета.",
    "replaced": "Мероприятие заменено: выберите причину возврата «Замена мероприятия», и мы вернём 100 % стоимости билета.",
}


def check_reason_for_event(
    *, reason: Reason | str, event_status: str, filed_at: datetime, event_start: datetime, claims_until: date | None = None
) -> None:
    """Raise ReasonNotAllowed when the claim may not be filed for this reason.

    DESIGN.md, "Event cancelled, replaced, or postponed": `cancelled`, `postponed` and `replaced` are
    claim reasons only when the event's status says so, and a cancelled or replaced event takes no
    other reason (EVENT_CANCELLED, EVENT_REPLACED: the buyer is pointed to the event's reason, 100 %).
    A postponed event's last day for such claims
    (`claims_until`, set by the organizer: Park Live took them until 1 June 2022) counts to 24:00 of
    that day in the venue's zone (the zone of `event_start`).
    """
    try:
        reason = Reason(reason)
    except ValueError:
        raise PolicyError(f"unknown reason {reason!r}") from None
    if reason not in EVENT_REASONS:
        if event_status in _EVENT_REASON_ONLY_RU:
            raise ReasonNotAllowed(f"EVENT_{event_status.upper()}", _EVENT_REASON_ONLY_RU[event_status])
        return
    if event_status != _STATUS_FOR_REASON[reason.value]:
        raise ReasonNotAllowed(f"EVENT_NOT_{reason.value.upper()}", _NOT_SO_RU[reason.value])
    _require_aware(filed_at, "filed_at")
    if claims_until is not None and _venue_date(filed_at, event_start) > claims_until:
        raise ReasonNotAllowed(
            "CLAIMS_CLOSED",
            f"Заявки на возврат билетов на перенесённое мероприятие принимались до {claims_until:%d.%m.%Y} включительно.",
        )


_BUYERS_OWN: tuple[Reason, ...] = (Reason.VOLUNTARY, Reason.ILLNESS, Reason.DEATH, Reason.OTHER)


def reasons_for_event(event_status: str) -> tuple[Reason, ...]:
    """The reasons a claim form offers for an event of this status, the event's own first: exactly
    those `check_reason_for_event` lets through (a cancelled or replaced event: its own reason only;
    postponed: its own reason, then the buyer's own; scheduled: the buyer's own)."""
    if event_status in _EVENT_REASON_ONLY_RU:
        return (Reason(event_status),)
    if event_status == "postponed":
        return (Reason.POSTPONED, *_BUYERS_OWN)
    return _BUYERS_OWN


# Refusal codes and the buyer-facing Russian text (wording from the operators' seed text).
REFUSAL_MESSAGES_RU: dict[str, str] = {
    "TOO_LATE": (
        "До мероприятия осталось менее трёх дней, поэтому вернуть билет по собственной "
        "инициативе уже нельзя."
    ),
    "PROMO_REFUSED": (
        "Билет куплен по акции или распродаже, и организатор не принимает такие билеты к возврату."
    ),
    "FILED_AFTER_EVENT": "Заявка должна быть подана до начала мероприятия.",
    "DOCUMENTS_LATE": (
        "Документы поданы позднее 14 дней с даты проведения мероприятия, поэтому "
        "мы не можем их принять."
    ),
    "DOCUMENTS_FALSE": "Представленные документы содержат недостоверную информацию.",
    "BOUGHT_AFTER_ILLNESS": (
        "Билеты приобретены после начала болезни, препятствующей посещению мероприятия."
    ),
    "EVENT_OUTSIDE_SICK_PERIOD": (
        "Дата мероприятия должна входить в период болезни. Если больничный продлят, "
        "пожалуйста, пришлите продлённый документ."
    ),
    "NAME_MISMATCH": (
        "ФИО в заказе и в справке должны совпадать. Если они отличаются, пожалуйста, "
        "объясните почему в заявке."
    ),
    "NOT_CLOSE_RELATIVE": (
        "Возврат по этой причине возможен в случае смерти члена семьи или близкого "
        "родственника: родителей, детей, бабушек и дедушек, внуков, братьев и сестёр, супруга."
    ),
    "WRONG_DOCUMENT_KIND_ILLNESS": (
        "Для возврата по болезни подойдёт скриншот с Госуслуг об открытом больничном, фото "
        "копии электронного листка нетрудоспособности или результат ПЦР-теста."
    ),
    "WRONG_DOCUMENT_KIND_DEATH": (
        "Для возврата в связи со смертью близкого родственника нужно свидетельство о смерти."
    ),
}


# --------------------------------------------------------------------------------------------
# Organizer policy
# --------------------------------------------------------------------------------------------

# Art. 52.1: (min d, legal minimum percent), highest d first; below the last tier the minimum is 0.
LEGAL_VOLUNTARY_PERCENTS: tuple[tuple[int, int], ...] = ((10, 100), (5, 50), (3, 30))


def _tier_for(tiers: tuple[tuple[int, int], ...], d: int) -> tuple[int, int] | None:
    """The tier that applies to d: the one with the largest min d not above d (tiers sorted desc)."""
    for min_days, percent in tiers:
        if d >= min_days:
            return (min_days, percent)
    return None


def _legal_minimum_percent(d: int) -> int:
    """Art. 52.1: d >= 10 -> 100 %, 5 <= d < 10 -> 50 %, 3 <= d < 5 -> 30 %, d < 3 -> 0."""
    tier = _tier_for(LEGAL_VOLUNTARY_PERCENTS, d)
    return tier[1] if tier else 0


def _legal_range_text(d: int) -> str:
    if d >= 10:
        return "d >= 10"
    if d >= 5:
        return "5 <= d < 10"
    if d >= 3:
        return "3 <= d < 5"
    return "d < 3"


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class OrganizerPolicy:
    """Per-organizer refund parameters. Art. 52.1 percentages are minimums: more, never less.

    `voluntary_percents` holds (min d, percent) tiers; the tier with the largest min d not above
    d applies, and below the last tier the refund is 0. Tiers are stored sorted, highest d first.
    """

    voluntary_percents: tuple[tuple[int, int], ...] = LEGAL_VOLUNTARY_PERCENTS
    refuse_promo: bool = False
    refund_service_fee_on_cancellation: bool = False
    refund_delivery_on_cancellation: bool = False
    # Decree 442 (states/regimes.py): an event postponed by at most 18 months under a high-alert
    # regime keeps its tickets valid; the organizer may refuse refunds (False) and/or exchange
    # tickets for vouchers. A voucher is valid `voucher_valid_days` from its issue.
    regime_postponed_refunds: bool = True
    vouchers_offered: bool = False
    voucher_valid_days: int = 365

    def __post_init__(self) -> None:
        tiers = self._normalised_tiers(self.voluntary_percents)
        object.__setattr__(self, "voluntary_percents", tiers)
        for flag in ("refuse_promo", "refund_service_fee_on_cancellation",
                     "refund_delivery_on_cancellation", "regime_postponed_refunds", "vouchers_offered"):
            if not isinstance(getattr(self, flag), bool):
                raise PolicyError(f"organizer policy: {flag} must be true or false")
        if not _is_int(self.voucher_valid_days) or not 1 <= self.voucher_valid_days <= 3660:
            raise PolicyError("organizer policy: voucher_valid_days must be a whole number of days from 1 to 3660")
        self._check_legal_minimums(tiers)

    @staticmethod
    def _normalised_tiers(raw: object) -> tuple[tuple[int, int], ...]:
        try:
            tiers = tuple((pair[0], pair[1]) for pair in raw)  # type: ignore[attr-defined]
            if any(len(pair) != 2 for pair in raw):  # type: ignore[attr-defined]
                raise TypeError
        except (TypeError, IndexError, KeyError):
            raise PolicyError(
                "organizer policy: voluntary_percents must be a list of (min days, percent) pairs"
            ) from None
        if not tiers:
            raise PolicyError("organizer policy: voluntary_percents must not be empty")
        for min_days, percent in tiers:
            if not (_is_int(min_days) and _is_int(percent)):
                raise PolicyError(
                    f"organizer policy: tier ({min_days!r}, {percent!r}) must be two integers"
                )
            if min_days < 0 or not 0 <= percent <= 100:
                raise PolicyError(
                    f"organizer policy: tier ({min_days}, {percent}) needs min days >= 0 "
                    "and 0 <= percent <= 100"
                )
        days = [min_days for min_days, _ in tiers]
        if len(set(days)) != len(days):
            raise PolicyError("organizer policy: two voluntary tiers share the same min days")
        return tuple(sorted(tiers, reverse=True))

    @staticmethod
    def _check_legal_minimums(tiers: tuple[tuple[int, int], ...]) -> None:
        """Art. 52.1: for every d the organizer's percent must be at least the legal minimum."""
        horizon = max(LEGAL_VOLUNTARY_PERCENTS[0][0], tiers[0][0]) + 1
        for d in range(horizon):
            legal = _legal_minimum_percent(d)
            tier = _tier_for(tiers, d)
            offered = tier[1] if tier else 0
            if offered >= legal:
                continue
            where = _legal_range_text(d)
            if tier is None:
                raise PolicyError(
                    f"organizer policy: no voluntary tier covers d = {d}; Art. 52.1 requires "
                    f"at least {legal} % for {where}"
                )
            raise PolicyError(
                f"organizer policy: tier ({tier[0]}, {tier[1]}) gives {offered} % at d = {d}, "
                f"below the Art. 52.1 minimum of {legal} % for {where}"
            )

    def voluntary_percent(self, d: int) -> tuple[int, tuple[int, int] | None]:
        """The percent this policy gives at d, and the tier it comes from (None: below all)."""
        tier = _tier_for(self.voluntary_percents, d)
        return (tier[1] if tier else 0), tier

    @classmethod
    def from_mapping(cls, data: Mapping) -> OrganizerPolicy:
        """Build a policy from stored data (JSON): unknown keys and wrong types are PolicyError.

        `voluntary_percents` may be a list of [min days, percent] pairs or a {min days: percent}
        mapping (keys may be strings, as JSON objects require).
        """
        if not isinstance(data, Mapping):
            raise PolicyError("organizer policy must be a mapping")
        known = {"voluntary_percents", "refuse_promo", "refund_service_fee_on_cancellation",
                 "refund_delivery_on_cancellation", "regime_postponed_refunds", "vouchers_offered",
                 "voucher_valid_days"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise PolicyError(f"organizer policy: unknown keys {', '.join(map(str, unknown))}")
        kwargs = dict(data)
        if "voluntary_percents" in kwargs:
            raw = kwargs["voluntary_percents"]
            if isinstance(raw, Mapping):
                try:
                    raw = [(int(k), v) for k, v in raw.items()]
                except (TypeError, ValueError):
                    raise PolicyError(
                        "organizer policy: voluntary_percents keys must be whole days"
                    ) from None
            if isinstance(raw, (str, bytes)):
                raise PolicyError(
                    "organizer policy: voluntary_percents must be a list of (min days, percent) "
                    "pairs"
                )
            kwargs["voluntary_percents"] = raw
        return cls(**kwargs)

    def to_mapping(self) -> dict:
        return {
            "voluntary_percents": [list(tier) for tier in self.voluntary_percents],
            "refuse_promo": self.refuse_promo,
            "refund_service_fee_on_cancellation": self.refund_service_fee_on_cancellation,
            "refund_delivery_on_cancellation": self.refund_delivery_on_cancellation,
            "regime_postponed_refunds": self.regime_postponed_refunds,
            "vouchers_offered": self.vouchers_offered,
            "voucher_valid_days": self.voucher_valid_days,
        }


LEGAL_POLICY = OrganizerPolicy()


# --------------------------------------------------------------------------------------------
# Prices and quotes
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TicketPrice:
    """What the buyer paid, in kopecks. `nominal` is the face value printed on the ticket."""

    price_paid: int
    nominal: int | None = None
    service_fee: int = 0
    delivery_fee: int = 0
    promo: bool = False

    def __post_init__(self) -> None:
        for name in ("price_paid", "service_fee", "delivery_fee"):
            value = getattr(self, name)
            if not _is_int(value) or value < 0:
                raise PolicyError(f"{name} must be a non-negative integer of kopecks, got {value!r}")
        if self.nominal is not None and (not _is_int(self.nominal) or self.nominal < 0):
            raise PolicyError(
                f"nominal must be a non-negative integer of kopecks, got {self.nominal!r}"
            )
        if not isinstance(self.promo, bool):
            raise PolicyError("promo must be true or false")

    @property
    def base(self) -> int:
        """The refund base: what the buyer actually paid, never more than nominal."""
        if self.nominal is None:
            return self.price_paid
        return min(self.price_paid, self.nominal)


@dataclass(frozen=True)
class Quote:
    """How much goes back and why. Money in kopecks; `amount` is the total to pay back."""

    reason: Reason
    eligible: bool
    percent: int
    base: int
    ticket_refund: int
    service_fee_refund: int
    delivery_refund: int
    amount: int
    days_before: int | None
    rule: str
    source: str
    refusal_code: str | None = None
    refusal_message_ru: str | None = None
    # illness/death/other: the quote is what is paid IF the organizer approves.
    decided_by_organizer: bool = False
    # The rule in Russian when it is not Art. 52.1's plain wording (Decree 442 names its own rule).
    rule_ru: str | None = None

    @property
    def deadline_rule(self) -> str | None:
        """The rule that sets when the organizer must decide (only for claims the organizer decides)."""
        return DECISION_DEADLINE_RULE if self.decided_by_organizer else None

    def to_json(self) -> dict:
        """JSON-ready dict: money as "1750.00" strings; `refund` is the total (= amount)."""
        return {
            "reason": str(self.reason),
            "eligible": self.eligible,
            "percent": self.percent,
            "refund": format_rub(self.amount),
            "amount": format_rub(self.amount),
            "base": format_rub(self.base),
            "ticket_refund": format_rub(self.ticket_refund),
            "service_fee_refund": format_rub(self.service_fee_refund),
            "delivery_refund": format_rub(self.delivery_refund),
            "days_before": self.days_before,
            "rule": self.rule,
            "source": self.source,
            "refusal_code": self.refusal_code,
            "refusal_message_ru": self.refusal_message_ru,
            "decided_by_organizer": self.decided_by_organizer,
            "deadline_rule": self.deadline_rule,
            "rule_ru": self.rule_ru,
        }


def _require_aware(value: datetime, name: str) -> None:
    if not isinstance(value, datetime):
        raise PolicyError(f"{name} must be a datetime")
    if value.tzinfo is None or value.utcoffset() is None:
        raise PolicyError(f"{name} must carry a time zone (got naive {value.isoformat()})")


def _venue_date(moment: datetime, event_start: datetime) -> date:
    """The calendar date of `moment` in the venue's time zone (the zone of `event_start`)."""
    try:
        return moment.astimezone(event_start.tzinfo).date()
    except OverflowError:  # year 1 or 9999 moved across a zone boundary
        raise PolicyError(f"{moment.isoformat()} is at the edge of the calendar") from None


def days_before_event(*, event_start: datetime, filed_at: datetime) -> int:
    """Art. 52.1: d = whole calendar days strictly between filing date and event date.

    Both dates are taken in the venue's time zone (that of `event_start`) and both are excluded:
    filing on the event day or the day before gives 0. Never negative.
    """
    _require_aware(event_start, "event_start")
    _require_aware(filed_at, "filed_at")
    gap = (event_start.date() - _venue_date(filed_at, event_start)).days - 1
    return max(gap, 0)


def _percent_of(base: int, percent: int) -> int:
    """percent % of base in kopecks, rounded UP to the kopeck (never below the legal minimum)."""
    return -(-base * percent // 100)


def _refusal(code: str) -> tuple[str, str]:
    return code, REFUSAL_MESSAGES_RU[code]


def quote_refund(
    *,
    reason: Reason,
    event_start: datetime,
    filed_at: datetime,
    ticket: TicketPrice,
    policy: OrganizerPolicy = LEGAL_POLICY,
    regime: RegimeRuling | None = None,
) -> Quote:
    """Quote a refund for one ticket. Every quote names its rule and source.

    * voluntary: Art. 52.1 table (or the organizer's more generous tiers) on the base; fee and
      delivery are not refunded; a promo ticket may be refused (PROMO_REFUSED); d < 3 gives
      TOO_LATE; filing at or after the event start is a PolicyError.
    * illness / death (Decree 1491): 100 % of the base if the organizer approves; a claim filed
      at or after the event start is ineligible (FILED_AFTER_EVENT).
    * other: 100 % is the most the buyer may get; the organizer decides freely.
    * cancelled / replaced / postponed (Art. 52.1): 100 % of the base, plus service fee and
      delivery when the operator's policy says so.
    * the same under a high-alert regime (`regime`, Decree 442, states/regimes.py): treated as
      cancelled -> 100 %, paid within 180 days of the regime's end; postponed by at most 18 months ->
      100 % only if the organizer accepts refunds, else REGIME_TICKETS_VALID (with the voucher
      option when the organizer offers vouchers).
    """
    try:
        reason = Reason(reason)
    except ValueError:
        raise PolicyError(f"unknown reason {reason!r}") from None
    _require_aware(event_start, "event_start")
    _require_aware(filed_at, "filed_at")
    if not isinstance(ticket, TicketPrice):
        raise PolicyError("ticket must be a TicketPrice")
    base = ticket.base

    if reason is Reason.VOLUNTARY:
        return _quote_voluntary(event_start=event_start, filed_at=filed_at, ticket=ticket,
                                policy=policy)

    if reason in EVENT_REASONS and regime is not None:
        return _quote_decree_442(reason=reason, ticket=ticket, policy=policy, regime=regime)

    if reason in EVENT_REASONS:
        fee = ticket.service_fee if policy.refund_service_fee_on_cancellation else 0
        delivery = ticket.delivery_fee if policy.refund_delivery_on_cancellation else 0
        extras = []
        if fee:
            extras.append("service fee")
        if delivery:
            extras.append("delivery")
        extra_text = f" + {' + '.join(extras)} (operator policy)" if extras else ""
        return Quote(
            reason=reason, eligible=True, percent=100, base=base, ticket_refund=base,
            service_fee_refund=fee, delivery_refund=delivery, amount=base + fee + delivery,
            days_before=None,
            rule=f"Art. 52.1: event {reason} -> 100 % of the ticket price{extra_text}",
            source=SOURCE_ART_52_1,
        )

    d = days_before_event(event_start=event_start, filed_at=filed_at)
    if reason is Reason.OTHER:
        return Quote(
            reason=reason, eligible=True, percent=100, base=base, ticket_refund=base,
            service_fee_refund=0, delivery_refund=0, amount=base, days_before=d,
            rule="Other reason: organizer decides freely; up to 100 % of the ticket price",
            source=SOURCE_OPERATOR, decided_by_organizer=True,
        )

    # illness / death
    what = "illness of the buyer" if reason is Reason.ILLNESS else "death of a close relative"
    if filed_at >= event_start:
        code, message = _refusal("FILED_AFTER_EVENT")
        return Quote(
            reason=reason, eligible=False, percent=0, base=base, ticket_refund=0,
            service_fee_refund=0, delivery_refund=0, amount=0, days_before=d,
            rule=f"Decree 1491: {what} -> claim must be filed before the event starts",
            source=SOURCE_DECREE_1491, refusal_code=code, refusal_message_ru=message,
            decided_by_organizer=True,
        )
    return Quote(
        reason=reason, eligible=True, percent=100, base=base, ticket_refund=base,
        service_fee_refund=0, delivery_refund=0, amount=base, days_before=d,
        rule=f"Decree 1491: {what}, documented -> 100 % of the ticket price if approved",
        source=SOURCE_DECREE_1491, decided_by_organizer=True,
    )


REGIME_TICKETS_VALID_RU = (
    "Мероприятие перенесено в период режима повышенной готовности не более чем на 18 месяцев, и организатор "
    "сохранил билеты действительными на новую дату без возврата денег ({rule})."
)
REGIME_VOUCHER_OFFER_RU = " Вместо возврата организатор предлагает обменять билет на ваучер на ту же сумму."


def _quote_decree_442(*, reason: Reason, ticket: TicketPrice, policy: OrganizerPolicy, regime: RegimeRuling) -> Quote:
    """Decree 442 (states/regimes.py): treated as cancelled -> 100 % within 180 days of the regime's
    end; postponed by at most 18 months -> tickets stay valid, money only if the organizer accepts refunds."""
    base = ticket.base
    if regime.tickets_stay_valid and not policy.regime_postponed_refunds:
        message = REGIME_TICKETS_VALID_RU.format(rule=DECREE_442_RU)
        if policy.vouchers_offered:
            message += REGIME_VOUCHER_OFFER_RU
        return Quote(
            reason=reason, eligible=False, percent=0, base=base, ticket_refund=0, service_fee_refund=0,
            delivery_refund=0, amount=0, days_before=None,
            rule=f"{regime.text}; organizer policy: refunds refused, tickets stay valid",
            source=f"{SOURCE_DECREE_442}; organizer policy", refusal_code="REGIME_TICKETS_VALID",
            refusal_message_ru=message, rule_ru=regime.text_ru,
        )
    fee = ticket.service_fee if policy.refund_service_fee_on_cancellation else 0
    delivery = ticket.delivery_fee if policy.refund_delivery_on_cancellation else 0
    accepted = "" if regime.treated_as_cancelled else "; organizer policy: refunds accepted"
    return Quote(
        reason=reason, eligible=True, percent=100, base=base, ticket_refund=base, service_fee_refund=fee,
        delivery_refund=delivery, amount=base + fee + delivery, days_before=None,
        rule=f"{regime.text}{accepted} -> 100 % of the ticket price",
        source=SOURCE_DECREE_442, rule_ru=regime.text_ru,
    )


def _quote_voluntary(
    *, event_start: datetime, filed_at: datetime, ticket: TicketPrice, policy: OrganizerPolicy
) -> Quote:
    """Art. 52.1: d >= 10 -> 100 %, 5 <= d < 10 -> at least 50 %, 3 <= d < 5 -> at least 30 %."""
    if filed_at >= event_start:
        raise PolicyError(
            f"filing after the event start: filed {filed_at.isoformat()}, event started "
            f"{event_start.isoformat()}; a voluntary refund must be asked before the event"
        )
    base = ticket.base
    d = days_before_event(event_start=event_start, filed_at=filed_at)
    generous = policy.voluntary_percents != LEGAL_VOLUNTARY_PERCENTS
    source = f"organizer policy; {SOURCE_ART_52_1}" if generous else SOURCE_ART_52_1
    rule_head = "organizer policy" if generous else "Art. 52.1"

    def refused(code: str, rule: str) -> Quote:
        code, message = _refusal(code)
        return Quote(
            reason=Reason.VOLUNTARY, eligible=False, percent=0, base=base, ticket_refund=0,
            service_fee_refund=0, delivery_refund=0, amount=0, days_before=d, rule=rule,
            source=source if code == "TOO_LATE" else SOURCE_OPERATOR,
            refusal_code=code, refusal_message_ru=message,
        )

    if ticket.promo and policy.refuse_promo:
        return refused("PROMO_REFUSED",
                       "Operator rules: promo tickets are not refunded on the buyer's initiative")
    percent, tier = policy.voluntary_percent(d)
    if percent == 0:
        lowest = policy.voluntary_percents[-1][0]
        return refused("TOO_LATE", f"{rule_head}: d < {lowest} -> 0 % (d = {d})")
    legal = _legal_minimum_percent(d)
    assert tier is not None  # percent > 0 comes from a tier
    higher = [min_days for min_days, _ in policy.voluntary_percents if min_days > tier[0]]
    span = f"{tier[0]} <= d < {min(higher)}" if higher else f"d >= {tier[0]}"
    rule = f"{rule_head}: {span} -> {percent} % (d = {d}"
    rule += f"; legal minimum {legal} %)" if generous else ")"
    refund = _percent_of(base, percent)
    return Quote(
        reason=Reason.VOLUNTARY, eligible=True, percent=percent, base=base, ticket_refund=refund,
        service_fee_refund=0, delivery_refund=0, amount=refund, days_before=d, rule=rule,
        source=source,
    )


def fallback_offer(
    *,
    event_start: datetime,
    now: datetime,
    ticket: TicketPrice,
    policy: OrganizerPolicy = LEGAL_POLICY,
) -> Quote | None:
    """Operator rules: after an "other" refusal, offer the voluntary refund (30/50 %...) if the
    event is still at least 3 clear days away and it gives money; otherwise None."""
    _require_aware(event_start, "event_start")
    _require_aware(now, "now")
    if now >= event_start:
        return None
    quote = quote_refund(reason=Reason.VOLUNTARY, event_start=event_start, filed_at=now,
                         ticket=ticket, policy=policy)
    if not quote.eligible or quote.percent <= 0 or (quote.days_before or 0) < 3:
        return None
    return quote


# --------------------------------------------------------------------------------------------
# Documented claims (Decree 1491)
# --------------------------------------------------------------------------------------------

ILLNESS_DOCUMENT_KINDS = frozenset({"sick_leave_gosuslugi", "eln_copy", "pcr_test"})
DEATH_DOCUMENT_KINDS = frozenset({"death_certificate"})
# "other": the seed says another document may also be agreed with the organizer.
DOCUMENT_KINDS = ILLNESS_DOCUMENT_KINDS | DEATH_DOCUMENT_KINDS | {"other"}
# Family Code: parents, children, grandparents, grandchildren, siblings; spouse as family member.
CLOSE_RELATIVES = frozenset({"parent", "child", "grandparent", "grandchild", "sibling", "spouse"})
DOCUMENTS_WINDOW = timedelta(days=14)


@dataclass(frozen=True)
class DocumentEvidence:
    """A document sent for an illness or death claim, as judged so far."""

    kind: str
    received_at: datetime
    sick_from: date | None = None
    sick_to: date | None = None
    person_name: str | None = None
    relation: str | None = None
    judged_false: bool = False

    def __post_init__(self) -> None:
        if self.kind not in DOCUMENT_KINDS:
            raise PolicyError(
                f"unknown document kind {self.kind!r} (one of {', '.join(sorted(DOCUMENT_KINDS))})"
            )
        _require_aware(self.received_at, "received_at")
        if self.sick_from and self.sick_to and self.sick_to < self.sick_from:
            raise PolicyError(
                f"sick period ends ({self.sick_to}) before it starts ({self.sick_from})"
            )


@dataclass(frozen=True)
class Refusal:
    code: str
    message_ru: str


def documents_last_day(event_start: datetime) -> date:
    """Decree 1491: the last calendar day (venue's zone) on which documents may follow: the 14th day
    after the event's date."""
    _require_aware(event_start, "event_start")
    try:
        return event_start.date() + DOCUMENTS_WINDOW
    except OverflowError:
        raise PolicyError(f"event start {event_start.isoformat()} is too close to the end of the calendar") from None


def documents_deadline(event_start: datetime) -> datetime:
    """Decree 1491 (DESIGN.md): the documents window runs to 24:00, in the venue's zone, of its 14th
    day, whatever the hour of the event. Returns that instant (00:00 of the next day): a document
    is in time when received strictly before it."""
    try:
        return datetime.combine(documents_last_day(event_start) + timedelta(days=1), time(0), tzinfo=event_start.tzinfo)
    except OverflowError:
        raise PolicyError(f"event start {event_start.isoformat()} is too close to the end of the calendar") from None


_NAME_JUNK = re.compile(r"[^\w\s-]")


def _name_tokens(name: str) -> frozenset[str]:
    """Normalise a full name: case, ё/е, punctuation and word order do not matter."""
    cleaned = _NAME_JUNK.sub(" ", name.casefold().replace("ё", "е"))
    return frozenset(cleaned.replace("-", " ").split())


def _names_match(order_name: str, document_name: str) -> bool:
    """Same words in any order; a missing patronymic on one side is tolerated (2+ shared words)."""
    a, b = _name_tokens(order_name), _name_tokens(document_name)
    if not a or not b:
        return False
    if a == b:
        return True
    return (a <= b or b <= a) and len(a & b) >= 2


def check_documented_claim(
    *,
    reason: Reason,
    event_start: datetime,
    filed_at: datetime,
    order_created_at: datetime,
    buyer_name: str,
    name_mismatch_explanation: str | None,
    documents: Sequence[DocumentEvidence],
    now: datetime | None = None,
) -> list[Refusal]:
    """Decree 1491: the grounds to refuse an illness / death claim; empty list = nothing found.

    Only documents received inside the window (to 24:00 of its 14th day, `documents_deadline`) are
    judged: one late extra document does not spoil a claim whose valid document came in time.
    Codes: FILED_AFTER_EVENT, DOCUMENTS_LATE (documents came, but none usable inside the window;
    or, when `now` is given, no usable document and the window has closed), DOCUMENTS_FALSE,
    BOUGHT_AFTER_ILLNESS (order date after sick_from), EVENT_OUTSIDE_SICK_PERIOD (no dated
    illness document covers the event date), NAME_MISMATCH (illness: no document carries the
    buyer's name and no explanation), NOT_CLOSE_RELATIVE (death: relation outside the Family
    Code list), WRONG_DOCUMENT_KIND (illness with a death certificate, death with a medical
    document; kind "other" is always allowed). No documents yet is not a refusal.
    Dates (event, order) are taken in the venue's time zone.
    """
    try:
        reason = Reason(reason)
    except ValueError:
        raise PolicyError(f"unknown reason {reason!r}") from None
    if reason not in DOCUMENTED_REASONS:
        raise PolicyError(f"reason {reason} is not a documented reason (illness or death)")
    _require_aware(event_start, "event_start")
    _require_aware(filed_at, "filed_at")
    _require_aware(order_created_at, "order_created_at")
    if now is not None:
        _require_aware(now, "now")

    refusals: list[Refusal] = []

    def refuse(code: str, message_key: str | None = None) -> None:
        if all(r.code != code for r in refusals):
            refusals.append(Refusal(code, REFUSAL_MESSAGES_RU[message_key or code]))

    if filed_at >= event_start:
        refuse("FILED_AFTER_EVENT")

    deadline = documents_deadline(event_start)
    late = [doc for doc in documents if doc.received_at >= deadline]
    false = any(doc.judged_false for doc in documents)  # a false document is a ground whenever it came
    documents = [doc for doc in documents if doc.received_at < deadline]  # late ones are not judged further
    usable = [doc for doc in documents if not doc.judged_false]
    if late and not usable:
        refuse("DOCUMENTS_LATE")
    if now is not None and not usable and now >= deadline:
        refuse("DOCUMENTS_LATE")
    if false:
        refuse("DOCUMENTS_FALSE")

    if reason is Reason.ILLNESS:
        if any(doc.kind in DEATH_DOCUMENT_KINDS for doc in documents):
            refuse("WRONG_DOCUMENT_KIND", "WRONG_DOCUMENT_KIND_ILLNESS")
        medical = [doc for doc in usable if doc.kind not in DEATH_DOCUMENT_KINDS]
        event_day = event_start.date()
        order_day = _venue_date(order_created_at, event_start)
        starts = [doc.sick_from for doc in medical if doc.sick_from is not None]
        if starts and order_day > min(starts):
            refuse("BOUGHT_AFTER_ILLNESS")
        dated = [(doc, doc.sick_from) for doc in medical if doc.sick_from is not None]
        if dated and not any(
            sick_from <= event_day and (doc.sick_to is None or event_day <= doc.sick_to)
            for doc, sick_from in dated
        ):
            refuse("EVENT_OUTSIDE_SICK_PERIOD")
        named = [doc.person_name for doc in medical if doc.person_name]
        explained = bool(name_mismatch_explanation and name_mismatch_explanation.strip())
        if named and not explained and not any(_names_match(buyer_name, n) for n in named):
            refuse("NAME_MISMATCH")
    else:
        if any(doc.kind in ILLNESS_DOCUMENT_KINDS for doc in documents):
            refuse("WRONG_DOCUMENT_KIND", "WRONG_DOCUMENT_KIND_DEATH")
        relations = [doc.relation for doc in usable if doc.relation is not None]
        if relations and not any(rel in CLOSE_RELATIVES for rel in relations):
            refuse("NOT_CLOSE_RELATIVE")

    return refusals


def documents_outstanding(*, documents: Sequence[DocumentEvidence]) -> bool:
    """Decree 1491: documents may follow; True while no usable (not judged false) one arrived."""
    return not any(not doc.judged_false for doc in documents)
