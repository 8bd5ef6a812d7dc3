"""A bulk decision by claim numbers: the API, the organizer page and the `bulk-decision` deployment share it.

One decision (approve, optionally with the agreed sum for «Прочее» claims; reject with a reason code
and a message; extend to 20 working days with a reason) for up to 10,000 claims, applied with ONE
batch transition per chunk (tasks/intake.decide_many -> models/claim_store.apply_batch -> the Judge
of states/lifecycle.py), every decision recorded at once with its audit row naming the caller's
principal, and each decided claim's run resume queued for the run starter in the same transaction.
The rest come back per claim: not found (also another organizer's), already decided, wrong state.

A client-supplied Idempotency-Key makes it safe to send twice: the key, the caller and the request's
digest are stored with the answer; the same key again returns the stored answer, with another body 422.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from prefect import task
from prefect.artifacts import create_markdown_artifact
from sqlalchemy import delete, insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from models.claim_store import claim_t, id_in
from models.db import get_engine
from models.organizer_views import claims_by_number
from models.tables import BulkDecision, UserAccount
from states.lifecycle import ClaimState
from states.money import format_rub
from tasks.auth import Principal
from tasks.intake import STATE_LABELS_RU, ClaimInput, IntakeError, decide_many

MAX_CLAIMS = 10_000
bulk_t = BulkDecision.__table__
user_t = UserAccount.__table__

#: Why an organizer refuses: the code is stored on the claim, the message goes to the buyer.
REJECT_REASONS: dict[str, str] = {
    "ORGANIZER_REFUSED": "Нет оснований для возврата",
    "DOCUMENTS_INSUFFICIENT": "Документы не подтверждают причину",
    "NAME_MISMATCH": "Имя в документах не совпадает с именем в заказе",
    "EVENT_OUTSIDE_SICK_PERIOD": "Мероприятие вне периода болезни",
    "BOUGHT_AFTER_ILLNESS": "Билет куплен после начала болезни",
}
DECIDED_STATES = {s.value for s in (ClaimState.APPROVED, ClaimState.REJECTED, ClaimState.PAYOUT_PENDING, ClaimState.PAYOUT_FAILED,
                                    ClaimState.NEEDS_BANK_DETAILS, ClaimState.PAID, ClaimState.VOUCHER_ISSUED, ClaimState.CLOSED,
                                    ClaimState.WITHDRAWN)}
Decision = Literal["approve", "reject", "extend"]


@dataclass(frozen=True)
class BulkRequest:
    numbers: tuple[str, ...]
    decision: Decision
    note: str = ""
    reason_code: str | None = None  # reject only; ORGANIZER_REFUSED when omitted
    amounts: Mapping[str, int] = field(default_factory=dict)  # approve only: number -> kopecks, «Прочее» claims

    def digest(self) -> str:
        canonical = {"numbers": list(self.numbers), "decision": self.decision, "note": self.note, "reason_code": self.reason_code,
                     "amounts": dict(sorted(self.amounts.items()))}
        return hashlib.sha256(json.dumps(canonical, ensure_ascii=False, sort_keys=True).encode()).hexdigest()


class NotAllowed(PermissionError):
    """The principal may not decide claims (a support or accounting staff member, a buyer, a service)."""


def decision_scope(principal: Principal) -> int | None:
    """The organizer whose claims the principal may decide; None: any organizer's (a supervisor)."""
    if principal.kind == "organizer" and principal.organizer_id is not None:
        return principal.organizer_id
    if principal.is_staff("supervisor"):
        return None
    raise NotAllowed(f"{principal.audit} may not decide claims")


def _state_result(number: str, state: str) -> dict[str, Any]:
    label = STATE_LABELS_RU.get(state, state)
    if state in DECIDED_STATES:
        return {"number": number, "outcome": "refused", "state": state, "type": "already_decided",
                "msg": f"Решение по заявке уже принято: «{label}»."}
    return {"number": number, "outcome": "refused", "state": state, "type": "wrong_state",
            "msg": f"Состояние заявки — «{label}», такое решение сейчас невозможно."}


def decide_by_numbers(engine: Engine, request: BulkRequest, *, principal: Principal, now: datetime) -> dict[str, Any]:
    """Apply one decision to the numbered claims the principal may decide; a result for every number."""
    if not request.numbers:
        raise IntakeError("numbers", "Укажите хотя бы одну заявку.")
    if len(request.numbers) > MAX_CLAIMS:
        raise IntakeError("numbers", f"Не больше {MAX_CLAIMS} заявок за один раз.")
    if request.reason_code is not None and request.decision != "reject":
        raise IntakeError("reason_code", "Код причины указывается только при отказе.")
    if request.reason_code is not None and request.reason_code not in REJECT_REASONS:
        raise IntakeError("reason_code", "Неизвестный код причины отказа.")
    scope = decision_scope(principal)
    numbers = list(dict.fromkeys(request.numbers))
    with engine.connect() as conn:
        found = claims_by_number(conn, numbers, organizer_id=scope)
    amounts = {found[n][0]: kopecks for n, kopecks in request.amounts.items() if n in found}
    outcome = decide_many(engine, claim_ids=[found[n][0] for n in numbers if n in found],
                          decision=ClaimInput(decision=request.decision, note=request.note.strip()), now=now, organizer_id=scope,
                          actor=principal.audit, amounts=amounts, refusal_code=request.reason_code or "ORGANIZER_REFUSED")
    number_of = {claim_id: n for n, (claim_id, _, _) in found.items()}
    decided = set(outcome["decided"])
    refused = {r["claim_id"]: r for r in outcome["refused"]}
    with engine.connect() as conn:
        states = dict(conn.execute(select(claim_t.c.id, claim_t.c.state).where(id_in(conn, claim_t.c.id, list(number_of)))).all()) \
            if number_of else {}
    results: list[dict[str, Any]] = []
    amount = 0
    for number in numbers:
        if number not in found:
            results.append({"number": number, "outcome": "refused", "state": None, "type": "not_found", "msg": "Заявка не найдена."})
            continue
        claim_id, _, claim_amount = found[number]
        if claim_id in decided:
            moved = amounts.get(claim_id, claim_amount)
            amount += moved if request.decision == "approve" else 0
            results.append({"number": number, "outcome": "decided", "state": states.get(claim_id)})
        elif claim_id in refused and refused[claim_id]["type"] == "wrong_state":
            results.append(_state_result(number, states.get(claim_id, "")))
        else:
            r = refused.get(claim_id, {"type": "conflict", "msg": "Заявка изменилась, пока вы принимали решение."})
            results.append({"number": number, "outcome": "refused", "state": states.get(claim_id), "type": r["type"], "msg": r["msg"]})
    return {
        "decision": request.decision,
        "decided_by": principal.audit,
        "requested": len(numbers),
        "decided": len(decided),
        "refused": len(numbers) - len(decided),
        "approved_kopecks": amount,
        "approved_rub": format_rub(amount),
        "resumes_queued": outcome["resumed"],
        "results": results,
    }


# --- idempotency -----------------------------------------------------------------------------------

class IdempotencyMismatch(ValueError):
    """The same Idempotency-Key came with a different request."""


class IdempotencyInProgress(RuntimeError):
    """The first request with this key is still being applied."""


def once(engine: Engine, *, key: str, principal: Principal, request_sha256: str, now: datetime,
         compute: Callable[[], dict[str, Any]]) -> tuple[dict[str, Any], bool]:
    """(answer, replayed): the stored answer for (principal, key), or `compute()` stored under it.

    The record is claimed before computing (a unique row), so two concurrent sends with one key
    apply the decision once; the second sees it in progress. A failed compute releases the key.
    """
    try:
        with engine.begin() as conn:
            record_id = conn.execute(insert(bulk_t).values(idempotency_key=key, principal=principal.audit, request_sha256=request_sha256,
                                                           response=None, created_at=now).returning(bulk_t.c.id)).scalar_one()
    except IntegrityError:
        with engine.connect() as conn:
            row = conn.execute(select(bulk_t.c.request_sha256, bulk_t.c.response).where(
                bulk_t.c.principal == principal.audit, bulk_t.c.idempotency_key == key)).one()
        if row.request_sha256 != request_sha256:
            raise IdempotencyMismatch(key) from None
        if row.response is None:
            raise IdempotencyInProgress(key) from None
        return row.response, True
    try:
        answer = compute()
    except BaseException:
        with engine.begin() as conn:
            conn.execute(delete(bulk_t).where(bulk_t.c.id == record_id))
        raise
    with engine.begin() as conn:
        conn.execute(update(bulk_t).where(bulk_t.c.id == record_id).values(response=answer, completed_at=datetime.now(UTC)))
    return answer, False


# --- the `bulk-decision` deployment (staff in the Prefect UI) ----------------------------------------

class NotASupervisor(PermissionError):
    """The login given to the bulk-decision deployment is not an active supervisor."""


def supervisor_principal(engine: Engine, login: str) -> Principal:
    """The active supervisor with this login, as a principal (`staff:supervisor:<login>`)."""
    with engine.connect() as conn:
        row = conn.execute(select(user_t.c.id, user_t.c.login).where(
            user_t.c.login == login.strip().lower(), user_t.c.kind == "staff", user_t.c.role == "supervisor",
            user_t.c.disabled_at.is_(None))).one_or_none()
    if row is None:
        raise NotASupervisor(f"{login!r} is not an active supervisor: only a supervisor decides claims from the Prefect UI")
    return Principal(kind="staff", audit=f"staff:supervisor:{row.login}", role="supervisor", user_id=row.id)


@task(name="check-supervisor")
def check_supervisor(staff_login: str) -> Principal:
    return supervisor_principal(get_engine(), staff_login)


@task(name="apply-bulk-decision")
def apply_bulk_decision(request: BulkRequest, principal: Principal, now: datetime) -> dict[str, Any]:
    """Idempotent per flow run: a retried task finds its own answer under the run's key."""
    from prefect.runtime import flow_run

    key = f"prefect:{flow_run.get_id() or 'local'}"
    answer, _ = once(get_engine(), key=key, principal=principal, request_sha256=request.digest(), now=now,
                     compute=lambda: decide_by_numbers(get_engine(), request, principal=principal, now=now))
    return answer


@task(name="publish-bulk-result")
def publish_bulk_result(answer: dict[str, Any]) -> str:
    """A markdown artifact «Массовое решение»: what was decided, by whom, and each claim left undecided."""
    lines = [
        "# Массовое решение",
        "",
        f"Решение: **{answer['decision']}**, принял(а) `{answer['decided_by']}`.",
        f"Заявок: {answer['requested']}, принято решений: {answer['decided']}, не принято: {answer['refused']}; "
        f"одобрено на {answer['approved_rub']} ₽; возобновление процессов поставлено в очередь: {answer['resumes_queued']}.",
    ]
    left = [r for r in answer["results"] if r["outcome"] != "decided"]
    if left:
        lines += ["", "| заявка | почему не принято |", "|---|---|"]
        lines += [f"| {r['number']} | {r['msg']} |" for r in left[:500]]
        if len(left) > 500:
            lines.append(f"| … | ещё {len(left) - 500} |")
    return str(create_markdown_artifact(key="bulk-decision", markdown="\n".join(lines), description="Массовое решение по заявкам"))
