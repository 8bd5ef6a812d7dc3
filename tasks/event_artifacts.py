"""The Prefect artifacts of the chunked event flows (mass-cancellation, event-postponement): one place
for their keys, their progress bar and their summary tables, so ops find every event-level run's
progress and outcome the same way in the Prefect UI (the run's Artifacts tab, or the key's history).

Plain functions, called from inside a task or flow run (Prefect ties the artifact to that run):
the flows' own @task wrappers (tasks/mass_steps.py, tasks/postponement.py) call them.

Keys: `<prefix>-<id>` for the summary table (`event_key("event-postponement", 7)`: per change,
`event-postponement-7`; `event_key("mass-cancellation-event", 5)`: per event,
`mass-cancellation-event-5`), and the same with `-progress` and `-follow-ups` for the other artifacts. A newer run of the same
event or change replaces the artifact under its key and keeps the older ones in the key's history.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any
from uuid import UUID

from states.event_status import action_ru
from tasks.emails import rub
from tasks.intake import STATE_LABELS_RU


def state_ru(state: str) -> str:
    """A claim state as ops read it («деньги выплачены», not `paid`): the staff pages' labels."""
    return STATE_LABELS_RU.get(state, state)


def money_ru(kopecks: int) -> str:
    """Integer kopecks as ops and buyers read them: 58500000 -> «585 000,00 ₽»."""
    return rub(int(kopecks))


def event_key(prefix: str, ident: int) -> str:
    """The summary artifact's key of one event-level run: lower-case, dashes (Prefect's key rule)."""
    key = f"{prefix}-{int(ident)}"
    if key != key.lower() or not all(ch.isalnum() or ch == "-" for ch in key):
        raise ValueError(f"artifact key {key!r}: lower-case letters, digits and dashes only")
    return key


def progress_key(key: str) -> str:
    return f"{key}-progress"


def follow_ups_key(key: str) -> str:
    return f"{key}-follow-ups"


def percent(done: int, total: int) -> float:
    """Progress in percent, one decimal; an empty run (no chunk) is done."""
    return round(100.0 * done / total, 1) if total > 0 else 100.0


def start_progress(*, key: str | None, description: str) -> UUID:
    """A progress artifact at 0 %, moved by `report_progress` after each chunk."""
    from prefect.artifacts import create_progress_artifact

    return create_progress_artifact(0.0, key=progress_key(key) if key else None, description=description)


def report_progress(artifact_id: UUID | str, done: int, total: int, *, description: str | None = None) -> float:
    """The progress artifact moved to `done` of `total` chunks; returns the percent shown."""
    from prefect.artifacts import update_progress_artifact

    shown = percent(done, total)
    artifact = artifact_id if isinstance(artifact_id, UUID) else UUID(str(artifact_id))
    update_progress_artifact(artifact, shown, description=description or f"готово частей: {done} из {total}")
    return shown


def publish_table(rows: Iterable[Mapping[str, Any]], *, key: str, description: str) -> UUID:
    """A run's summary as a table artifact under `key` (every value shown as text)."""
    from prefect.artifacts import create_table_artifact

    table = [{k: v if isinstance(v, str | int | float) else str(v) for k, v in row.items()} for row in rows]
    return create_table_artifact(table, key=key, description=description)


def summary_rows(summary: Mapping[str, Any], *, labels: Mapping[str, str] | None = None) -> list[dict[str, str]]:
    """A flat summary (name -> value) as `что` / `значение` rows (the columns of the mass cancellation's
    table too), in the summary's order; `labels` renames the names shown (Russian labels for ops)."""
    labels = labels or {}
    return [{"что": labels.get(k, k), "значение": str(v)} for k, v in summary.items()]


def publish_follow_ups(failures: Mapping[str, Mapping[str, Any]], *, key: str, hint: str,
                       title: str = "Заявки, выпавшие из пакета") -> UUID | None:
    """The claims or buyers that left the batch, by reason (code: count, Russian message), as a
    markdown artifact under the key's `-follow-ups`; None when nothing left the batch."""
    from prefect.artifacts import create_markdown_artifact

    lines = [f"- `{code}`: {e['count']} — {e['message_ru']}" for code, e in sorted(failures.items())]
    if not lines:
        return None
    return create_markdown_artifact("\n".join([f"### {title}", *lines, "", hint]), key=follow_ups_key(key))


__all__ = ["action_ru", "state_ru", "money_ru", "event_key", "progress_key", "follow_ups_key", "percent", "start_progress", "report_progress", "publish_table", "summary_rows",
           "publish_follow_ups"]
