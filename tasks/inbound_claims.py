"""Claims sent by email wait for the buyer's confirmation from the order's own mailbox, then are filed.

A From header can be forged, so a letter only makes a *pending* claim (`inbound_claim`), and the
confirmation goes to the order's email (never to the letter's From): a six-digit code and a signed,
expiring link (itsdangerous, keyed by the service's secret keys). Confirming files one claim per
ticket through the claim store (actor `buyer:order:<number>`, audit note «по письму»), makes the
letter's files the claims' documents, queues «Заявка принята» and the claims' flow runs, all in one
transaction; a pending claim is confirmed once (the second time answers with the claims it made).
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from itsdangerous import BadSignature, SignatureExpired, TimestampSigner, URLSafeTimedSerializer
from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from models.claim_store import ClaimNotFound, TicketNotClaimable, audit_t, file_claims, unclaimable_tickets
from models.crypto import secret_keys
from models.settings import get_settings
from models.tables import Claim, Document, Event, InboundClaim, Order, Ticket
from states.letter import death_certificate_mentioned
from states.lifecycle import OPEN_STATES
from states.policy import PolicyError, Reason, ReasonNotAllowed
from tasks.auth import Principal
from tasks.documents import StoredFile
from tasks.intake import queue_acknowledgement
from tasks.outbox import enqueue_email
from tasks.run_actions import queue_create

pending_t = InboundClaim.__table__
order_t = Order.__table__
ticket_t = Ticket.__table__
event_t = Event.__table__
claim_t = Claim.__table__
document_t = Document.__table__

SALT = "vozvrat.inbound.confirm"
MAX_CODE_ATTEMPTS = 5
FILED_NOTE = "по письму"
OPEN_STATE_VALUES = sorted(s.value for s in OPEN_STATES)


def reference(letter_id: int) -> str:
    """The letter's number the buyer quotes with the code (the reply's subject carries it)."""
    return f"{letter_id:06d}"


def _code_digest(letter_id: int, code: str) -> str:
    return hashlib.sha256(f"{letter_id}:{code}".encode()).hexdigest()


def _serializer(now: datetime) -> URLSafeTimedSerializer:
    """Signed with the service's keys (models.crypto: the first signs, every one verifies: rotation
    keeps links valid); the signature's clock is `now`, never read here."""

    class _At(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(now.timestamp())

    # itsdangerous signs with the last key of the list and verifies with any.
    return URLSafeTimedSerializer(list(reversed(secret_keys())), salt=SALT, signer=_At)


def confirm_token(pending_id: int, *, now: datetime) -> str:
    return _serializer(now).dumps({"p": pending_id})


def public_base() -> str:
    settings = get_settings()
    return (settings.public_url or f"http://{settings.api_host}:{settings.api_port}").rstrip("/")


def confirm_url(token: str) -> str:
    return f"{public_base()}/inbound/confirm/{token}"


class ConfirmationError(ValueError):
    """A confirmation that cannot be done: `code` for machines, `message_ru` for the buyer, `status` for HTTP."""

    def __init__(self, code: str, message_ru: str, status: int, claims: list[str] | None = None):
        super().__init__(message_ru)
        self.code, self.message_ru, self.status, self.claims = code, message_ru, status, claims or []


EXPIRED = "Срок ссылки истёк: заявка из письма не подтверждена и не подана. Отправьте письмо ещё раз с почты, указанной в заказе, — мы пришлём новую ссылку."
INVALID = "Ссылка повреждена или недействительна. Откройте ссылку из письма целиком или введите код из письма."


def read_token(token: str, *, now: datetime) -> int:
    """The pending claim a link names; ConfirmationError when the link is altered or expired."""
    hours = get_settings().inbound_confirm_hours
    try:
        data = _serializer(now).loads(token, max_age=hours * 3600)
    except SignatureExpired:
        raise ConfirmationError("expired", EXPIRED, 410) from None
    except BadSignature:
        raise ConfirmationError("invalid", INVALID, 404) from None
    if not isinstance(data, dict) or not isinstance(data.get("p"), int):
        raise ConfirmationError("invalid", INVALID, 404)
    return data["p"]


def open_claims_by_ticket(conn: Connection, ticket_ids: list[int]) -> dict[int, str]:
    """The claims in work on these tickets: {ticket id: claim number}. A letter whose every ticket has
    one gets no confirmation (confirming would file nothing): it is answered with those claims instead."""
    if not ticket_ids:
        return {}
    return {ticket_id: number for ticket_id, number in conn.execute(
        select(claim_t.c.ticket_id, claim_t.c.number).where(claim_t.c.ticket_id.in_(ticket_ids), claim_t.c.state.in_(OPEN_STATE_VALUES))
        .order_by(claim_t.c.id))}


def open_claims_reply(claim_numbers: list[str], *, now: datetime) -> list[dict[str, str | None]]:
    """The reply's list of claims already in work, each with a fresh signed link to its status page
    (none when no link secret is configured: the letter still goes)."""
    from models.crypto import SecretKeyError
    from tasks.buyer_links import status_url

    out: list[dict[str, str | None]] = []
    for number in dict.fromkeys(claim_numbers):
        try:
            url: str | None = status_url(number, now=now)
        except SecretKeyError:
            url = None
        out.append({"number": number, "status_url": url})
    return out


def create_pending_claim(conn: Connection, *, letter_id: int, order_id: int, ticket_ids: list[int], reason: Reason, why: str,
                         description: str, files: list[tuple[str, StoredFile]], now: datetime) -> int:
    """Record a claim sent by email and queue its confirmation to the order's email, in the caller's transaction."""
    code = f"{secrets.randbelow(10**6):06d}"
    expires = now + timedelta(hours=get_settings().inbound_confirm_hours)
    pending_id = conn.execute(insert(pending_t).values(
        letter_id=letter_id, order_id=order_id, ticket_ids=ticket_ids, reason=Reason(reason).value, description=description,
        files=[{"filename": name, "sha256": f.sha256, "size": f.size, "content_type": f.content_type} for name, f in files],
        code_sha256=_code_digest(letter_id, code), code_attempts=0, status="pending", created_at=now, expires_at=expires, claim_ids=[],
    )).inserted_primary_key[0]
    order = conn.execute(select(order_t.c.number, order_t.c.buyer_email, order_t.c.buyer_name).where(order_t.c.id == order_id)).one()
    titles = list(dict.fromkeys(conn.execute(select(event_t.c.title).join(ticket_t, ticket_t.c.event_id == event_t.c.id)
                                             .where(ticket_t.c.id.in_(ticket_ids)).order_by(ticket_t.c.id)).scalars()))
    with Session(bind=conn) as session:
        enqueue_email(session, dedup_key=f"inbound:{letter_id}:confirm", claim_id=None, template="inbound_confirm", recipient=order.buyer_email,
                      payload={"letter_ref": reference(letter_id), "order_number": order.number, "buyer_name": order.buyer_name,
                               "event_title": "», «".join(titles), "tickets": len(ticket_ids), "reason": Reason(reason).value, "why": why,
                               "files": [{"filename": name, "size": f.size} for name, f in files], "code": code,
                               "confirm_url": confirm_url(confirm_token(pending_id, now=now)), "code_url": f"{public_base()}/inbound/confirm",
                               "expires_at": expires},
                      now=now, send_before=expires)  # a confirmation held past its deadline would ask for the impossible
        session.flush()
    return pending_id


@dataclass(frozen=True)
class PendingView:
    id: int
    reference: str
    order_number: str
    event_titles: list[str]
    tickets: int
    reason: str
    files: list[dict[str, Any]]
    status: str
    expires_at: datetime
    claim_numbers: list[str]
    refusal_message: str | None


def pending_view(engine: Engine, pending_id: int) -> PendingView:
    with engine.connect() as conn:
        row = conn.execute(select(pending_t, order_t.c.number.label("order_number")).join(order_t, order_t.c.id == pending_t.c.order_id)
                           .where(pending_t.c.id == pending_id)).one_or_none()
        if row is None:
            raise ConfirmationError("invalid", INVALID, 404)
        titles = list(dict.fromkeys(conn.execute(select(event_t.c.title).join(ticket_t, ticket_t.c.event_id == event_t.c.id)
                                                 .where(ticket_t.c.id.in_(row.ticket_ids))).scalars()))
        numbers = list(conn.execute(select(claim_t.c.number).where(claim_t.c.id.in_(row.claim_ids or [-1])).order_by(claim_t.c.id)).scalars())
    return PendingView(row.id, reference(row.letter_id), row.order_number, titles, len(row.ticket_ids), row.reason, list(row.files),
                       row.status, row.expires_at, numbers, row.refusal_message)


@dataclass(frozen=True)
class Confirmed:
    pending_id: int
    claims: list[dict[str, Any]]  # {"id", "number", "state"}
    refused_tickets: list[str]  # why some of the order's tickets took no claim


def status_problem(view: PendingView) -> ConfirmationError:
    """Why a pending claim that is no longer pending cannot be confirmed (again)."""
    if view.status == "confirmed":
        return ConfirmationError("already_confirmed", "Эта заявка уже подтверждена, повторно она не подаётся. Номера заявок: "
                                 + ", ".join(view.claim_numbers) + ".", 409, view.claim_numbers)
    if view.status == "refused":
        return ConfirmationError("refused", view.refusal_message or "Заявку из письма подать не удалось.", 409)
    return ConfirmationError("expired", EXPIRED, 410)


def _already(engine: Engine, pending_id: int) -> ConfirmationError:
    return status_problem(pending_view(engine, pending_id))


class _Raced(Exception):
    pass


def confirm(engine: Engine, *, pending_id: int, now: datetime) -> Confirmed:
    """File the claims of a pending email claim (once). ConfirmationError: expired, already confirmed,
    or refused by the rules (a scanned ticket, a reason the event's status does not allow …)."""
    with engine.connect() as conn:
        row = conn.execute(select(pending_t, order_t.c.number.label("order_number")).join(order_t, order_t.c.id == pending_t.c.order_id)
                           .where(pending_t.c.id == pending_id)).one_or_none()
    if row is None:
        raise ConfirmationError("invalid", INVALID, 404)
    if row.status != "pending":
        raise _already(engine, pending_id)
    if now >= row.expires_at:
        with engine.begin() as conn:
            conn.execute(update(pending_t).where(pending_t.c.id == pending_id, pending_t.c.status == "pending").values(status="expired"))
        raise _already(engine, pending_id)
    actor = Principal(kind="buyer", audit=f"buyer:order:{row.order_number}", order_number=row.order_number).audit
    reason = Reason(row.reason)
    refusal: str | None = None
    try:
        with engine.begin() as conn:
            if conn.execute(update(pending_t).where(pending_t.c.id == pending_id, pending_t.c.status == "pending")
                            .values(status="confirmed", confirmed_at=now)).rowcount != 1:
                raise _Raced  # confirmed by someone else a moment ago
            refused = unclaimable_tickets(conn, ticket_ids=row.ticket_ids, reason=reason)
            # A ticket of the order that already has a claim in work is left out (the database would refuse it).
            refused |= {t: ("CLAIM_OPEN", "По этому билету уже есть заявка на возврат в работе.") for t in conn.execute(
                select(claim_t.c.ticket_id).where(claim_t.c.ticket_id.in_(row.ticket_ids), claim_t.c.state.in_(OPEN_STATE_VALUES))).scalars()}
            ticket_ids = [t for t in row.ticket_ids if t not in refused]
            if not ticket_ids:
                raise TicketNotClaimable(refused)
            claim_ids = file_claims(conn, ticket_ids=ticket_ids, reason=reason, actor=actor, now=now, description=row.description)
            conn.execute(update(audit_t).where(audit_t.c.claim_id.in_(claim_ids), audit_t.c.trigger == "file").values(note=FILED_NOTE))
            documents = [{"claim_id": cid, "kind": _document_kind(reason, row.description), "received_at": now, "filename": f["filename"],
                          "sha256": f["sha256"], "size": f["size"], "content_type": f["content_type"], "judged_false": False}
                         for cid in claim_ids for f in row.files]
            if documents:
                conn.execute(insert(document_t), documents)
            for cid in claim_ids:
                queue_acknowledgement(conn, cid, now)
                queue_create(conn, claim_id=cid, now=now)
            conn.execute(update(pending_t).where(pending_t.c.id == pending_id).values(claim_ids=claim_ids))
            claims = [dict(r._mapping) for r in conn.execute(select(claim_t.c.id, claim_t.c.number, claim_t.c.state)
                                                             .where(claim_t.c.id.in_(claim_ids)).order_by(claim_t.c.id))]
    except _Raced:
        raise _already(engine, pending_id) from None
    except TicketNotClaimable as exc:
        refusal = next(iter(exc.refusals.values()))[1]
    except ReasonNotAllowed as exc:
        refusal = exc.message_ru
    except PolicyError:
        refusal = "Возврат по собственной инициативе возможен только до начала мероприятия."
    except IntegrityError:
        refusal = "По этому билету уже есть заявка на возврат в работе."
    except ClaimNotFound:
        refusal = "Билеты заказа не найдены."
    if refusal is not None:
        with engine.begin() as conn:
            conn.execute(update(pending_t).where(pending_t.c.id == pending_id, pending_t.c.status == "pending")
                         .values(status="refused", refusal_message=refusal))
        raise ConfirmationError("refused", f"Заявку подать не удалось: {refusal}", 409)
    return Confirmed(pending_id, claims, [message for _, message in refused.values()])


def confirm_with_code(engine: Engine, *, reference_number: str, code: str, now: datetime) -> Confirmed:
    """Confirm by the letter's number and the code from the confirmation email. Attempts are counted and
    limited; a wrong number, a wrong code and a used-up pending claim answer alike."""
    wrong = ConfirmationError("wrong_code", "Неверный номер письма или код. Проверьте их в письме с подтверждением.", 422)
    if not reference_number.strip().isdigit() or not code.strip().isdigit():
        raise wrong
    letter_id = int(reference_number.strip())
    with engine.begin() as conn:
        row = conn.execute(select(pending_t.c.id, pending_t.c.code_sha256, pending_t.c.code_attempts, pending_t.c.status)
                           .where(pending_t.c.letter_id == letter_id)).one_or_none()
        if row is None:
            raise wrong
        if row.code_attempts >= MAX_CODE_ATTEMPTS:
            raise ConfirmationError("too_many_attempts", "Слишком много неверных попыток. Подтвердите заявку по ссылке из письма "
                                    "или отправьте письмо ещё раз.", 429)
        if not hmac.compare_digest(row.code_sha256, _code_digest(letter_id, code.strip())):
            conn.execute(update(pending_t).where(pending_t.c.id == row.id).values(code_attempts=pending_t.c.code_attempts + 1))
            wrong_after = wrong
        else:
            wrong_after = None
    if wrong_after is not None:
        raise wrong_after
    return confirm(engine, pending_id=row.id, now=now)


def _document_kind(reason: Reason, text: str) -> str:
    """A death claim's letter that speaks of the certificate sends one; any other file is «other» for the organizer to judge."""
    return "death_certificate" if reason == Reason.DEATH and death_certificate_mentioned("", text) else "other"
