"""An event's status as the mass paths change it (DESIGN, "Event cancelled, replaced, or postponed"). Pure.

`cancelled` and `replaced` are claim reasons only when the event's status says so; the step that
sets the status is guarded here, so a finished or already replaced event is not cancelled again, an
event that has already taken place is neither cancelled, replaced nor postponed (its tickets were
for a show that happened: nothing to refund), and a mass cancellation that is done is not started
again (a run still going, or one that died in the middle, is: docs/ops.md).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from states.policy import Reason

MASS_ACTIONS: dict[str, Reason] = {"cancelled": Reason.CANCELLED, "replaced": Reason.REPLACED}
# From which statuses each action may be taken: a postponed event may still be cancelled or replaced.
_ALLOWED_FROM = {"cancelled": ("scheduled", "postponed"), "replaced": ("scheduled", "postponed")}
#: The event-level actions as ops and organizers read them (never the internal code).
ACTIONS_RU = {"cancelled": "отмена", "replaced": "замена", "postponed": "перенос"}
#: An event's status as ops and organizers read it.
EVENT_STATUS_RU = {"scheduled": "по расписанию", "cancelled": "отменено", "replaced": "заменено", "postponed": "перенесено"}


def action_ru(action: str) -> str:
    """«отмена», «замена», «перенос»; an unknown code as it is."""
    return ACTIONS_RU.get(action, action)


_DONE_RU = {
    "cancelled": "Мероприятие уже отменено: массовый возврат по нему завершён, запускать его снова нечего. "
                 "Заявки, которые требуют внимания: `vozvrat events follow-ups`.",
    "replaced": "Мероприятие уже заменено: массовый возврат по нему завершён, запускать его снова нечего. "
                "Заявки, которые требуют внимания: `vozvrat events follow-ups`.",
}


@dataclass(frozen=True)
class EventDate:
    """When an event takes place, as far as a change to it is concerned.

    `starts_at`: the date its tickets are valid for (tz-aware, in the venue's zone for the message);
    `dated` False: postponed with the new date still to be announced (it has not taken place, whatever
    `starts_at` says); `regime_on_the_day`: a high-alert regime of its region was in force on that day
    (Decree 442), so it could not take place and may still be cancelled or postponed afterwards.
    """

    starts_at: datetime
    dated: bool = True
    regime_on_the_day: bool = False


def taken_place(when: EventDate, now: datetime) -> bool:
    """The event has started (its `starts_at` is not after `now`), was dated, and no regime stopped it."""
    if now.tzinfo is None or when.starts_at.tzinfo is None:
        raise ValueError("time must be tz-aware")
    return when.dated and not when.regime_on_the_day and when.starts_at <= now


def taken_place_refusal(when: EventDate, now: datetime, *, change_ru: str) -> tuple[str, str] | None:
    """("EVENT_TAKEN_PLACE", Russian message) when the event has already taken place, else None.
    `change_ru` names what cannot be done («отменить или заменить», «перенести»)."""
    if not taken_place(when, now):
        return None
    return ("EVENT_TAKEN_PLACE",
            f"Мероприятие уже состоялось ({when.starts_at:%d.%m.%Y %H:%M}): {change_ru} его нельзя, возврат за него не оформляется.")


@dataclass(frozen=True)
class StatusStep:
    """The status to write (None: nothing to write) or why not (code, Russian message)."""

    new_status: str | None
    already: bool = False
    refusal: tuple[str, str] | None = None


def mass_status_step(current: str, action: str, *, when: EventDate, now: datetime, run_done: bool = False) -> StatusStep:
    """scheduled|postponed -> cancelled|replaced, unless the event has already taken place; the same
    action again is a resumed run (nothing to write), refused only when `run_done` (the event's mass
    record is done: starting it again would do nothing)."""
    if action not in MASS_ACTIONS:
        return StatusStep(None, refusal=("UNKNOWN_ACTION", f"Неизвестное действие «{action}»: только cancelled (отмена) или replaced (замена)."))
    if current == action:
        if run_done:
            return StatusStep(None, already=True, refusal=("ALREADY_DONE", _DONE_RU[action]))
        return StatusStep(None, already=True)
    if current not in _ALLOWED_FROM[action]:
        return StatusStep(None, refusal=("EVENT_STATUS", f"Мероприятие уже {EVENT_STATUS_RU.get(current, current)}: {action_ru(action)} к нему не применяется."))
    past = taken_place_refusal(when, now, change_ru="отменить или заменить")
    if past:
        return StatusStep(None, refusal=past)
    return StatusStep(action)


def postponement_refusal(current: str, *, when: EventDate, now: datetime) -> tuple[str, str] | None:
    """Why the event may not be postponed (code, Russian message), or None: a cancelled or replaced
    event is not postponed, nor one that has already taken place."""
    if current in ("cancelled", "replaced"):
        return ("EVENT_STATUS", "Мероприятие отменено или заменено: перенести его нельзя.")
    return taken_place_refusal(when, now, change_ru="перенести")
