"""Proven buyers: a one-time code sent to the order's own email buys a short-lived `vzb_` token for that
order; signed, expiring links open one claim's status page («Где мои деньги»).

DESIGN, Security: every endpoint knows its caller; a buyer proves the order by reading the mailbox the
order was bought with. Codes are stored as HMACs (a stolen table does not reveal them, and six digits
cannot be brute-forced offline without the link secret), expire after CODE_TTL, are spent after
CODE_ATTEMPTS wrong tries, and an order takes at most ORDER_FAILURES wrong tries and CODE_REQUESTS new
codes per RATE_WINDOW. A request for a code answers the same whether the order exists, the email is
the order's or not, or the order is rate-limited: nothing here tells a stranger which orders exist.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import math
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import Engine
from sqlmodel import Session

from models.crypto import seal_fields
from models.settings import get_settings
from models.tables import BuyerCode, BuyerToken, CodeRequest, Order
from tasks.auth import BUYER_PREFIX, Principal, digest, new_secret
from tasks.buyer_links import link_secret
from tasks.outbox import DispatchReport, dispatch_emails, enqueue_email, withdraw_pending
from tasks.smtp import SmtpSettings

CODE_TTL = timedelta(minutes=15)
CODE_ATTEMPTS = 5  # wrong tries one code takes before it is spent
ORDER_FAILURES = 10  # wrong tries an order takes per window, over all its codes
CODE_REQUESTS = 5  # codes an order is sent per window
RATE_WINDOW = timedelta(hours=1)
TOKEN_TTL = timedelta(hours=2)

code_t = BuyerCode.__table__
token_t = BuyerToken.__table__
order_t = Order.__table__
client_t = CodeRequest.__table__


# --- one-time codes --------------------------------------------------------------------------------

def _code_hmac(order_number: str, code: str) -> str:
    return hmac.new(link_secret(), f"{order_number}\x00{code}".encode(), hashlib.sha256).hexdigest()


def _same_email(typed: str, stored: str) -> bool:
    return secrets.compare_digest(typed.strip().casefold().encode(), stored.strip().casefold().encode())


class TooManyCodeRequests(Exception):
    """One client address asked for more than `buyer_code_requests_per_ip` codes in RATE_WINDOW:
    answer 429 with Retry-After `retry_after` seconds."""

    def __init__(self, retry_after: int):
        super().__init__(f"too many code requests; retry after {retry_after} s")
        self.retry_after = retry_after


MESSAGE_TOO_MANY_RU = "Слишком много запросов кода с вашего адреса. Попробуйте снова через {minutes} мин."


def _client_key(address: str) -> str:
    """What the limit stores for a client address: a keyed hash, never the address itself."""
    return hmac.new(link_secret(), f"client\x00{address}".encode(), hashlib.sha256).hexdigest()


# PostgreSQL advisory locks of the per-address limit: (this namespace, 32 bits of the address's key).
CLIENT_LOCK_NAMESPACE = 0x766F7A01


def _lock_client(conn, key: str) -> None:
    """One request per address at a time, until its transaction ends: the count in `_check_client`
    then sees every request committed before it, so concurrent API workers cannot together pass the
    limit (count-then-insert alone lets each of them count the same rows under READ COMMITTED).
    PostgreSQL: a transaction-scoped advisory lock on the address's key (an address hash sharing 32
    bits with another only makes the two wait for each other). SQLite: nothing to do, every
    transaction is BEGIN IMMEDIATE (models/db.py), so writers already go one at a time."""
    if conn.dialect.name == "postgresql":
        conn.execute(select(func.pg_advisory_xact_lock(CLIENT_LOCK_NAMESPACE, int.from_bytes(bytes.fromhex(key[:8]), "big", signed=True))))


ORDER_LOCK_NAMESPACE = 0x766F7A02


def _lock_order(conn, order_number: str) -> None:
    """One code request per order number at a time (the per-order count below, CODE_REQUESTS, is then
    exact across API workers, as the per-address one is); taken whether the order exists or not."""
    if conn.dialect.name == "postgresql":
        digest = hashlib.sha256(order_number.encode()).digest()[:4]
        conn.execute(select(func.pg_advisory_xact_lock(ORDER_LOCK_NAMESPACE, int.from_bytes(digest, "big", signed=True))))


def _check_client(conn, address: str, now: datetime) -> None:
    """Count this address's code requests in the window (a table: the limit holds across API workers);
    refuse past the limit, else record this one. Its own rows older than the window are dropped.
    Atomic: the address is locked first (`_lock_client`) and the lock is held until the caller's
    transaction commits, with this request's row in it."""
    limit = get_settings().buyer_code_requests_per_ip
    key, since = _client_key(address), now - RATE_WINDOW
    _lock_client(conn, key)
    conn.execute(delete(client_t).where(client_t.c.client == key, client_t.c.at <= since))
    recent = conn.execute(select(func.count(), func.min(client_t.c.at)).where(client_t.c.client == key, client_t.c.at > since)).one()
    if limit > 0 and recent[0] >= limit:
        oldest = recent[1] if recent[1].tzinfo else recent[1].replace(tzinfo=now.tzinfo)
        raise TooManyCodeRequests(max(1, math.ceil((oldest + RATE_WINDOW - now).total_seconds())))
    conn.execute(insert(client_t).values(client=key, at=now))


def _code_key(code_id: int) -> str:
    """The outbox dedup key of a code's letter."""
    return f"buyer-code:{code_id}"


def request_code(engine: Engine, *, order_number: str, email: str, now: datetime, client: str | None = None) -> str | None:
    """Queue a one-time code to the order's email when `email` is that email and the order is under its
    rate limit; the caller answers the same either way. Returns the queued message's outbox key (for
    `send_code`, never for the answer), None when nothing was queued. Older live codes of the order
    are spent: only the newest one works.

    `client` (the caller's address): at most `buyer_code_requests_per_ip` requests per RATE_WINDOW,
    else TooManyCodeRequests (nothing else is looked at). Every request does the same work whether it
    finds the order or not (code, HMAC, sealing, a write and a commit), so its time tells little; the
    API adds a floor on top (api/buyer.py)."""
    order_number = order_number.strip()
    secret_code = f"{secrets.randbelow(10**6):06d}"
    code_hmac = _code_hmac(order_number, secret_code)
    sealed = seal_fields({"order_number": order_number, "code": secret_code, "valid_minutes": int(CODE_TTL.total_seconds() // 60)}, "code")
    with engine.begin() as conn:
        if client is not None:
            _check_client(conn, client, now)
        _lock_order(conn, order_number)
        order = conn.execute(select(order_t.c.number, order_t.c.buyer_email, order_t.c.buyer_name)
                             .where(order_t.c.number == order_number)).one_or_none()
        matches = _same_email(email, order.buyer_email if order is not None else email + "\x00")
        recent = conn.execute(select(func.count()).select_from(code_t).where(
            code_t.c.order_number == order_number, code_t.c.created_at > now - RATE_WINDOW)).scalar_one()
        if order is None or not matches or recent >= CODE_REQUESTS:
            return None
        spent = conn.execute(update(code_t).where(code_t.c.order_number == order_number, code_t.c.used_at.is_(None))
                             .values(used_at=now).returning(code_t.c.id)).scalars().all()
        code_id = conn.execute(insert(code_t).values(order_number=order_number, code_hmac=code_hmac,
                                                     created_at=now, expires_at=now + CODE_TTL, attempts=0)).inserted_primary_key[0]
        key = _code_key(code_id)
        # Letters of the spent codes still waiting (the kill switch held them) never leave: only the newest code works.
        withdraw_pending(conn, [_code_key(i) for i in spent], now=now, reason=f"superseded by a newer sign-in code ({key})")
        with Session(bind=conn) as session:
            # The code travels in the outbox row encrypted with the bank-details key (never in the clear
            # in the database, before or after it is sent); the dispatcher decrypts it only to render.
            # Past its expiry the letter is not sent at all (send_before), however long it was held.
            enqueue_email(session, dedup_key=key, claim_id=None, template="buyer_code", recipient=order.buyer_email,
                          payload={**sealed, "buyer_name": order.buyer_name}, now=now, send_before=now + CODE_TTL)
            session.flush()
    return key


def send_code(engine: Engine, dedup_key: str, *, now: datetime) -> DispatchReport:
    """Send the code's email now, whatever else waits in the outbox (the kill switch still holds it)."""
    settings = get_settings()
    return asyncio.run(dispatch_emails(engine=engine, smtp=SmtpSettings.from_settings(settings), now=now, mail_from=settings.mail_from,
                                       enabled=settings.outbound_email_enabled, dedup_key=dedup_key, limit=1))


@dataclass(frozen=True)
class BuyerSession:
    token: str
    order_number: str
    expires_at: datetime


def verify_code(engine: Engine, *, order_number: str, code: str, now: datetime) -> BuyerSession | None:
    """A new buyer token for the order when `code` is its newest live code; None otherwise (wrong,
    expired, spent, unknown order, or the order out of tries for this window: all look the same)."""
    order_number = order_number.strip()
    code = code.strip()
    with engine.begin() as conn:
        failures = conn.execute(select(func.coalesce(func.sum(code_t.c.attempts), 0)).where(
            code_t.c.order_number == order_number, code_t.c.created_at > now - RATE_WINDOW)).scalar_one()
        pick = (select(code_t.c.id, code_t.c.code_hmac, code_t.c.attempts)
                .where(code_t.c.order_number == order_number, code_t.c.used_at.is_(None), code_t.c.expires_at > now)
                .order_by(code_t.c.id.desc()).limit(1))
        if conn.dialect.name == "postgresql":
            pick = pick.with_for_update()
        row = conn.execute(pick).one_or_none()
        if row is None or failures >= ORDER_FAILURES:
            return None
        if not hmac.compare_digest(row.code_hmac, _code_hmac(order_number, code)):
            spent = row.attempts + 1 >= CODE_ATTEMPTS
            conn.execute(update(code_t).where(code_t.c.id == row.id).values(
                attempts=code_t.c.attempts + 1, used_at=now if spent else None))
            return None
        used = conn.execute(update(code_t).where(code_t.c.id == row.id, code_t.c.used_at.is_(None)).values(used_at=now)).rowcount
        if used != 1:
            return None  # a concurrent verification took it
        secret = new_secret(BUYER_PREFIX)
        conn.execute(insert(token_t).values(order_number=order_number, token_sha256=digest(secret), created_at=now, expires_at=now + TOKEN_TTL))
    return BuyerSession(secret, order_number, now + TOKEN_TTL)


def buyer(order_number: str) -> Principal:
    """A buyer's principal: proven for one order."""
    return Principal(kind="buyer", audit=f"buyer:order:{order_number}", order_number=order_number)


def resolve_buyer_token(engine: Engine, secret: str, *, now: datetime) -> Principal | None:
    """The buyer a live `vzb_` token stands for, or None."""
    with engine.connect() as conn:
        number = conn.execute(select(token_t.c.order_number).where(
            token_t.c.token_sha256 == digest(secret), token_t.c.revoked_at.is_(None), token_t.c.expires_at > now)).scalar_one_or_none()
    return None if number is None else buyer(number)


def revoke_buyer_token(engine: Engine, secret: str, *, now: datetime) -> bool:
    """Sign out: the token stops working at `now`."""
    with engine.begin() as conn:
        return conn.execute(update(token_t).where(token_t.c.token_sha256 == digest(secret), token_t.c.revoked_at.is_(None))
                            .values(revoked_at=now)).rowcount == 1
