"""An event's status as the mass paths change it (DESIGN, "Event cancelled, replaced, or postponed"). Pure.

`cancelled` and `replaced` are claim reasons only when the event's status says so; the step that
sets the status is guarded here, so a finished or already replaced event is not cancelled again.
"""
from __future__ import annotations

from dataclasses import dataclass

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


@dataclass(frozen=True)
class StatusStep:
    """The status to write (None: nothing to write) or why not (code, Russian message)."""

    new_status: str | None
    already: bool = False
    refusal: tuple[str, str] | None = None


def mass_status_step(current: str, action: str) -> StatusStep:
    """scheduled|postponed -> cancelled|replaced; the same action again is a resumed run (nothing to write)."""
    if action not in MASS_ACTIONS:
        return StatusStep(None, refusal=("UNKNOWN_ACTION", f"Неизвестное действие «{action}»: только cancelled (отмена) или replaced (замена)."))
    if current == action:
        return StatusStep(None, already=True)
    if current not in _ALLOWED_FROM[action]:
        return StatusStep(None, refusal=("EVENT_STATUS", f"Мероприятие уже {EVENT_STATUS_RU.get(current, current)}: {action_ru(action)} к нему не применяется."))
    return StatusStep(action)
