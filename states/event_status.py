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


@dataclass(frozen=True)
class StatusStep:
    """The status to write (None: nothing to write) or why not (code, Russian message)."""

    new_status: str | None
    already: bool = False
    refusal: tuple[str, str] | None = None


def mass_status_step(current: str, action: str) -> StatusStep:
    """scheduled|postponed -> cancelled|replaced; the same action again is a resumed run (nothing to write)."""
    if action not in MASS_ACTIONS:
        return StatusStep(None, refusal=("UNKNOWN_ACTION", f"Неизвестное действие «{action}»: только cancelled или replaced."))
    if current == action:
        return StatusStep(None, already=True)
    if current not in _ALLOWED_FROM[action]:
        return StatusStep(None, refusal=("EVENT_STATUS", f"Мероприятие уже в статусе «{current}»: действие «{action}» к нему не применяется."))
    return StatusStep(action)
