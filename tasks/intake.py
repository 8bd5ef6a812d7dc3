"""Claims in: a buyer files, documents arrive, an organizer decides; each then reaches the claim's flow run.

Plain functions (the API and the CLI call them). Each step is recorded in one transaction with its
audit row, its outbox rows and the run action that brings the claim's flow run up to date (create
or resume, tasks/run_actions.py). Nothing here calls Prefect: the answer does not wait on it, and a
Prefect outage loses nothing; the run starter creates and resumes runs at the pace Prefect bears.
"""
from __future__ import annotations

import hashlib
import secrets
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Literal

from prefect.input import RunInput
from pydantic import Field
from sqlalchemy import insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from models.claim_store import (
    ClaimNotFound,
    ConflictError,
    InvalidTrigger,
    TicketNotClaimable,
    TransitionRefused,
    apply_batch,
    apply_trigger,
    claim_t,
    document_t,
    event_t,
    file_claims,
    id_in,
    load_facts,
    order_t,
    organizer_t,
    ticket_t,
)
from models.claim_views import ClaimView, claim_with_order_and_event, read_claim
from models.tables import Document
from states.calendar import DECISION_WORKING_DAYS
from states.lifecycle import ClaimState, Trigger, effects, has_step
from states.money import parse_rub
from states.policy import (
    DOCUMENT_KINDS,
    DOCUMENTED_REASONS,
    ORGANIZER_DECIDES,
    PolicyError,
    Reason,
    ReasonNotAllowed,
    check_documented_claim,
    documents_last_day,
    fallback_offer,
)
from tasks.emails import basis_ru
from tasks.outbox import enqueue_email
from tasks.run_actions import REFUND_CLAIM_DEPLOYMENT, queue_create, queue_resume  # noqa: F401 - the deployment's name is read from here


class ClaimInput(RunInput):
    """What resumes a waiting claim: the organizer's decision, an extension, or documents received.

    The decision endpoint records the step in the database first and passes the same facts here; a
    run resumed from the Prefect UI form applies the step itself.
    """

    # withdraw / expire_documents / documents / bank_details: the step is already recorded (buyer, sla-watch, ops);
    # the run re-reads the claim and goes on. recheck: the claim moved on, read it again.
    decision: Literal["approve", "reject", "extend", "documents", "withdraw", "expire_documents", "bank_details", "recheck"] = Field(
        description="approve, reject, extend (10 -> 20 working days); documents, bank_details, withdraw, expire_documents "
                    "(already recorded); recheck (the claim moved on: read it again)")
    amount_kopecks: int | None = Field(default=None, ge=0, description="For an 'other' claim: the amount the organizer agrees to refund")
    note: str = Field(default="", description="Reason for a refusal or an extension, shown to the buyer")
    decided_by: str = Field(default="organizer", description="Who decided")
    at: datetime | None = Field(default=None, description="When the decision was made (defaults to the resume time)")


def acknowledgement_payload(conn, claim_id: int, now: datetime) -> dict[str, Any]:
    """What «Заявка принята» says. A claim the organizer decides (illness, death, «Прочее") gets what
    happens next and by when; the decision deadline is the one `assess` would set (states decide),
    shown only once it can be known (documents in). Any other claim gets its quote and the rule,
    in Russian prose."""
    row = conn.execute(claim_with_order_and_event(
        claim_id, claim_t.c.number, claim_t.c.quote, claim_t.c.reason, order_t.c.buyer_name, event_t.c.title,
    )).one()
    _, facts = load_facts(conn, [claim_id], now)[claim_id]
    quote = row.quote or {}
    payload: dict[str, Any] = {
        "claim_number": row.number,
        "buyer_name": row.buyer_name,
        "event_title": row.title,
        "event_date": facts.event_start.date(),
        "reason": row.reason,
        "basis": basis_ru(quote | {"reason": row.reason}),
    }
    if row.reason in {r.value for r in ORGANIZER_DECIDES}:
        documented = row.reason in {r.value for r in DOCUMENTED_REASONS}
        payload["decision_working_days"] = DECISION_WORKING_DAYS
        # A date past the calendar's edge (an event in year 9999) leaves the date out, never the filing.
        if documented:
            payload["documents_received"] = bool(facts.documents)
            with suppress(OverflowError, ValueError):
                payload["documents_deadline"] = documents_last_day(facts.event_start)
        if not documented or facts.documents:
            with suppress(OverflowError, ValueError):
                due = effects(Trigger.ASSESS.value, ClaimState.AWAITING_ORGANIZER.value, facts, now).get("decision_due")
                if due is not None:
                    payload["decision_deadline"] = due
    else:
        payload |= {
            "refund_percent": quote.get("percent", 0),
            "refund_kopecks": parse_rub(quote.get("amount", "0.00")),
            "days_before": quote.get("days_before"),
        }
    return payload


def queue_acknowledgement(conn, claim_id: int, now: datetime) -> bool:
    """Queue «Заявка принята» in the caller's transaction: the filing writes it together with the
    claim, the claim's run again (the dedup key keeps it once per claim)."""
    recipient = conn.execute(claim_with_order_and_event(claim_id, order_t.c.buyer_email)).scalar_one()
    payload = acknowledgement_payload(conn, claim_id, now)
    with Session(bind=conn) as session:
        queued = enqueue_email(session, dedup_key=f"claim:{claim_id}:claim_received", claim_id=claim_id, template="claim_received",
                               recipient=recipient, payload=payload, now=now)
        session.flush()
    return queued


class IntakeError(ValueError):
    """Bad input from a buyer or an organizer: `field` names it, `message_ru` is shown to them."""

    def __init__(self, field: str, message_ru: str, code: str = "invalid", status: int = 422):
        super().__init__(f"{field}: {message_ru}")
        self.field, self.message_ru, self.code, self.status = field, message_ru, code, status


class NotYourClaim(LookupError):
    """The claim does not exist or belongs to another organizer's event (the two look the same)."""


# --- organizers' tokens --------------------------------------------------------------------------

def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


TOKEN_DAYS = 90  # an organizer's API token lives this long unless issued for another period


def issue_organizer_token(engine: Engine, organizer_id: int, *, now: datetime | None = None, days: int = TOKEN_DAYS) -> str:
    """A new API token for an organizer, valid for `days`; only its digest is stored (the old one stops working)."""
    if days < 1:
        raise ValueError("a token lives at least one day")
    token = secrets.token_urlsafe(32)
    expires = (now or datetime.now(UTC)) + timedelta(days=days)
    with engine.begin() as conn:
        conn.execute(update(organizer_t).where(organizer_t.c.id == organizer_id)
                     .values(api_token_sha256=token_digest(token), api_token_expires_at=expires))
    return token


def organizer_principal(organizer_id: int) -> str:
    """The audit actor for an organizer authenticated by their token (DESIGN, Security: the audit
    row records who called, never a name the client typed)."""
    return f"organizer:{organizer_id}"


# A run resumed from the Prefect UI form: Prefect does not say which person submitted it.
PREFECT_UI_PRINCIPAL = "prefect-ui"


def organizer_for_token(engine: Engine, token: str, *, now: datetime | None = None) -> int | None:
    """The organizer whose unexpired token this is; None for an unknown or expired one (the API answers 401)."""
    at = now or datetime.now(UTC)
    with engine.connect() as conn:
        return conn.execute(select(organizer_t.c.id).where(
            organizer_t.c.api_token_sha256 == token_digest(token), organizer_t.c.api_token_expires_at > at,
        )).scalar_one_or_none()


def _owned_claim(engine: Engine, claim_id: int, organizer_id: int | None) -> ClaimView:
    try:
        claim = read_claim(claim_id, engine=engine)
    except LookupError as exc:
        raise NotYourClaim(f"claim {claim_id} not found") from exc
    if organizer_id is not None and claim.organizer_id != organizer_id:
        raise NotYourClaim(f"claim {claim_id} not found")
    return claim


# --- buyers --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FiledClaim:
    id: int
    number: str
    state: str
    quote: dict[str, Any]
    flow_run_id: str | None


def file_buyer_claim(
    engine: Engine,
    *,
    ticket_id: int,
    reason: str,
    now: datetime,
    actor: str,
    description: str = "",
    name_mismatch_explanation: str | None = None,
    start_flow: bool = True,
) -> FiledClaim:
    """File a buyer's claim for one ticket; its refund-claim flow run is queued in the same transaction
    (created by the run starter, so `flow_run_id` is None in the answer). `actor` is the caller's
    principal (`Principal.audit`: the buyer's order, the service key vouching for the buyer)."""
    try:
        reason = Reason(reason)
    except ValueError:
        raise IntakeError("reason", "Неизвестная причина возврата.") from None
    try:
        with engine.begin() as conn:
            (claim_id,) = file_claims(conn, ticket_ids=[ticket_id], reason=reason, actor=actor, now=now,
                                      description=description, name_mismatch_explanation=name_mismatch_explanation)
            queue_acknowledgement(conn, claim_id, now)  # with the claim: the API can mail it at once
            if start_flow:
                queue_create(conn, claim_id=claim_id, now=now)
    except ClaimNotFound:
        raise IntakeError("ticket_id", "Билет не найден.", code="not_found", status=404) from None
    except TicketNotClaimable as exc:
        code, message = exc.refusals[ticket_id]
        raise IntakeError("ticket_id", message, code=code, status=409) from None
    except ReasonNotAllowed as exc:  # the rules refuse this reason for this event (its status, claims_until)
        raise IntakeError(exc.field, exc.message_ru, code=exc.code) from None
    except PolicyError:
        raise IntakeError("reason", "Возврат по собственной инициативе возможен только до начала мероприятия.", code="after_event") from None
    except IntegrityError:
        raise IntakeError("ticket_id", "По этому билету уже есть заявка на возврат в работе.", code="claim_open", status=409) from None
    with engine.connect() as conn:
        row = conn.execute(select(claim_t.c.number, claim_t.c.state, claim_t.c.quote, claim_t.c.flow_run_id).where(claim_t.c.id == claim_id)).one()
    return FiledClaim(claim_id, row.number, row.state, row.quote, row.flow_run_id)


def start_claim_flow(engine: Engine, claim_id: int, *, now: datetime) -> None:
    """Queue the claim's flow run (named after the claim, tagged, idempotent on the claim id) for the
    run starter; a second call for the same claim is ignored."""
    with engine.begin() as conn:
        queue_create(conn, claim_id=claim_id, now=now)


def add_document(
    engine: Engine,
    *,
    claim_id: int,
    kind: str,
    now: datetime,
    sick_from: date | None = None,
    sick_to: date | None = None,
    person_name: str | None = None,
    relation: str | None = None,
    filename: str | None = None,
    organizer_id: int | None = None,
    actor: str,
    sha256: str | None = None,
    size: int | None = None,
    content_type: str | None = None,
) -> str:
    """Store a buyer's document (its file, when one came, already stored by tasks/documents.store); a
    claim waiting for documents moves on to the organizer, its run's resume queued with it. The audit
    row names `actor`, the caller's principal."""
    if kind not in DOCUMENT_KINDS:
        raise IntakeError("kind", "Неизвестный тип документа.")
    if sick_from and sick_to and sick_to < sick_from:
        raise IntakeError("sick_to", "Дата окончания болезни раньше даты начала.")
    claim = _owned_claim(engine, claim_id, organizer_id)
    if claim.state not in (ClaimState.AWAITING_DOCUMENTS, ClaimState.AWAITING_ORGANIZER, ClaimState.ESCALATED, ClaimState.FILED):
        raise IntakeError("claim_id", "Заявка уже рассмотрена, документы не нужны.", code="closed", status=409)
    with engine.begin() as conn:
        conn.execute(insert(Document.__table__).values(claim_id=claim_id, kind=kind, received_at=now, sick_from=sick_from, sick_to=sick_to,
                                                       person_name=person_name, relation=relation, filename=filename,
                                                       sha256=sha256, size=size, content_type=content_type))
        if claim.state == ClaimState.AWAITING_DOCUMENTS:
            apply_trigger(conn, claim_id=claim_id, trigger=Trigger.SUBMIT_DOCUMENTS.value, actor=actor, now=now)
            _queue_resume(conn, [claim_id], ClaimInput(decision="documents", decided_by=actor, at=now), now)
    return read_claim(claim_id, engine=engine).state


def request_run_resume(engine: Engine, claim_id: int, run_input: ClaimInput) -> bool:
    """Queue the claim's run to go on after a step recorded by someone other than the run
    (documents expired): the run starter resumes it, the run re-reads the claim and ends.

    A separate transaction from the step: were it lost, the sweep (tasks/run_actions.py) still finds
    the run behind its claim's state. Steps that can, queue the resume with the step (`_queue_resume`).
    """
    # Due at once on the starter's clock: a step recorded "as of" another moment (sla-watch run for a
    # given day) still wants its run brought up to date now.
    with engine.begin() as conn:
        _queue_resume(conn, [claim_id], run_input, datetime.now(UTC))
    return True


@dataclass(frozen=True)
class WithdrawnClaim:
    id: int
    number: str
    state: str
    resumed: bool


def withdraw_claim(engine: Engine, *, number: str, actor: str, now: datetime, note: str = "") -> WithdrawnClaim:
    """The buyer withdraws a claim before a decision (`withdraw`: filed, awaiting documents or the
    organizer, escalated -> withdrawn); «Заявка отозвана» is queued in the same transaction.

    The caller has proven the buyer (a buyer token of the claim's order, or a service key vouching
    for them: tasks/buyer_claims.claim_ref); the audit row names that principal, `actor`.
    """
    with engine.connect() as conn:
        row = conn.execute(
            select(claim_t.c.id, claim_t.c.state, order_t.c.buyer_email, order_t.c.buyer_name, event_t.c.title)
            .join(ticket_t, ticket_t.c.id == claim_t.c.ticket_id)
            .join(order_t, order_t.c.id == ticket_t.c.order_id)
            .join(event_t, event_t.c.id == claim_t.c.event_id)
            .where(claim_t.c.number == number)
        ).one_or_none()
    if row is None:
        raise NotYourClaim(f"claim {number} not found")
    if not has_step(Trigger.WITHDRAW.value, row.state):
        raise IntakeError("number", "Заявка уже рассмотрена, отозвать её нельзя.", code="wrong_state", status=409)
    try:
        with engine.begin() as conn:
            outcome = apply_trigger(conn, claim_id=row.id, trigger=Trigger.WITHDRAW.value, actor=actor, now=now,
                                    note=note.strip() or None)
            with Session(bind=conn) as session:
                enqueue_email(
                    session, dedup_key=f"claim:{row.id}:claim_withdrawn", claim_id=row.id, template="claim_withdrawn",
                    recipient=row.buyer_email, payload={"claim_number": number, "event_title": row.title, "buyer_name": row.buyer_name},
                    now=now,
                )
                session.flush()
            _queue_resume(conn, [row.id], ClaimInput(decision="withdraw", decided_by=actor, at=now), now)
    except (ConflictError, InvalidTrigger):
        raise IntakeError("number", "Заявка изменилась, пока вы её отзывали. Обновите страницу.", code="conflict", status=409) from None
    return WithdrawnClaim(row.id, number, outcome.dest, True)


# --- organizers ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class DecisionResult:
    claim_id: int
    number: str
    state: str
    resumed: bool  # the run's resume was queued with the step (the run starter carries it out)


def fallback_offers(conn, claim_ids: list[int], at: datetime) -> dict[str, Any]:
    """Operator rules: a refused «Прочее» claim is offered the voluntary refund while the event is
    more than 3 days away. {"fallback_offers": {claim id: {"percent", "amount"}}} for the refusal's
    data (the buyer's email shows each claim's own offer), empty when no claim gets one."""
    offers: dict[int, dict[str, int]] = {}
    for claim_id, (_, facts) in load_facts(conn, claim_ids, at).items():
        if facts.reason == Reason.OTHER:
            offer = fallback_offer(event_start=facts.event_start, now=at, ticket=facts.ticket, policy=facts.policy)
            if offer is not None:
                offers[claim_id] = {"percent": offer.percent, "amount": offer.amount}
    return {"fallback_offers": offers} if offers else {}


#: The claim's state as an organizer reads it in a 409 (never the internal code).
STATE_LABELS_RU = {
    "filed": "подана, ещё проверяется",
    "awaiting_documents": "ждёт документы покупателя",
    "awaiting_organizer": "ждёт решения организатора",
    "escalated": "срок решения истёк",
    "approved": "возврат одобрен",
    "rejected": "в возврате отказано",
    "payout_pending": "выплата в работе",
    "payout_failed": "выплата не прошла",
    "needs_bank_details": "ждёт банковские реквизиты",
    "paid": "деньги выплачены",
    "voucher_issued": "выдан ваучер",
    "withdrawn": "отозвана покупателем",
    "closed": "закрыта",
}

DECISION_TRIGGERS = {"approve": Trigger.APPROVE, "reject": Trigger.REJECT, "extend": Trigger.EXTEND_REVIEW}


def decide(engine: Engine, *, claim_id: int, decision: ClaimInput, now: datetime, organizer_id: int | None = None,
           expected_version: int | None = None, resume: bool = True, actor: str | None = None) -> DecisionResult:
    """Check an organizer's decision against the claim and the machine, record it with the run's resume.

    approve (optionally a smaller amount for an "other" claim), reject (with the reason; the buyer is
    offered the voluntary refund when the event is still more than 3 days away) or extend (10 -> 20
    working days, with a reason). Raises NotYourClaim, IntakeError (status 409/422, Russian message).

    The audit row and `claim.decided_by` name the caller: `actor` is the authenticated principal's
    audit string (`organizer:<id>:user:<login>`, `staff:supervisor:<login>`); without it,
    `organizer:<id>` for an organizer's legacy token, or `prefect-ui` for a run resumed from the
    Prefect UI form (organizer_id None). `organizer_id` scopes the claim (None: any organizer's, for
    staff and the Prefect UI). `decision.decided_by` is what a client typed and is never recorded.
    """
    if decision.decision not in DECISION_TRIGGERS:
        raise IntakeError("decision", "Решение должно быть approve, reject или extend.")
    if decision.decision in ("reject", "extend") and not decision.note.strip():
        raise IntakeError("note", "Укажите причину: покупатель увидит её в письме.")
    claim = _owned_claim(engine, claim_id, organizer_id)
    trigger = DECISION_TRIGGERS[decision.decision]
    if not has_step(trigger.value, claim.state):
        label = STATE_LABELS_RU.get(claim.state, claim.state)
        raise IntakeError("decision", f"Состояние заявки — «{label}», такое решение сейчас невозможно.", code="wrong_state", status=409)
    at = decision.at or now
    actor = actor or (organizer_principal(organizer_id) if organizer_id is not None else PREFECT_UI_PRINCIPAL)
    data: dict[str, Any] = {"decided_by": actor}
    with engine.begin() as conn:
        facts = load_facts(conn, [claim_id], at)[claim_id][1]
        if decision.decision == "approve":
            if decision.amount_kopecks is not None:
                if facts.reason != Reason.OTHER:
                    raise IntakeError("amount_kopecks", "Сумму можно указать только для заявки по причине «Прочее».")
                if decision.amount_kopecks <= 0:
                    # 0 ₽ "approved" would void the ticket, take its one refund and leave the claim in
                    # payout_pending for ever (no payout opens for nothing): that is a refusal.
                    raise IntakeError("amount_kopecks", "Сумма возврата должна быть больше нуля; чтобы не возвращать деньги, откажите в возврате (reject).")
                if decision.amount_kopecks > facts.ticket.base:
                    raise IntakeError("amount_kopecks", "Сумма больше стоимости билета.")
                data["approved_amount"] = decision.amount_kopecks
            if decision.note:
                data["decision_note"] = decision.note
        elif decision.decision == "reject":
            data |= {"refusal_code": "ORGANIZER_REFUSED", "refusal_message": decision.note.strip(), "decision_note": decision.note.strip()}
            data |= fallback_offers(conn, [claim_id], at)
        else:
            data = {"extension_reason": decision.note.strip()}
        try:
            apply_trigger(conn, claim_id=claim_id, trigger=trigger.value, actor=actor, now=at,
                          note=decision.note or None, data=data, expected_version=expected_version)
        except TransitionRefused as exc:
            code, message = exc.refusals[0]
            raise IntakeError("decision", message, code=code, status=409) from None
        except (ConflictError, InvalidTrigger):
            raise IntakeError("decision", "Заявка изменилась, пока вы принимали решение. Обновите страницу.", code="conflict", status=409) from None
        # An extension changes no state: the run keeps waiting, nothing to resume.
        resumed = resume and decision.decision != "extend"
        if resumed:
            _queue_resume(conn, [claim_id], decision.model_copy(update={"at": at}), now)
    state = read_claim(claim_id, engine=engine).state
    return DecisionResult(claim_id, claim.number, state, resumed)


def refuse_false_documents(engine: Engine, *, claim_id: int, organizer_id: int | None, now: datetime, note: str,
                           document_ids: list[int] | None = None, expected_version: int | None = None,
                           actor: str | None = None) -> DecisionResult:
    """The organizer judges a claim's documents false and refuses it (Decree 1491: false documents are
    grounds to refuse), with the policy's DOCUMENTS_FALSE code and Russian message.

    Marks the listed documents (all of the claim's when none are listed) `judged_false`, then asks the
    policy for the refusal and applies `reject`, in one transaction. `note` is the organizer's grounds,
    kept in the audit trail; the buyer's email carries the policy's message. `actor` is the caller's
    principal (`organizer:<id>` for a legacy token when omitted); `organizer_id` None: staff, any organizer's claim.
    """
    if not note.strip():
        raise IntakeError("note", "Укажите, что именно недостоверно в документах: запись попадёт в журнал заявки.")
    claim = _owned_claim(engine, claim_id, organizer_id)
    if Reason(claim.reason) not in DOCUMENTED_REASONS:
        raise IntakeError("claim_id", "Документы проверяются только в заявках по болезни или смерти близкого.", code="not_documented", status=409)
    if not has_step(Trigger.REJECT.value, claim.state):
        raise IntakeError("claim_id", f"Заявка в состоянии «{claim.state}», отказать по ней сейчас нельзя.", code="wrong_state", status=409)
    if actor is None:
        if organizer_id is None:
            raise ValueError("refuse_false_documents needs the caller's principal (actor) or the organizer's id")
        actor = organizer_principal(organizer_id)
    with engine.begin() as conn:
        own = set(conn.execute(select(document_t.c.id).where(document_t.c.claim_id == claim_id)).scalars())
        if not own:
            raise IntakeError("document_ids", "В заявке нет документов: отмечать недостоверными нечего.", code="no_documents", status=409)
        chosen = set(document_ids) if document_ids else own
        if not chosen <= own:
            raise IntakeError("document_ids", "Документ не найден в этой заявке.", code="not_found", status=404)
        conn.execute(update(document_t).where(document_t.c.claim_id == claim_id, document_t.c.id.in_(sorted(chosen))).values(judged_false=True))
        facts = load_facts(conn, [claim_id], now)[claim_id][1]
        refusals = check_documented_claim(
            reason=facts.reason, event_start=facts.event_start, filed_at=facts.filed_at,
            order_created_at=facts.order_created_at or facts.filed_at, buyer_name=facts.buyer_name,
            name_mismatch_explanation=facts.name_mismatch_explanation, documents=facts.documents,
        )
        refusal = next(r for r in refusals if r.code == "DOCUMENTS_FALSE")
        data = {"decided_by": actor, "refusal_code": refusal.code, "refusal_message": refusal.message_ru, "decision_note": note.strip()}
        try:
            apply_trigger(conn, claim_id=claim_id, trigger=Trigger.REJECT.value, actor=actor, now=now, note=note.strip(), data=data,
                          expected_version=expected_version)
        except (ConflictError, InvalidTrigger):
            raise IntakeError("claim_id", "Заявка изменилась, пока вы принимали решение. Обновите страницу.", code="conflict", status=409) from None
        _queue_resume(conn, [claim_id], ClaimInput(decision="recheck", note=refusal.message_ru, decided_by=actor, at=now), now)
    return DecisionResult(claim_id, claim.number, ClaimState.REJECTED.value, True)


BULK_DECISIONS = ("approve", "reject", "extend")


def decide_many(engine: Engine, *, claim_ids: list[int], decision: ClaimInput, now: datetime, organizer_id: int | None,
                actor: str | None = None, amounts: dict[int, int] | None = None, refusal_code: str = "ORGANIZER_REFUSED") -> dict[str, Any]:
    """A bulk decision: one batch transition over the caller's claims, each chunk's resumes queued in its transaction.

    approve (with `amounts`: the sum agreed for each «Прочее» claim listed), reject (one reason for
    all; each «Прочее» claim gets its own voluntary fallback offer, as a single refusal does) or
    extend (10 -> 20 working days, with a reason; the runs keep waiting, nothing to resume).
    `organizer_id` scopes the claims (another organizer's claim is reported as not found); None: any
    organizer's (a supervisor). Claims whose guard fails or whose state takes no such decision come
    back with the reason. The audit rows name `actor` (the principal; `organizer:<id>` for a legacy token).
    """
    if decision.decision not in BULK_DECISIONS:
        raise IntakeError("decision", "Решение должно быть approve, reject или extend.")
    if decision.decision in ("reject", "extend") and not decision.note.strip():
        raise IntakeError("note", "Укажите причину: покупатель увидит её в письме.")
    amounts = dict(amounts or {})
    if amounts and decision.decision != "approve":
        raise IntakeError("amounts", "Сумму можно указать только при одобрении.")
    if actor is None:
        if organizer_id is None:
            raise ValueError("decide_many needs the caller's principal (actor) or the organizer's id")
        actor = organizer_principal(organizer_id)
    ids = list(dict.fromkeys(claim_ids))
    with engine.connect() as conn:
        query = select(claim_t.c.id).join(event_t, event_t.c.id == claim_t.c.event_id).where(id_in(conn, claim_t.c.id, ids))
        if organizer_id is not None:
            query = query.where(event_t.c.organizer_id == organizer_id)
        owned = set(conn.execute(query).scalars())
    refused = [{"claim_id": i, "msg": "Заявка не найдена.", "type": "not_found"} for i in ids if i not in owned]
    mine = [i for i in ids if i in owned]
    data: dict[str, Any] = {"decided_by": actor}
    if decision.decision == "reject":
        data |= {"refusal_code": refusal_code, "refusal_message": decision.note.strip(), "decision_note": decision.note.strip()}
        with engine.connect() as conn:
            data |= fallback_offers(conn, mine, now)
    elif decision.decision == "extend":
        data = {"extension_reason": decision.note.strip()}
    elif decision.note:
        data["decision_note"] = decision.note
    # Claims with an agreed amount: checked against their facts, then approved in one batch per amount.
    groups: dict[int | None, list[int]] = {None: [i for i in mine if i not in amounts]}
    if amounts:
        with engine.connect() as conn:
            facts = load_facts(conn, [i for i in mine if i in amounts], now)
        for claim_id in [i for i in mine if i in amounts]:
            amount, claim_facts = amounts[claim_id], facts[claim_id][1]
            problem = ("Сумму можно указать только для заявки по причине «Прочее»." if claim_facts.reason != Reason.OTHER
                       else "Сумма возврата должна быть больше нуля." if amount <= 0
                       else "Сумма больше стоимости билета." if amount > claim_facts.ticket.base else None)
            if problem:
                refused.append({"claim_id": claim_id, "msg": problem, "type": "invalid_amount"})
            else:
                groups.setdefault(amount, []).append(claim_id)
    trigger = DECISION_TRIGGERS[decision.decision].value
    step = decision.model_copy(update={"at": now, "decided_by": actor})
    resume = decision.decision != "extend"

    def queue_resumes(conn, chunk) -> None:
        if resume:
            _queue_resume(conn, [i for moved in chunk.moved.values() for i in moved], step, now)

    decided: list[int] = []
    for amount, group in groups.items():
        if not group:
            continue
        group_data = data if amount is None else data | {"approved_amount": amount}
        result = apply_batch(engine, claim_ids=group, trigger=trigger, actor=actor, now=now, note=decision.note or None, data=group_data,
                             after_chunk=queue_resumes)
        decided += [i for moved in result.moved.values() for i in moved]
        refused += [{"claim_id": i, "msg": reasons[0][1], "type": reasons[0][0]} for i, reasons in result.refused.items()]
        refused += [{"claim_id": i, "msg": "Такое решение для заявки в этом состоянии невозможно.", "type": "wrong_state"} for i in result.invalid]
        refused += [{"claim_id": i, "msg": "Заявка изменилась, пока вы принимали решение.", "type": "conflict"} for i in result.conflicts]
    # Resumes are queued with each chunk's step: the run starter carries them out.
    return {"decided": decided, "resumed": len(decided) if resume else 0, "refused": refused}


def _queue_resume(conn, claim_ids: list[int], step: ClaimInput, now: datetime) -> None:
    """Queue the runs' resume with the step, in the step's own transaction (tasks/run_actions.py)."""
    queue_resume(conn, claim_ids=claim_ids, step=step.model_dump(mode="json"), now=now)
