"""The claim lifecycle: states, the transition table (data), pure guards and the effects of each step.

Nothing here touches a database or a clock: a guard takes the claim's facts and `now`.
`models/claim_store.py` lays this machine over the stored rows.

Reading guide:
- `ClaimState`: every state a claim can be in.
- `TRANSITIONS`: the table, in the shape `transitions.Machine` takes (rows for one trigger and source
  are tried in order; the first whose guards pass wins).
- `GUARDS`: each guard with the refusal it stands for, so a failed trigger says why.
- `MACHINE`: the one `transitions.Machine`, built once from the table; it alone evaluates triggers and
  guards, for one claim (`fire`) and for a batch (`judge`). Each of its conditions is a
  `GuardCondition` that carries its `Guard`, so a refusal's code and Russian message come from the
  very condition the machine found false.
- `effects()`: the columns a step writes besides the state (deadlines, decision, voided barcode).
- `NOTIFICATIONS`: which buyer email a step sends (through the outbox, in the same transaction);
  `SUPERSEDES`: which held letter a later one replaces.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from functools import lru_cache
from typing import Any

from transitions import Machine, MachineError
from transitions.core import Condition, EventData, Transition

from states import calendar
from states.policy import (
    DOCUMENTED_REASONS,
    EVENT_REASONS,
    LEGAL_POLICY,
    ORGANIZER_DECIDES,
    DocumentEvidence,
    OrganizerPolicy,
    PolicyError,
    Reason,
    TicketPrice,
    check_documented_claim,
    documents_deadline,
    quote_refund,
)
from states.regimes import RegimeRuling


class ClaimState(StrEnum):
    FILED = "filed"
    AWAITING_DOCUMENTS = "awaiting_documents"
    AWAITING_ORGANIZER = "awaiting_organizer"
    ESCALATED = "escalated"
    APPROVED = "approved"
    REJECTED = "rejected"
    PAYOUT_PENDING = "payout_pending"
    PAYOUT_FAILED = "payout_failed"
    NEEDS_BANK_DETAILS = "needs_bank_details"
    PAID = "paid"
    VOUCHER_ISSUED = "voucher_issued"
    WITHDRAWN = "withdrawn"
    CLOSED = "closed"


S = ClaimState
# A claim in one of these states no longer holds its ticket: a new claim for the ticket may be filed
# (e.g. the voluntary fallback after a refusal). The database enforces one open claim per ticket.
FINAL_STATES: frozenset[ClaimState] = frozenset({S.PAID, S.REJECTED, S.VOUCHER_ISSUED, S.WITHDRAWN, S.CLOSED})
OPEN_STATES: frozenset[ClaimState] = frozenset(set(S) - FINAL_STATES)
# States where the organizer's decision is awaited and the decision SLA runs.
DECISION_STATES: frozenset[ClaimState] = frozenset({S.AWAITING_ORGANIZER})
# States where money is owed and the payout SLA runs.
PAYOUT_STATES: frozenset[ClaimState] = frozenset({S.APPROVED, S.PAYOUT_PENDING, S.PAYOUT_FAILED, S.NEEDS_BANK_DETAILS})


class Trigger(StrEnum):
    ASSESS = "assess"
    SUBMIT_DOCUMENTS = "submit_documents"
    APPROVE = "approve"
    REJECT = "reject"
    EXTEND_REVIEW = "extend_review"
    ESCALATE = "escalate"
    EXPIRE_DOCUMENTS = "expire_documents"
    WITHDRAW = "withdraw"
    START_PAYOUT = "start_payout"
    BANK_DETAILS_RECEIVED = "bank_details_received"
    PAYOUT_SUCCEEDED = "payout_succeeded"
    PAYOUT_FAILED = "payout_failed"
    RETRY_PAYOUT = "retry_payout"
    FLAG_PAYOUT_OVERDUE = "flag_payout_overdue"
    REFUSE_SCANNED = "refuse_scanned"
    # The sales feed reported the ticket refunded elsewhere (box office, organizer): its barcode is void.
    CLOSE_REFUNDED_ELSEWHERE = "close_refunded_elsewhere"
    # Decree 442 vouchers (tasks/vouchers.py): instead of money, a voucher; used, or expired into the refund.
    ISSUE_VOUCHER = "issue_voucher"
    REDEEM_VOUCHER = "redeem_voucher"
    EXPIRE_VOUCHER = "expire_voucher"
    # `close` (final -> closed) has no driver yet: its row waits for the issue that needs it.


@dataclass(slots=True)  # not frozen: a batch builds thousands, and frozen __init__ costs 3x
class ClaimFacts:
    """What the guards may look at: a snapshot of the claim, its ticket, order and event."""

    reason: Reason
    state: ClaimState
    filed_at: datetime
    event_start: datetime  # aware, in the venue's time zone
    ticket: TicketPrice
    barcode_status: str = "valid"  # valid | scanned | void
    payment_method: str = "card"  # card | cash | bso
    acquirer_payment_id: str | None = None
    has_bank_details: bool = False
    event_status: str = "scheduled"  # scheduled | cancelled | postponed | replaced
    high_alert_regime: bool = False  # Decree 442: the event's change falls under a regime (see `regime`)
    regime: RegimeRuling | None = None  # which Decree 442 rule applies (states/regimes.py), None outside a regime
    voucher_valid_until: date | None = None  # a voucher_issued claim's voucher (tasks/vouchers.py)
    policy: OrganizerPolicy = LEGAL_POLICY
    order_created_at: datetime | None = None
    buyer_name: str = ""
    name_mismatch_explanation: str | None = None
    documents: tuple[DocumentEvidence, ...] = ()
    extended: bool = False
    decision_due: date | None = None
    payout_due: date | None = None
    decidable_on: date | None = None  # the day the claim became decidable (docs/rules.md, "Decision deadline")


@dataclass(frozen=True)
class Guard:
    name: str
    check: Callable[[ClaimFacts, datetime], bool]
    code: str
    message_ru: str


GUARDS: dict[str, Guard] = {}


def guard(code: str, message_ru: str) -> Callable[[Callable[[ClaimFacts, datetime], bool]], Callable]:
    def register(fn: Callable[[ClaimFacts, datetime], bool]) -> Callable[[ClaimFacts, datetime], bool]:
        GUARDS[fn.__name__] = Guard(fn.__name__, fn, code, message_ru)
        return fn

    return register


def cached_quote(reason: Reason, event_start: datetime, filed_at: datetime, ticket: TicketPrice, policy: OrganizerPolicy,
                 regime: RegimeRuling | None = None):
    """quote_refund, memoised: a mass cancellation quotes thousands of seats of a few price categories
    at one moment. Every argument is immutable, so the cache cannot go stale."""
    # The venue's zone is part of the key: the same instant in Moscow and in Kaliningrad compares
    # equal as a datetime but falls on different calendar days, so d differs.
    return _cached_quote(reason, event_start, str(event_start.tzinfo), filed_at, ticket, policy, regime)


@lru_cache(maxsize=8192)
def _cached_quote(reason, event_start, zone, filed_at, ticket, policy, regime):
    return quote_refund(reason=reason, event_start=event_start, filed_at=filed_at, ticket=ticket, policy=policy, regime=regime)


def _quote(c: ClaimFacts):
    return cached_quote(c.reason, c.event_start, c.filed_at, c.ticket, c.policy, c.regime)


def _documented_refusals(c: ClaimFacts):
    return check_documented_claim(
        reason=c.reason,
        event_start=c.event_start,
        filed_at=c.filed_at,
        order_created_at=c.order_created_at or c.filed_at,
        buyer_name=c.buyer_name,
        name_mismatch_explanation=c.name_mismatch_explanation,
        documents=c.documents,
    )


@guard("TICKET_SCANNED", "Билет уже прошёл контроль на входе, вернуть его нельзя.")
def ticket_scanned(c: ClaimFacts, now: datetime) -> bool:
    """A ticket scanned at the entrance cannot be refunded."""
    return c.barcode_status == "scanned"


@guard("TICKET_SCANNED", "Билет уже прошёл контроль на входе, вернуть его нельзя.")
def ticket_not_scanned(c: ClaimFacts, now: datetime) -> bool:
    return c.barcode_status != "scanned"


@guard("TICKET_NOT_VOID", "Билет действителен: он не был возвращён в другом месте.")
def ticket_void(c: ClaimFacts, now: datetime) -> bool:
    """The sales feed voided the ticket (refunded elsewhere): a ticket is refunded at most once."""
    return c.barcode_status == "void"


@guard("NOT_AUTOMATIC", "Заявку рассматривает организатор.")
def paid_without_decision(c: ClaimFacts, now: datetime) -> bool:
    """Voluntary refunds follow the Art. 52.1 table; cancellations pay 100 %: no one needs to decide."""
    return c.reason == Reason.VOLUNTARY or c.reason in EVENT_REASONS


@guard("NOT_ELIGIBLE", "По правилам возврата сумма к возврату равна нулю.")
def quote_eligible(c: ClaimFacts, now: datetime) -> bool:
    """Art. 52.1 table (voluntary) or 100 % (event cancelled, replaced, postponed)."""
    try:
        quote = _quote(c)
    except PolicyError:
        return False
    return quote.eligible and quote.amount > 0


@guard("NOT_VOLUNTARY", "Заявка подана не по собственной инициативе.")
def voluntary_reason(c: ClaimFacts, now: datetime) -> bool:
    return c.reason == Reason.VOLUNTARY


@guard("NOT_DOCUMENTED", "Причина заявки не требует документов.")
def documented_reason(c: ClaimFacts, now: datetime) -> bool:
    return c.reason in DOCUMENTED_REASONS


@guard("DOCUMENTED_REFUSAL", "Заявка не соответствует условиям возврата по болезни или смерти близкого.")
def documented_refusal(c: ClaimFacts, now: datetime) -> bool:
    """Decree 1491: a documented claim with a disqualifying fact (filed after the event, late or false documents...)."""
    return bool(_documented_refusals(c))


@guard("DOCUMENTS_OUTSTANDING", "Документы ещё не получены.")
def documents_outstanding(c: ClaimFacts, now: datetime) -> bool:
    return not c.documents


@guard("NO_DOCUMENTS", "Для рассмотрения заявки нужен подтверждающий документ.")
def has_documents(c: ClaimFacts, now: datetime) -> bool:
    return bool(c.documents)


@guard("ORGANIZER_DOES_NOT_DECIDE", "Эту заявку организатор не рассматривает.")
def organizer_decides(c: ClaimFacts, now: datetime) -> bool:
    return c.reason in ORGANIZER_DECIDES


@guard("ALREADY_EXTENDED", "Срок рассмотрения уже продлён до 20 рабочих дней.")
def not_extended(c: ClaimFacts, now: datetime) -> bool:
    """The organizer may extend the review from 10 to 20 working days, once."""
    return not c.extended


@guard("NOT_OVERDUE", "Срок рассмотрения ещё не истёк.")
def decision_overdue(c: ClaimFacts, now: datetime) -> bool:
    """Past the decision deadline: the due day itself still counts as in time."""
    return c.decision_due is not None and now.astimezone(c.event_start.tzinfo).date() > c.decision_due


@guard("PAYOUT_NOT_OVERDUE", "Срок выплаты ещё не истёк.")
def payout_overdue(c: ClaimFacts, now: datetime) -> bool:
    return c.payout_due is not None and now.astimezone(c.event_start.tzinfo).date() > c.payout_due


@guard("DOCUMENTS_WINDOW_OPEN", "Срок представления документов ещё не истёк.")
def documents_window_closed(c: ClaimFacts, now: datetime) -> bool:
    """Decree 1491: documents may follow to 24:00 (venue's zone) of the 14th day after the event."""
    return now >= documents_deadline(c.event_start)


@guard("PAYOUT_CHANNEL_MISSING", "Для возврата нужны банковские реквизиты.")
def payout_channel_ready(c: ClaimFacts, now: datetime) -> bool:
    """A card purchase goes back to the card via the acquirer; cash and BSO need full bank details."""
    if c.payment_method == "card":
        return bool(c.acquirer_payment_id)
    return c.has_bank_details


@guard("BANK_DETAILS_MISSING", "Нужны банковские реквизиты: БИК, номер счёта и ФИО получателя.")
def has_bank_details(c: ClaimFacts, now: datetime) -> bool:
    return c.has_bank_details


@guard("NOT_EVENT_REASON", "Заявка подана не из-за отмены, замены или переноса мероприятия.")
def event_reason(c: ClaimFacts, now: datetime) -> bool:
    return c.reason in EVENT_REASONS


@guard("VOUCHER_NOT_OFFERED", "Организатор не предлагает ваучеры по этому мероприятию.")
def voucher_allowed(c: ClaimFacts, now: datetime) -> bool:
    """Decree 442: a voucher instead of money for an event cancelled (or treated as such) or postponed
    under a high-alert regime, when the organizer's policy offers vouchers (data, not code)."""
    return c.reason in EVENT_REASONS and c.regime is not None and c.policy.vouchers_offered


@guard("VOUCHER_EXPIRED", "Срок действия ваучера истёк.")
def voucher_valid(c: ClaimFacts, now: datetime) -> bool:
    """A voucher is used up to its last valid day inclusive (venue's zone)."""
    return c.voucher_valid_until is not None and now.astimezone(c.event_start.tzinfo).date() <= c.voucher_valid_until


@guard("VOUCHER_STILL_VALID", "Ваучер ещё действует.")
def voucher_expired(c: ClaimFacts, now: datetime) -> bool:
    """Decree 442: a voucher not used by its expiry becomes a refund under the same deadline."""
    return c.voucher_valid_until is not None and now.astimezone(c.event_start.tzinfo).date() > c.voucher_valid_until


def _row(trigger: Trigger, source, dest, *conditions: str, unless: tuple[str, ...] = ()) -> dict[str, Any]:
    sources = [source] if isinstance(source, ClaimState) else list(source)
    return {
        "trigger": trigger.value,
        "source": [s.value for s in sources],
        "dest": dest.value if dest is not None else None,  # None: internal (state kept, audit row written)
        "conditions": list(conditions),
        "unless": list(unless),
    }


T = Trigger
DECIDABLE = (S.AWAITING_ORGANIZER, S.ESCALATED)
OPEN_BEFORE_DECISION = (S.FILED, S.AWAITING_DOCUMENTS, S.AWAITING_ORGANIZER, S.ESCALATED)

TRANSITIONS: list[dict[str, Any]] = [
    # Intake: rows for `assess` are tried in this order.
    _row(T.ASSESS, S.FILED, S.REJECTED, "ticket_scanned"),
    _row(T.ASSESS, S.FILED, S.APPROVED, "paid_without_decision", "quote_eligible"),
    _row(T.ASSESS, S.FILED, S.REJECTED, "voluntary_reason"),
    # An event claim the rules refuse (Decree 442: postponed <= 18 months, tickets kept valid).
    _row(T.ASSESS, S.FILED, S.REJECTED, "event_reason"),
    _row(T.ASSESS, S.FILED, S.REJECTED, "documented_reason", "documented_refusal"),
    _row(T.ASSESS, S.FILED, S.AWAITING_DOCUMENTS, "documented_reason", "documents_outstanding"),
    _row(T.ASSESS, S.FILED, S.AWAITING_ORGANIZER, "organizer_decides"),
    _row(T.SUBMIT_DOCUMENTS, S.AWAITING_DOCUMENTS, S.AWAITING_ORGANIZER, "has_documents"),
    _row(T.EXPIRE_DOCUMENTS, S.AWAITING_DOCUMENTS, S.REJECTED, "documents_window_closed"),
    # The organizer (or, once escalated, the operator's supervisor) decides.
    _row(T.APPROVE, DECIDABLE, S.APPROVED, "ticket_not_scanned"),
    _row(T.REJECT, DECIDABLE + (S.AWAITING_DOCUMENTS,), S.REJECTED),
    _row(T.EXTEND_REVIEW, S.AWAITING_ORGANIZER, None, "not_extended"),
    _row(T.ESCALATE, S.AWAITING_ORGANIZER, S.ESCALATED, "decision_overdue"),
    _row(T.WITHDRAW, OPEN_BEFORE_DECISION, S.WITHDRAWN),
    # Money.
    _row(T.START_PAYOUT, S.APPROVED, S.PAYOUT_PENDING, "ticket_not_scanned", "payout_channel_ready"),
    _row(T.START_PAYOUT, S.APPROVED, S.NEEDS_BANK_DETAILS, "ticket_not_scanned", unless=("payout_channel_ready",)),
    # Approved, then the barcode opened the door before the money left: no refund for a used ticket.
    _row(T.REFUSE_SCANNED, (S.APPROVED, S.NEEDS_BANK_DETAILS), S.REJECTED, "ticket_scanned"),
    # The sales feed reports the barcode scanned at the door before anyone decided: refused the same way.
    _row(T.REFUSE_SCANNED, OPEN_BEFORE_DECISION, S.REJECTED, "ticket_scanned"),
    # The sales feed reports the ticket refunded elsewhere before our money left: the claim is closed.
    _row(T.CLOSE_REFUNDED_ELSEWHERE, OPEN_BEFORE_DECISION + (S.APPROVED, S.NEEDS_BANK_DETAILS), S.CLOSED, "ticket_void"),
    _row(T.BANK_DETAILS_RECEIVED, S.NEEDS_BANK_DETAILS, S.PAYOUT_PENDING, "has_bank_details"),
    _row(T.PAYOUT_SUCCEEDED, S.PAYOUT_PENDING, S.PAID),
    _row(T.PAYOUT_FAILED, S.PAYOUT_PENDING, S.PAYOUT_FAILED),
    _row(T.RETRY_PAYOUT, S.PAYOUT_FAILED, S.PAYOUT_PENDING),
    # The card refused the refund for good (closed, payment unknown, nothing left to refund): the
    # payout starts again as a bank transfer, so the buyer is asked for bank details.
    _row(T.START_PAYOUT, S.PAYOUT_FAILED, S.NEEDS_BANK_DETAILS),
    _row(T.FLAG_PAYOUT_OVERDUE, (S.APPROVED, S.PAYOUT_PENDING, S.PAYOUT_FAILED, S.NEEDS_BANK_DETAILS), None, "payout_overdue"),
    # Decree 442 vouchers: instead of money (before any money moved), then used or expired into the refund.
    _row(T.ISSUE_VOUCHER, (S.FILED, S.APPROVED), S.VOUCHER_ISSUED, "voucher_allowed"),
    _row(T.REDEEM_VOUCHER, S.VOUCHER_ISSUED, S.CLOSED, "voucher_valid"),
    _row(T.EXPIRE_VOUCHER, S.VOUCHER_ISSUED, S.APPROVED, "voucher_expired"),
]

# Buyer-facing email sent when a step lands in a state (template names in tasks/templates/email/).
NOTIFICATIONS: Mapping[tuple[str, str], str] = {
    (T.ASSESS, S.APPROVED): "decision_approved",
    (T.ASSESS, S.REJECTED): "decision_rejected",
    (T.ASSESS, S.AWAITING_DOCUMENTS): "documents_needed",
    (T.EXPIRE_DOCUMENTS, S.REJECTED): "decision_rejected",
    (T.APPROVE, S.APPROVED): "decision_approved",
    (T.REJECT, S.REJECTED): "decision_rejected",
    (T.EXTEND_REVIEW, S.AWAITING_ORGANIZER): "review_extended",
    (T.START_PAYOUT, S.NEEDS_BANK_DETAILS): "bank_details_needed",
    (T.REFUSE_SCANNED, S.REJECTED): "decision_rejected",
    (T.CLOSE_REFUNDED_ELSEWHERE, S.CLOSED): "claim_closed",
    (T.PAYOUT_SUCCEEDED, S.PAID): "refund_sent",
}

# A held letter (mass mail waiting for its second person, tasks/mass_sends.py) that a later step of the
# same claim makes redundant is never sent: the buyer of a cancelled event gets one letter with where
# the refund stands, not "approved" and "sent" in the same minute. The later letter carries what the
# replaced one said (its payload names it under "includes"). Letters already released are never touched.
SUPERSEDES: Mapping[str, frozenset[str]] = {
    "refund_sent": frozenset({"decision_approved"}),
    "bank_details_needed": frozenset({"decision_approved"}),
}


# --- the machine: built once, the only evaluator of triggers and guards ------------------------------

class GuardCondition(Condition):
    """A `transitions` condition that knows the Guard it stands for.

    The machine checks it like any condition; when it fails, it notes itself on the model, so the
    refusal (code, Russian message) is the one the machine actually found false, not a re-derivation.
    """

    def __init__(self, func: str, target: bool = True):
        super().__init__(func, target)  # func stays the guard's name: the diagram prints it
        self.guard = GUARDS[func]

    def check(self, event_data: EventData) -> bool:
        model: ClaimModel = event_data.model  # type: ignore[assignment]  # transitions types its models as object
        passed = self.guard.check(model.facts, event_data.kwargs["now"]) == self.target
        if not passed:
            model.refusals.append((self.guard.code, self.guard.message_ru))
        return passed


class GuardedTransition(Transition):
    condition_cls = GuardCondition


class ClaimMachine(Machine):
    transition_cls = GuardedTransition


class ClaimModel:
    """What the machine drives for one claim: its state, the facts the guards read, and the refusals
    its conditions noted. Never registered with the machine (see `fire`)."""

    __slots__ = ("state", "facts", "refusals")

    def __init__(self, facts: Any, state: str | None = None):
        self.facts = facts
        self.state = state if state is not None else _value(facts.state)
        self.refusals: list[tuple[str, str]] = []


def _value(state: Any) -> str:
    return state.value if isinstance(state, ClaimState) else state


def _machine_kwargs() -> dict[str, Any]:
    return dict(
        states=[s.value for s in ClaimState],
        transitions=TRANSITIONS,
        initial=ClaimState.FILED.value,
        send_event=True,
        auto_transitions=False,
        ignore_invalid_triggers=False,
    )


# model=None: the machine holds no claims. A claim's model is handed to the machine's Event for one
# trigger (`fire`), so concurrent callers (Prefect task threads) share no mutable machine state.
MACHINE: ClaimMachine = ClaimMachine(model=None, **_machine_kwargs())


class InvalidTrigger(ValueError):
    """The trigger does not exist from the claim's current state."""


@dataclass(frozen=True)
class Outcome:
    """What the machine said: a target state, or the refusals that stopped every transition."""

    trigger: str
    source: str
    dest: str | None = None
    refusals: tuple[tuple[str, str], ...] = field(default_factory=tuple)  # (code, message_ru)

    @property
    def allowed(self) -> bool:
        return self.dest is not None


def has_step(trigger: str, state: str) -> bool:
    """Whether the machine has `trigger` from `state` at all (guards aside): `may_<trigger>` without the facts."""
    event = MACHINE.events.get(trigger)
    return event is not None and _value(state) in event.transitions


def edges() -> set[tuple[str, str]]:
    """Every (source, target) pair of the machine; an internal transition is (s, s)."""
    return {(t.source, t.dest or t.source) for t in MACHINE.get_transitions()}


def _invalid(trigger: str, source: str) -> InvalidTrigger:
    return InvalidTrigger(f"trigger {trigger!r} is not allowed from state {source!r}")


def fire(trigger: str, facts: ClaimFacts, now: datetime) -> Outcome:
    """One claim: the machine's own Event executes the trigger (conditions, then the state change)."""
    source = _value(facts.state)
    event = MACHINE.events.get(trigger)
    if event is None:
        raise _invalid(trigger, source)
    model = ClaimModel(facts, source)
    try:
        moved = event.trigger(model, now=now)
    except MachineError as exc:
        raise _invalid(trigger, source) from exc
    if moved:
        return Outcome(trigger, source, model.state)
    return Outcome(trigger, source, None, tuple(dict.fromkeys(model.refusals)))


class Judge:
    """Many claims, one trigger: for each claim, the machine's transitions for (trigger, its state),
    in the machine's order, whose conditions are checked against the claim; the first that passes
    wins, as `Machine.may_<trigger>` and `Event.trigger` do. No state is changed (the database does
    that in one UPDATE per group), and nothing here knows the table: it asks the machine.

    One model and one EventData serve the whole batch; a claim costs its guards and a few attribute writes.
    """

    def __init__(self, trigger: str, now: datetime):
        self.trigger = trigger
        self.event = MACHINE.events.get(trigger)
        self.now = now
        self.model = ClaimModel(None, "")
        self._by_source: dict[str, tuple[EventData, list[Transition]] | None] = {}

    def _for(self, source: str) -> tuple[EventData, list[Transition]] | None:
        if source not in self._by_source:
            transitions = MACHINE.get_transitions(trigger=self.trigger, source=source) if self.event else []
            self._by_source[source] = (
                (EventData(MACHINE.get_state(source), self.event, MACHINE, self.model, args=(), kwargs={"now": self.now}), transitions)
                if transitions else None
            )
        return self._by_source[source]

    def __call__(self, facts: Any) -> Outcome:
        source = _value(facts.state)
        found = self._for(source)
        if found is None:
            raise _invalid(self.trigger, source)
        event_data, transitions = found
        model = self.model
        model.facts, model.refusals = facts, []
        for transition in transitions:
            for condition in transition.conditions:
                if not condition.check(event_data):
                    break  # this transition is refused (the condition noted why); try the next
            else:
                return Outcome(self.trigger, source, transition.dest or source)
        return Outcome(self.trigger, source, None, tuple(dict.fromkeys(model.refusals)))


def judge(trigger: str, facts: ClaimFacts, now: datetime) -> Outcome:
    """The batch path for one claim (see `Judge`)."""
    return Judge(trigger, now)(facts)


# Triggers whose transitions have no condition and whose effects read nothing but the clock: a batch
# of them needs only each claim's state, not its facts.
FACTLESS_TRIGGERS: frozenset[str] = frozenset(
    name
    for name, event in MACHINE.events.items()
    if not any(t.conditions for t in MACHINE.get_transitions(trigger=name))
    and name not in (Trigger.APPROVE, Trigger.EXTEND_REVIEW, Trigger.SUBMIT_DOCUMENTS, Trigger.ASSESS, Trigger.EXPIRE_DOCUMENTS,
                     Trigger.EXPIRE_VOUCHER)
)


def mermaid_diagram() -> str:
    """The lifecycle as a mermaid state diagram, drawn from the same table as MACHINE.

    A GraphMachine of its own, for drawing only: graph support would slow every trigger of MACHINE.
    """
    from transitions.extensions import GraphMachine

    graph = GraphMachine(model=None, graph_engine="mermaid", show_conditions=True, title="Claim lifecycle", **_machine_kwargs())
    drawing = type("Drawing", (), {})()  # a model the graph machine may decorate (ClaimModel has slots)
    graph.add_model(drawing)
    return drawing.get_graph().draw(None)


def intake_refusal(facts: ClaimFacts, now: datetime) -> tuple[str, str]:
    """Why a claim was refused without anyone deciding: the policy's own code and Russian message."""
    if ticket_scanned(facts, now):
        g = GUARDS["ticket_scanned"]
        return g.code, g.message_ru
    if facts.reason in DOCUMENTED_REASONS:
        refusals = _documented_refusals(facts)
        if refusals:
            return refusals[0].code, refusals[0].message_ru
        return "DOCUMENTS_LATE", "Документы не поступили в течение 14 дней после мероприятия."
    try:
        quote = _quote(facts)
    except PolicyError as exc:
        return "NOT_ELIGIBLE", str(exc)
    return quote.refusal_code or "NOT_ELIGIBLE", quote.refusal_message_ru or GUARDS["quote_eligible"].message_ru


REFUNDED_ELSEWHERE = (
    "REFUNDED_ELSEWHERE",
    "Билет уже возвращён в другом месте (в кассе или организатором), поэтому заявка закрыта: повторно деньги за него не выплачиваются.",
)


# --- what a step writes besides the state -----------------------------------------------------------

def _venue_day(moment: datetime, facts: ClaimFacts) -> date:
    return moment.astimezone(facts.event_start.tzinfo).date()


def decidable_day(trigger: str, facts: ClaimFacts, now: datetime) -> date:
    """docs/rules.md, "Decision deadline": the organizer's 10 (or 20) working days count from the day
    the claim became decidable, in the venue's zone: the filing day when it needs no documents or came
    with them (`assess`), the day its documents were complete (`submit_documents`, run when they arrive)."""
    if trigger == T.SUBMIT_DOCUMENTS:
        return max(_venue_day(now, facts), _venue_day(facts.filed_at, facts))
    return _venue_day(facts.filed_at, facts)


def regime_refund_due(facts: ClaimFacts) -> date | None:
    """Decree 442: the 180-day refund deadline of a claim whose event is treated as cancelled (None:
    no regime, tickets stay valid, or the regime has not ended yet)."""
    regime = getattr(facts, "regime", None)
    if regime is None or not regime.treated_as_cancelled:
        return None
    return regime.refund_due


def effects(trigger: str, dest: str, facts: ClaimFacts, now: datetime, data: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Columns a step sets on the claim (and `ticket_barcode_status` on its ticket). Pure."""
    data = data or {}
    out: dict[str, Any] = {}
    if trigger == T.ASSESS and dest == S.AWAITING_ORGANIZER or trigger == T.SUBMIT_DOCUMENTS:
        decidable_on = decidable_day(trigger, facts, now)
        due = calendar.decision_deadline(decidable_on, extended=facts.extended)
        out |= {"decidable_on": decidable_on, "decision_due": due.due, "deadline_provisional": due.provisional}
    if trigger == T.EXTEND_REVIEW:
        # A claim decidable before its day was stored (older rows) counts from filing.
        decidable_on = facts.decidable_on or _venue_day(facts.filed_at, facts)
        due = calendar.decision_deadline(decidable_on, extended=True)
        out |= {"extended": True, "decision_due": due.due, "deadline_provisional": due.provisional}
    if dest in (S.APPROVED, S.REJECTED):
        out |= {"decided_at": now, "decision_due": None}
    if dest == S.APPROVED:
        today = now.astimezone(facts.event_start.tzinfo).date()
        due = calendar.payout_deadline(today)
        out |= {"payout_due": due.due, "deadline_provisional": due.provisional}
        regime_due = regime_refund_due(facts)
        if regime_due is not None:
            # Decree 442: within 180 days of the regime's end; once that day has passed (a voucher
            # expired late), the usual 10 working days, and sla-watch flags the claim as late.
            out |= {"regime_refund_due": regime_due}
            if regime_due >= today:
                out |= {"payout_due": regime_due, "deadline_provisional": False}
    if dest == S.ESCALATED:
        out |= {"escalated_at": now}
    if trigger == T.FLAG_PAYOUT_OVERDUE:
        out |= {"escalated_at": now}
    if trigger == T.START_PAYOUT and dest == S.PAYOUT_PENDING or trigger == T.BANK_DETAILS_RECEIVED:
        out |= {"ticket_barcode_status": "void"}  # money is on its way: the barcode must not open the door
    if dest == S.PAID:
        out |= {"payout_due": None, "paid_at": now}
    if dest in (S.WITHDRAWN, S.VOUCHER_ISSUED):
        out |= {"decision_due": None}
    if trigger == T.CLOSE_REFUNDED_ELSEWHERE:
        out |= {"decision_due": None, "payout_due": None, "refusal_code": REFUNDED_ELSEWHERE[0], "refusal_message": REFUNDED_ELSEWHERE[1]}
    if dest == S.VOUCHER_ISSUED:
        out |= {"payout_due": None}  # no money owed while the voucher is valid
    if dest == S.CLOSED and trigger == T.REDEEM_VOUCHER:
        out |= {"regime_refund_due": None}
    if dest == S.REJECTED and trigger in (T.ASSESS, T.EXPIRE_DOCUMENTS, T.REFUSE_SCANNED):
        out["refusal_code"], out["refusal_message"] = intake_refusal(facts, now)
    for key in ("refusal_code", "refusal_message", "decision_note", "decided_by", "approved_amount", "extension_reason"):
        if key in data:
            out[key] = data[key]
    return out
