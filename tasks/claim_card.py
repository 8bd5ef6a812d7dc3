"""What ops see of a claim in the Prefect UI, without reading logs: whom it waits on and until when.

- The suspended run's **state name and message** say it («Ждёт организатора · до 12.12.2026»): the
  run suspends through `suspend_claim_run`, Prefect's own suspend with a readable name instead of
  the fixed «Suspended» (the run-input keyset stays Prefect's, so runs suspended either way resume
  alike, from the API, the run starter or the UI form).
- The **«Карточка заявки»** markdown artifact, key `claim-<number>` (lowercase), is published at
  every step of the run: state in Russian, who holds it, the deadline and working days left, the
  amount and the rule, the organizer, the event, the last steps of the audit trail.
- The pause form the UI shows on «Resume» has a description (the card, and what each decision does)
  and initial data fit for the state.
- An escalated claim's run carries the tag `escalated`.

Reading and rendering are pure (`claim_card`, `render_card`, `run_label`); the tasks publish.
No buyer's personal data goes to Prefect: the card names the claim, never the buyer.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, TypeVar
from uuid import UUID
from zoneinfo import ZoneInfo

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from sqlalchemy import select
from sqlalchemy.engine import Connection

from models.claim_store import claim_t, event_t, order_t, organizer_t, ticket_t, venue_t
from models.db import get_engine
from models.settings import get_settings
from models.tables import ClaimTransition
from states.calendar import working_days_left
from states.lifecycle import ClaimState
from states.policy import PolicyError, documents_last_day
from tasks.emails import basis_ru, reason_ru, ru_date, rub, working_days_ru
from tasks.intake import STATE_LABELS_RU

transition_t = ClaimTransition.__table__
S = ClaimState
ESCALATED_TAG = "escalated"
LAST_STEPS = 6

R = TypeVar("R")


# --- who holds a claim, and until when -----------------------------------------------------------

@dataclass(frozen=True)
class Holder:
    short: str  # the run's state name, before the date: «Ждёт организатора»
    who: str  # the card's «Кто держит» line
    deadline: str | None  # which date bounds it: documents | decision | payout


def holder_of(state: str, payment_method: str) -> Holder:
    """Whom a claim in this state waits on (buyer's documents, organizer, buyer's bank details,
    accounting, the acquirer) and which of its deadlines applies."""
    transfer = payment_method in ("cash", "bso")
    holders = {
        S.FILED.value: Holder("Проверяется", "система: проверка заявки", None),
        S.AWAITING_DOCUMENTS.value: Holder("Ждёт документы покупателя", "покупатель: документы (справка, больничный, свидетельство)", "documents"),
        S.AWAITING_ORGANIZER.value: Holder("Ждёт организатора", "организатор: решение по заявке", "decision"),
        S.ESCALATED.value: Holder("Эскалация: ждёт организатора", "организатор, под контролем руководителя: срок решения истёк", "decision"),
        S.APPROVED.value: Holder("Одобрена, выплата начинается", "система: выплата", "payout"),
        S.NEEDS_BANK_DETAILS.value: Holder("Ждёт реквизиты покупателя", "покупатель: банковские реквизиты для перевода", "payout"),
        S.PAYOUT_PENDING.value: (Holder("Ждёт бухгалтерию", "бухгалтерия: платёжное поручение (выгрузка в 1С «Клиент-банк»)", "payout")
                                 if transfer else Holder("Выплата на карту", "эквайер: возврат на карту покупателя", "payout")),
        S.PAYOUT_FAILED.value: Holder("Выплата не прошла", "операторы: повтор выплаты или перевод по реквизитам", "payout"),
    }
    return holders.get(state, Holder("Закрыта", "никто: заявка закрыта", None))


def days_left_ru(left: int) -> str:
    if left > 0:
        return f"осталось {working_days_ru(left)}"
    if left == 0:
        return "срок истекает сегодня"
    return f"просрочено на {working_days_ru(-left)}"


# --- the card ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Step:
    at: datetime
    trigger: str
    from_state: str
    to_state: str
    actor: str
    note: str | None


@dataclass(frozen=True)
class ClaimCard:
    claim_id: int
    number: str
    state: str
    version: int
    reason: str
    amount: int
    approved_amount: int | None
    quote: dict
    payment_method: str
    organizer_id: int
    organizer_name: str
    event_id: int
    event_title: str
    event_start: datetime  # in the venue's zone
    today: date  # in the venue's zone
    deadline: date | None
    deadline_provisional: bool
    extended: bool
    escalated: bool
    flow_run_id: str | None
    steps: list[Step] = field(default_factory=list)

    @property
    def holder(self) -> Holder:
        return holder_of(self.state, self.payment_method)

    @property
    def days_left(self) -> int | None:
        return working_days_left(self.today, self.deadline) if self.deadline else None

    @property
    def key(self) -> str:
        return card_key(self.number)


def card_key(number: str) -> str:
    """`VZ-0001234-1` -> `claim-vz-0001234-1`: artifact keys take lowercase letters, digits and dashes."""
    return "claim-" + "".join(c if c.isascii() and c.isalnum() else "-" for c in number.lower()).strip("-")


def claim_card(conn: Connection, claim_id: int, now: datetime) -> ClaimCard:
    """The claim as the card shows it, read now; dates in the venue's zone."""
    row = conn.execute(
        select(claim_t.c.id, claim_t.c.number, claim_t.c.state, claim_t.c.version, claim_t.c.reason, claim_t.c.amount,
               claim_t.c.approved_amount, claim_t.c.quote, claim_t.c.decision_due, claim_t.c.payout_due, claim_t.c.deadline_provisional,
               claim_t.c.extended, claim_t.c.escalated_at, claim_t.c.flow_run_id, order_t.c.payment_method,
               organizer_t.c.id.label("organizer_id"), organizer_t.c.name.label("organizer_name"),
               event_t.c.id.label("event_id"), event_t.c.title, event_t.c.starts_at, venue_t.c.timezone)
        .join(ticket_t, ticket_t.c.id == claim_t.c.ticket_id)
        .join(order_t, order_t.c.id == ticket_t.c.order_id)
        .join(event_t, event_t.c.id == claim_t.c.event_id)
        .join(venue_t, venue_t.c.id == event_t.c.venue_id)
        .join(organizer_t, organizer_t.c.id == event_t.c.organizer_id)
        .where(claim_t.c.id == claim_id)
    ).one()
    zone = ZoneInfo(row.timezone)
    event_start = row.starts_at.astimezone(zone)
    kind = holder_of(row.state, row.payment_method).deadline
    deadline: date | None = None
    if kind == "documents":
        try:
            deadline = documents_last_day(event_start)
        except PolicyError:
            deadline = None
    elif kind == "decision":
        deadline = row.decision_due
    elif kind == "payout":
        deadline = row.payout_due
    steps = [Step(at=r.at.astimezone(zone), trigger=r.trigger, from_state=r.from_state, to_state=r.to_state, actor=r.actor, note=r.note)
             for r in conn.execute(select(transition_t).where(transition_t.c.claim_id == claim_id)
                                   .order_by(transition_t.c.id.desc()).limit(LAST_STEPS)).all()]
    return ClaimCard(
        claim_id=row.id, number=row.number, state=row.state, version=row.version, reason=row.reason, amount=row.amount,
        approved_amount=row.approved_amount, quote=dict(row.quote or {}), payment_method=row.payment_method,
        organizer_id=row.organizer_id, organizer_name=row.organizer_name, event_id=row.event_id, event_title=row.title,
        event_start=event_start, today=now.astimezone(zone).date(), deadline=deadline, deadline_provisional=bool(row.deadline_provisional),
        extended=bool(row.extended), escalated=row.escalated_at is not None, flow_run_id=row.flow_run_id, steps=steps,
    )


def _deadline_ru(card: ClaimCard) -> str:
    if card.deadline is None:
        return "нет"
    what = {"documents": "документы до", "decision": "решение до", "payout": "выплата до"}[card.holder.deadline or "decision"]
    extra = " (продлён до 20 рабочих дней)" if card.extended and card.holder.deadline == "decision" else ""
    provisional = " (предварительно: календарь на этот год ещё не опубликован)" if card.deadline_provisional else ""
    left = card.days_left or 0
    status = "срок истёк, эскалация" if card.state == S.ESCALATED.value and left >= 0 else days_left_ru(left)
    return f"{what} {ru_date(card.deadline)} — {status}{extra}{provisional}"


def _cell(text: str | None) -> str:
    return (text or "").replace("|", "\\|").replace("\n", " ")


def render_card(card: ClaimCard, *, prefect_ui_url: str | None = None) -> str:
    """«Карточка заявки» in markdown (pure)."""
    label = STATE_LABELS_RU.get(card.state, card.state)
    amount = card.approved_amount if card.approved_amount is not None else card.amount
    basis = basis_ru(card.quote | {"reason": card.reason}) if card.quote else ""
    lines = [
        f"# Карточка заявки {card.number}",
        "",
        "| | |",
        "|---|---|",
        f"| **Состояние** | {_cell(label)} (`{card.state}`, версия {card.version}){' — **эскалация**' if card.escalated else ''} |",
        f"| **Кто держит** | {_cell(card.holder.who)} |",
        f"| **Срок** | {_cell(_deadline_ru(card))} |",
        f"| **Сумма** | {rub(amount)}{' (одобрено)' if card.approved_amount is not None else ''} |",
        f"| **Основание** | {_cell(basis) or '—'} |",
        f"| **Причина** | {_cell(reason_ru(card.reason))} |",
        f"| **Организатор** | {_cell(card.organizer_name)} (id {card.organizer_id}) |",
        f"| **Событие** | {_cell(card.event_title)} (id {card.event_id}), {ru_date(card.event_start)} {card.event_start:%H:%M} |",
        f"| **Оплата** | {'на карту (эквайер)' if card.payment_method == 'card' else 'банковский перевод по реквизитам'} |",
    ]
    if prefect_ui_url and card.flow_run_id:
        lines.append(f"| **Run** | [{card.number}]({prefect_ui_url.rstrip('/')}/runs/flow-run/{card.flow_run_id}) |")
    lines += ["", f"## Последние шаги (до {LAST_STEPS})", "", "| когда | шаг | было | стало | кто | примечание |", "|---|---|---|---|---|---|"]
    for s in card.steps:
        lines.append(f"| {s.at:%d.%m.%Y %H:%M} | `{s.trigger}` | {_cell(STATE_LABELS_RU.get(s.from_state, s.from_state))} | "
                     f"{_cell(STATE_LABELS_RU.get(s.to_state, s.to_state))} | {_cell(s.actor)} | {_cell(s.note)} |")
    if not card.steps:
        lines.append("| — | | | | | |")
    return "\n".join(lines) + "\n"


def run_label(card: ClaimCard) -> tuple[str, str]:
    """The run's state name and message: whom it waits on and until when.

    Name: «Ждёт организатора · до 12.12.2026» (short: the runs list shows it); the message says the
    same in a sentence, with the working days left and the organizer.
    """
    holder = card.holder
    if card.deadline is None:
        return holder.short, f"{card.number}: {holder.who}."
    left = card.days_left or 0
    overdue = left < 0 or card.state == S.ESCALATED.value  # escalated: the deadline has passed, whatever clock reads the card
    when = f"срок был {card.deadline:%d.%m.%Y}" if overdue else f"до {card.deadline:%d.%m.%Y}"
    message = (f"{card.number}: {holder.who}; {_deadline_ru(card)}. Организатор: {card.organizer_name} (id {card.organizer_id}); "
               f"событие: {card.event_title}.")
    return f"{holder.short} · {when}", message


def resume_form(card: ClaimCard) -> tuple[str, dict[str, Any]]:
    """The pause form's description (markdown above the form in the UI) and its initial data."""
    holder = card.holder
    header = f"**{card.number}** — {holder.who}; {_deadline_ru(card)}.\n\n"
    if card.state in (S.AWAITING_ORGANIZER.value, S.ESCALATED.value):
        amount = card.approved_amount if card.approved_amount is not None else card.amount
        text = (header + "Решение лучше отправить через API организатора: оно проверяет права и записывает решение до возобновления. "
                "Эта форма применяет решение от имени `prefect-ui`:\n\n"
                "- `approve` — одобрить (для «Прочее» сумма в копейках в `amount_kopecks`);\n"
                "- `reject` — отказать, причину для покупателя написать в `note`;\n"
                "- `extend` — продлить срок решения до 20 рабочих дней, причину написать в `note`.\n")
        initial: dict[str, Any] = {"decision": "approve", "decided_by": "prefect-ui"}
        if card.reason == "other":
            initial["amount_kopecks"] = amount
        return text, initial
    if card.state == S.AWAITING_DOCUMENTS.value:
        return (header + "Документы приходят только через API (`POST /claims/{id}/documents`), который сам возобновляет run. "
                "`recheck` здесь лишь заставит run перечитать заявку.\n"), {"decision": "recheck", "decided_by": "prefect-ui"}
    if card.state == S.NEEDS_BANK_DETAILS.value:
        return (header + "Реквизиты вводятся покупателем или командой `vozvrat payouts bank-details " + card.number + "`; "
                "после записи run возобновится сам. `recheck` здесь лишь заставит run перечитать заявку.\n"), \
            {"decision": "recheck", "decided_by": "prefect-ui"}
    return header + "`recheck`: run перечитает заявку.\n", {"decision": "recheck", "decided_by": "prefect-ui"}


# --- publishing -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class PublishedCard:
    """What the flow needs after publishing: the run's label and the resume form."""

    state: str
    state_name: str
    message: str
    description: str
    initial: dict[str, Any]
    final_name: str | None  # the run's final state's name if it ended here (None: «Completed»)
    final_message: str


def _tag_escalated(client, flow_run_id: str) -> bool:
    from prefect.exceptions import ObjectNotFound

    try:
        run = client.read_flow_run(UUID(flow_run_id))
    except ObjectNotFound:  # deleted: the sweep gives the claim a new run, which tags itself
        return False
    if ESCALATED_TAG not in (run.tags or []):
        client.update_flow_run(UUID(flow_run_id), tags=[*run.tags, ESCALATED_TAG])
    return True


def tag_escalated_runs(flow_run_ids: list[str]) -> int:
    """Add the `escalated` tag to these runs (sla-watch, at the escalation; the run itself at its next step)."""
    from prefect import get_client

    with get_client(sync_client=True) as client:
        return sum(_tag_escalated(client, run_id) for run_id in flow_run_ids)


# No cache: a replay after a resume must publish the card as it is now, not return the old one.
@task(name="publish-claim-card", retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE)
def publish_claim_card(claim_id: int, now: datetime) -> PublishedCard:
    """«Карточка заявки» for this claim, under its stable key; the run gets `escalated` once the claim is."""
    from prefect.runtime import flow_run

    with get_engine().connect() as conn:
        card = claim_card(conn, claim_id, now)
    create_markdown_artifact(markdown=render_card(card, prefect_ui_url=get_settings().prefect_ui_url), key=card.key,
                             description=f"Карточка заявки {card.number}: {STATE_LABELS_RU.get(card.state, card.state)}")
    run_id = flow_run.get_id()
    if card.escalated and run_id:
        tag_escalated_runs([str(run_id)])
    name, message = run_label(card)
    description, initial = resume_form(card)
    final_name, final_message = final_label(card)
    get_run_logger().info("card %s: %s — %s", card.key, name, message)
    return PublishedCard(state=card.state, state_name=name, message=message, description=description, initial=initial,
                         final_name=final_name, final_message=final_message)


def suspend_claim_run(wait_for_input: type[R], *, key: str, card: PublishedCard) -> R:
    """`prefect.flow_runs.suspend_flow_run(wait_for_input=..., key=..., timeout=None)` with the state
    named and described by the card, and the UI's resume form described and pre-filled.

    The input keyset is the one Prefect's own suspend uses (`suspended-<key>`), so a run resumes the
    same whoever resumes it. Called from the flow body (a task cannot suspend its flow).
    """
    from prefect._flow_run_suspension import mark_flow_run_suspension_requested
    from prefect.client.orchestration import get_client
    from prefect.context import FlowRunContext
    from prefect.exceptions import Abort, Pause
    from prefect.input.run_input import keyset_from_base_key, run_input_subclass_from_type
    from prefect.states import Paused
    from prefect.utilities.engine import propose_state_sync

    context = FlowRunContext.get()
    if context is None or context.flow_run is None:
        raise RuntimeError("a claim run suspends only from within its flow run")
    flow_run_id = context.flow_run.id
    form = run_input_subclass_from_type(wait_for_input).with_initial_data(description=card.description, **card.initial)
    proposed = Paused(name=card.state_name, message=card.message, reschedule=True, pause_key=key)
    keyset = keyset_from_base_key(f"suspended-{key}")
    proposed.state_details.run_input_keyset = keyset
    with get_client(sync_client=True) as client:
        try:
            state = propose_state_sync(client=client, state=proposed, flow_run_id=flow_run_id)
        except Abort as exc:
            raise RuntimeError(f"the claim run cannot be suspended: {exc}") from exc
        if state.is_running():  # this pause already fired and the run was resumed: its input is there
            return form.load(keyset)  # type: ignore[return-value]
        if not state.is_paused():
            raise RuntimeError(f"the claim run cannot be suspended; Prefect answered {state}")
        form.save(keyset)
    mark_flow_run_suspension_requested(flow_run_id, state)
    raise Pause(state=state)


def final_label(card: ClaimCard) -> tuple[str | None, str]:
    """A run that ends with its claim handed on (accounting's transfer, a failed payout) says to whom
    and until when; any other end keeps Prefect's «Completed» with the claim's state in the message."""
    if card.state in (S.PAYOUT_PENDING.value, S.PAYOUT_FAILED.value):
        name, message = run_label(card)
        return name, f"Run закончен, заявку держит дальше {message.split(': ', 1)[1]}"
    return None, f"{card.number}: run закончен, заявка — {STATE_LABELS_RU.get(card.state, card.state)}."
