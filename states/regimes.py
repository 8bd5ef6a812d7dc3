"""High-alert regimes (Government Decree 442 of 06.04.2020, as the seed states it), pure.

A regime is data: a region and a period (`RegimeSpan`). An event is in a region through its venue.
An event cancelled or postponed while its region's regime is in force (the regime covers the event's
original date, or the day the change was made) follows Decree 442:

* the organizer publishes the cancellation or the postponement within 14 calendar days of the
  regime's end (`publication_last_day`);
* cancelled: money is returned within 180 days of the regime's end (`refund_last_day`); the organizer
  may offer a voucher instead;
* postponed by at most 18 months from the ORIGINAL date: tickets stay valid; the organizer may refuse
  refunds or exchange tickets for vouchers (`OrganizerPolicy.regime_postponed_refunds`, `vouchers_offered`);
* postponed further than 18 months, or still without a new date once the regime's end plus the
  notice period has passed: treated as cancelled, with the 180-day refund deadline.

Nothing here reads a clock or a database: `today` is an argument (a date in the venue's zone).
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from enum import StrEnum

from dateutil.relativedelta import relativedelta

SOURCE_DECREE_442 = "Government Decree 442 of 06.04.2020"
DECREE_442_RU = "постановление Правительства РФ от 06.04.2020 № 442"
PUBLICATION_DAYS = 14
REFUND_DAYS = 180
POSTPONEMENT_LIMIT_MONTHS = 18
# sla-watch: warnings this many days before the refund deadline, escalation after it.
REFUND_WARNING_DAYS: tuple[int, ...] = (30, 7)
# sla-watch: the organizer and ops are warned this many days before the publication's last day.
PUBLICATION_WARNING_DAYS: tuple[int, ...] = (7, 1)


class RegimeError(ValueError):
    """Bad regime data (an end before the start); the message is one English line."""


@dataclass(frozen=True)
class RegimeSpan:
    """A high-alert regime: in force from `starts_on` to `ends_on` inclusive (None: still in force)."""

    id: int | None
    region: str
    starts_on: date
    ends_on: date | None = None

    def __post_init__(self) -> None:
        if not self.region.strip():
            raise RegimeError("a regime needs a region")
        if self.ends_on is not None and self.ends_on < self.starts_on:
            raise RegimeError(f"regime ends ({self.ends_on}) before it starts ({self.starts_on})")

    def in_force_on(self, day: date) -> bool:
        return self.starts_on <= day and (self.ends_on is None or day <= self.ends_on)


def publication_last_day(ends_on: date) -> date:
    """Decree 442: the cancellation or postponement is published within 14 calendar days of the
    regime's end; the 14th day itself is in time."""
    return ends_on + timedelta(days=PUBLICATION_DAYS)


def refund_last_day(ends_on: date) -> date:
    """Decree 442: a cancelled event's money is returned within 180 days of the regime's end."""
    return ends_on + timedelta(days=REFUND_DAYS)


def postponement_limit(original_day: date) -> date:
    """Decree 442: the last day a postponed event may take place and keep its tickets valid:
    18 months after the ORIGINAL date (a second postponement counts from the first date too)."""
    return original_day + relativedelta(months=POSTPONEMENT_LIMIT_MONTHS)


def applicable_regime(regimes: Iterable[RegimeSpan], *, region: str, original_day: date, changed_on: date) -> RegimeSpan | None:
    """The regime an event's change falls under: one of the venue's region in force on the event's
    original date or on the day the change was made (the earliest-starting, if several). An event in
    another region falls under none."""
    if not region:
        return None
    found = [r for r in regimes if r.region == region and (r.in_force_on(original_day) or r.in_force_on(changed_on))]
    return min(found, key=lambda r: r.starts_on) if found else None


class Rule(StrEnum):
    CANCELLED = "decree_442_cancelled"
    POSTPONED_WITHIN_18_MONTHS = "decree_442_postponed_within_18_months"
    POSTPONED_BEYOND_18_MONTHS = "decree_442_postponed_beyond_18_months"
    AWAITING_NEW_DATE = "decree_442_awaiting_new_date"
    NO_NEW_DATE = "decree_442_no_new_date"


@dataclass(frozen=True)
class RegimeRuling:
    """Which Decree 442 rule applies to an event, and the deadlines it sets (None: not known yet,
    the regime is still in force)."""

    rule: Rule
    regime_id: int | None
    regime_ends_on: date | None
    treated_as_cancelled: bool
    tickets_stay_valid: bool
    publication_due: date | None
    refund_due: date | None
    text: str  # English, for logs and the quote's `rule`
    text_ru: str  # Russian, for buyers and organizers: every email cites it

    def to_json(self) -> dict:
        return {
            "rule": self.rule.value, "regime_id": self.regime_id,
            "regime_ends_on": self.regime_ends_on.isoformat() if self.regime_ends_on else None,
            "treated_as_cancelled": self.treated_as_cancelled, "tickets_stay_valid": self.tickets_stay_valid,
            "publication_due": self.publication_due.isoformat() if self.publication_due else None,
            "refund_due": self.refund_due.isoformat() if self.refund_due else None,
            "text": self.text, "text_ru": self.text_ru,
        }


def _ru(day: date) -> str:
    return f"{day:%d.%m.%Y}"


def _refund_ru(refund_due: date | None) -> str:
    if refund_due is None:
        return "деньги возвращаются в течение 180 дней после окончания режима повышенной готовности"
    return f"деньги возвращаются не позднее {_ru(refund_due)} (180 дней после окончания режима повышенной готовности)"


def rule_for(*, regime: RegimeSpan, event_status: str, original_day: date, new_day: date | None, today: date) -> RegimeRuling | None:
    """Decree 442 for an event under `regime`: None when the event was neither cancelled nor postponed.

    - cancelled -> refund within 180 days of the regime's end (CANCELLED);
    - postponed to a day at most 18 months after the ORIGINAL date (that day included) -> tickets
      stay valid (POSTPONED_WITHIN_18_MONTHS); one day later -> treated as cancelled;
    - postponed without a new date: tickets wait (AWAITING_NEW_DATE) until the regime's end plus the
      14-day notice period has passed, then treated as cancelled (NO_NEW_DATE).
    """
    ends = regime.ends_on
    publication_due = publication_last_day(ends) if ends else None
    refund_due = refund_last_day(ends) if ends else None

    def ruling(rule: Rule, cancelled: bool, text: str, text_ru: str) -> RegimeRuling:
        return RegimeRuling(rule, regime.id, ends, cancelled, not cancelled, publication_due,
                            refund_due if cancelled else None, text, text_ru)

    if event_status == "cancelled":
        return ruling(Rule.CANCELLED, True, "Decree 442: event cancelled under a high-alert regime -> refund within 180 days of the regime's end",
                      f"{DECREE_442_RU}: мероприятие отменено в период режима повышенной готовности — {_refund_ru(refund_due)}; "
                      "организатор может предложить ваучер вместо денег")
    if event_status != "postponed":
        return None
    limit = postponement_limit(original_day)
    if new_day is not None and new_day <= limit:
        return ruling(Rule.POSTPONED_WITHIN_18_MONTHS, False,
                      f"Decree 442: postponed to {new_day} (at most 18 months after {original_day}, limit {limit}) -> tickets stay valid; "
                      "the organizer may refuse refunds or exchange tickets for vouchers",
                      f"{DECREE_442_RU}: мероприятие перенесено не более чем на 18 месяцев (с {_ru(original_day)} на {_ru(new_day)}) — "
                      "билеты действительны на новую дату; организатор вправе не возвращать деньги или обменять билеты на ваучеры")
    if new_day is not None:
        return ruling(Rule.POSTPONED_BEYOND_18_MONTHS, True,
                      f"Decree 442: postponed to {new_day}, more than 18 months after {original_day} (limit {limit}) -> treated as cancelled",
                      f"{DECREE_442_RU}: мероприятие перенесено более чем на 18 месяцев (с {_ru(original_day)} на {_ru(new_day)}) — "
                      f"считается отменённым: {_refund_ru(refund_due)}")
    if publication_due is not None and today > publication_due:
        return ruling(Rule.NO_NEW_DATE, True,
                      f"Decree 442: no new date by the regime's end plus 14 days ({publication_due}) -> treated as cancelled",
                      f"{DECREE_442_RU}: новая дата не объявлена до {_ru(publication_due)} (14 дней после окончания режима) — "
                      f"мероприятие считается отменённым: {_refund_ru(refund_due)}")
    return ruling(Rule.AWAITING_NEW_DATE, False,
                  "Decree 442: postponed, new date to be announced within 14 days of the regime's end -> tickets stay valid",
                  f"{DECREE_442_RU}: мероприятие перенесено, новая дата будет объявлена не позднее 14 дней после окончания режима "
                  "повышенной готовности — билеты остаются действительными")


class Alert(StrEnum):
    WARNING = "warning"
    OVERDUE = "overdue"


def deadline_alert(due: date, today: date, *, warning_days: tuple[int, ...]) -> tuple[Alert, int] | None:
    """Where `today` stands against a deadline whose last day `due` is in time.

    (OVERDUE, days late) after it; (WARNING, n) once no more than n days are left, for the smallest
    such n of `warning_days` (so each warning level is sent once); None before the first warning.
    """
    if today > due:
        return Alert.OVERDUE, (today - due).days
    left = (due - today).days
    levels = [n for n in warning_days if left <= n]
    return (Alert.WARNING, min(levels)) if levels else None
