"""The durable record: organizers, events, orders, tickets, claims, their audit trail and the outbox.

Money columns are integer kopecks. Datetimes are tz-aware (stored as UTC). Card numbers are never
stored: an order keeps only the acquirer's payment id.
"""
from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, CheckConstraint, Column, ForeignKey, Index, Integer, String, UniqueConstraint, false, text
from sqlmodel import Field, SQLModel

from models.db import UtcDateTime
from states.lifecycle import OPEN_STATES, ClaimState

_OPEN_STATES_SQL = "state IN (" + ", ".join(f"'{s.value}'" for s in sorted(OPEN_STATES)) + ")"

# A claim in one of these states has the ticket's refund: approved, or money on its way or paid, or a
# voucher instead of money. At most one claim per ticket ever gets there (DESIGN: "A ticket is
# refunded at most once, whatever happens").
REFUND_STATES: frozenset[ClaimState] = frozenset({
    ClaimState.APPROVED, ClaimState.PAYOUT_PENDING, ClaimState.PAYOUT_FAILED, ClaimState.NEEDS_BANK_DETAILS,
    ClaimState.PAID, ClaimState.VOUCHER_ISSUED,
})
# `refund_granted` stays true after the claim leaves those states (paid -> closed), so the index keeps
# holding the ticket; the state arm catches a row moved to a money state without the flag.
REFUND_HELD_SQL = "refund_granted OR state IN (" + ", ".join(f"'{s.value}'" for s in sorted(REFUND_STATES)) + ")"


def _ts(nullable: bool = True, index: bool = False) -> Any:
    return Field(default=None, sa_type=UtcDateTime, nullable=nullable, index=index)


class Organizer(SQLModel, table=True):
    __tablename__ = "organizer"
    id: int | None = Field(default=None, primary_key=True)
    # The operator's own id (the sales feed upserts by it, docs/sales-feed.md); NULL for rows made otherwise.
    external_id: str | None = Field(default=None, sa_type=String(100), unique=True, index=True)
    name: str
    email: str
    # sha256 of the organizer's API token: decisions are scoped to the organizer's own events.
    api_token_sha256: str | None = Field(default=None, index=True)
    # The token is refused from this moment on (401); a token without an expiry is refused too.
    api_token_expires_at: datetime | None = _ts()
    # Per-organizer refund policy as data (states.policy.OrganizerPolicy.from_mapping); empty: the legal minimum.
    policy: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class Regime(SQLModel, table=True):
    """A high-alert regime (Decree 442): a region and a period."""

    __tablename__ = "regime"
    id: int | None = Field(default=None, primary_key=True)
    region: str = Field(index=True)
    starts_on: date
    ends_on: date | None = None
    note: str = ""
    # Who declared and who ended it (tasks.auth.Principal.audit, or cli:<user>), and when.
    created_by: str | None = Field(default=None, sa_type=String(200))
    created_at: datetime | None = _ts()
    ended_by: str | None = Field(default=None, sa_type=String(200))


class Venue(SQLModel, table=True):
    __tablename__ = "venue"
    id: int | None = Field(default=None, primary_key=True)
    # The operator's own id (the sales feed upserts by it, docs/sales-feed.md); NULL for rows made otherwise.
    external_id: str | None = Field(default=None, sa_type=String(100), unique=True, index=True)
    name: str
    timezone: str  # IANA, e.g. Europe/Moscow
    region: str = ""


class Event(SQLModel, table=True):
    __tablename__ = "event"
    id: int | None = Field(default=None, primary_key=True)
    # The operator's own id (the sales feed upserts by it, docs/sales-feed.md); NULL for rows made otherwise.
    external_id: str | None = Field(default=None, sa_type=String(100), unique=True, index=True)
    organizer_id: int = Field(foreign_key="organizer.id", index=True)
    venue_id: int = Field(foreign_key="venue.id")
    title: str
    starts_at: datetime = Field(sa_type=UtcDateTime, nullable=False)
    status: str = "scheduled"  # scheduled | cancelled | postponed | replaced
    new_starts_at: datetime | None = _ts()
    claims_until: date | None = None  # a postponed event's last day for refund claims
    regime_id: int | None = Field(default=None, foreign_key="regime.id")
    # The date the event was first announced for: set at its first postponement, kept through later
    # ones (Decree 442's 18 months count from it). `starts_at` is the date the tickets are valid for.
    original_starts_at: datetime | None = _ts()


class EventChange(SQLModel, table=True):
    """An event's history: each postponement (or cancellation) with its dates, who made it and when."""

    __tablename__ = "event_change"
    id: int | None = Field(default=None, primary_key=True)
    event_id: int = Field(foreign_key="event.id", index=True)
    kind: str = Field(sa_type=String(20))  # postponed | cancelled
    original_starts_at: datetime = Field(sa_type=UtcDateTime, nullable=False)
    previous_starts_at: datetime = Field(sa_type=UtcDateTime, nullable=False)
    new_starts_at: datetime | None = _ts()  # None: postponed, new date to be announced
    claims_until: date | None = None
    regime_id: int | None = Field(default=None, foreign_key="regime.id")
    rule: str | None = Field(default=None, sa_type=String(60))  # states.regimes.Rule, when a regime applies
    changed_by: str = Field(sa_type=String(200))  # Principal.audit
    changed_at: datetime = Field(sa_type=UtcDateTime, nullable=False)
    note: str = ""


class Voucher(SQLModel, table=True):
    """Decree 442: a voucher instead of a refund, issued by its claim's `issue_voucher` step."""

    __tablename__ = "voucher"
    __table_args__ = (Index("ix_voucher_status_valid_until", "status", "valid_until"),)
    id: int | None = Field(default=None, primary_key=True)
    number: str = Field(sa_type=String(40), unique=True)  # shown to the holder
    claim_id: int = Field(foreign_key="claim.id", unique=True)
    ticket_id: int = Field(foreign_key="ticket.id", index=True)
    event_id: int = Field(foreign_key="event.id", index=True)
    organizer_id: int = Field(foreign_key="organizer.id", index=True)
    holder_email: str
    holder_name: str
    value: int = Field(sa_type=BigInteger)  # the price paid, kopecks
    issued_on: date
    valid_until: date
    status: str = Field(default="issued", sa_type=String(20))  # issued | redeemed | expired
    redeemed_event_id: int | None = Field(default=None, foreign_key="event.id")
    redeemed_at: datetime | None = _ts()
    redeemed_by: str | None = Field(default=None, sa_type=String(200))
    rule: str = ""  # the Decree 442 rule it was issued under (Russian)


class Order(SQLModel, table=True):
    __tablename__ = "ticket_order"
    id: int | None = Field(default=None, primary_key=True)
    number: str = Field(unique=True)
    buyer_name: str
    buyer_email: str
    buyer_phone: str = ""
    channel: str = "site"  # site | box_office
    payment_method: str = "card"  # card | cash | bso
    acquirer_payment_id: str | None = None  # the acquirer's payment id; never a card number
    payment_amount: int | None = Field(default=None, sa_type=BigInteger)  # what the buyer paid for the order, kopecks
    # paid | refunded (refunded elsewhere, reported by the sales feed: every ticket of it is void)
    status: str = Field(default="paid", sa_column=Column(String(20), nullable=False, server_default="paid"))
    created_at: datetime = Field(sa_type=UtcDateTime, nullable=False)


class Ticket(SQLModel, table=True):
    __tablename__ = "ticket"
    id: int | None = Field(default=None, primary_key=True)
    order_id: int = Field(foreign_key="ticket_order.id", index=True)
    event_id: int = Field(foreign_key="event.id", index=True)
    price_paid: int = Field(sa_type=BigInteger)
    nominal: int | None = Field(default=None, sa_type=BigInteger)
    service_fee: int = Field(default=0, sa_type=BigInteger)
    delivery_fee: int = Field(default=0, sa_type=BigInteger)
    promo: bool = False
    barcode: str = Field(unique=True)
    barcode_status: str = "valid"  # valid | scanned | void


class Claim(SQLModel, table=True):
    __tablename__ = "claim"
    __table_args__ = (
        # At most one open claim per ticket, enforced by the database (partial unique index).
        Index(
            "uq_claim_open_ticket",
            "ticket_id",
            unique=True,
            sqlite_where=text(_OPEN_STATES_SQL),
            postgresql_where=text(_OPEN_STATES_SQL),
        ),
        # A ticket is refunded at most once: one claim per ticket ever holds its refund.
        Index(
            "uq_claim_ticket_refund",
            "ticket_id",
            unique=True,
            sqlite_where=text(REFUND_HELD_SQL),
            postgresql_where=text(REFUND_HELD_SQL),
        ),
        # The SLA watch reads due claims with these, never the whole table.
        Index("ix_claim_state_decision_due", "state", "decision_due"),
        Index("ix_claim_state_payout_due", "state", "payout_due"),
    )
    id: int | None = Field(default=None, primary_key=True)
    number: str = Field(unique=True)  # shown to the buyer
    ticket_id: int = Field(foreign_key="ticket.id", index=True)
    event_id: int = Field(foreign_key="event.id", index=True)
    reason: str
    state: str = Field(default="filed", index=True)
    version: int = Field(default=1, sa_column=Column(Integer, nullable=False, server_default="1"))
    filed_at: datetime = Field(sa_type=UtcDateTime, nullable=False)
    updated_at: datetime = Field(sa_type=UtcDateTime, nullable=False)
    filed_by: str = "buyer"
    description: str = ""
    name_mismatch_explanation: str | None = None
    # The quote the buyer was shown (states.policy.Quote.to_json) and its amount in kopecks.
    quote: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    amount: int = Field(default=0, sa_type=BigInteger)
    approved_amount: int | None = Field(default=None, sa_type=BigInteger)
    # The day the claim became decidable (filed, or its documents complete): the decision deadline counts from it.
    decidable_on: date | None = None
    decision_due: date | None = None
    payout_due: date | None = None
    # Decree 442: the 180-day refund deadline after the regime's end (sla-watch warns 30 and 7 days before).
    regime_refund_due: date | None = Field(default=None, index=True)
    deadline_provisional: bool = False
    extended: bool = False
    extension_reason: str | None = None
    decided_at: datetime | None = _ts()
    decided_by: str | None = None
    decision_note: str | None = None
    refusal_code: str | None = None
    refusal_message: str | None = None
    escalated_at: datetime | None = _ts()
    paid_at: datetime | None = _ts()
    flow_run_id: str | None = None
    bank_details: str | None = None  # encrypted at rest (models.crypto); shown masked
    # Set in the same UPDATE that moves the claim into REFUND_STATES, never cleared: this claim holds
    # its ticket's one refund (uq_claim_ticket_refund).
    refund_granted: bool = Field(default=False, sa_column=Column(Boolean, nullable=False, server_default=false()))


class Document(SQLModel, table=True):
    __tablename__ = "document"
    id: int | None = Field(default=None, primary_key=True)
    claim_id: int = Field(foreign_key="claim.id", index=True)
    kind: str
    received_at: datetime = Field(sa_type=UtcDateTime, nullable=False)
    sick_from: date | None = None
    sick_to: date | None = None
    person_name: str | None = None
    relation: str | None = None
    judged_false: bool = False
    filename: str | None = None
    # The file itself, when one was sent: content-addressed under the data directory (tasks/documents.py).
    sha256: str | None = Field(default=None, sa_type=String(64))
    size: int | None = None
    content_type: str | None = Field(default=None, sa_type=String(100))


class ClaimTransition(SQLModel, table=True):
    """The audit trail: one row per state change (and per internal step such as an extension)."""

    __tablename__ = "claim_transition"
    id: int | None = Field(default=None, primary_key=True)
    claim_id: int = Field(foreign_key="claim.id", index=True)
    trigger: str
    from_state: str
    to_state: str
    actor: str
    at: datetime = Field(sa_type=UtcDateTime, nullable=False)
    note: str | None = None


class OutboxMessage(SQLModel, table=True):
    """Messages and payouts to dispatch, written in the same transaction as the step that caused them."""

    __tablename__ = "outbox"
    __table_args__ = (
        UniqueConstraint("dedup_key", name="uq_outbox_dedup_key"),
        Index("ix_outbox_due", "status", "kind", "next_attempt_at", "id"),  # the lease walks it in this order
        Index("ix_outbox_mass_send_status", "mass_send_id", "status"),
    )
    id: int | None = Field(default=None, primary_key=True)
    kind: str  # email | payout
    dedup_key: str = Field(sa_type=String(200))
    claim_id: int | None = Field(default=None, sa_column=Column(Integer, ForeignKey("claim.id"), index=True, nullable=True))
    template: str | None = None
    recipient: str | None = None
    payload: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    status: str = "pending"  # pending | sent | failed | held | superseded (states.lifecycle.SUPERSEDES)
    attempts: int = 0
    next_attempt_at: datetime = Field(sa_type=UtcDateTime, nullable=False)
    created_at: datetime = Field(sa_type=UtcDateTime, nullable=False)
    sent_at: datetime | None = _ts()
    last_error: str | None = None
    # A dispatcher's claim on the row while it sends it (tasks/outbox.py); expires if it dies.
    lease_owner: str | None = Field(default=None, sa_type=String(64))
    leased_until: datetime | None = _ts()
    # Fixed the first time the row is leased: a resend carries the same Message-ID.
    message_id: str | None = Field(default=None, sa_type=String(200))
    # A row of a send to many recipients (tasks/mass_sends.py): held until a second person approves it.
    mass_send_id: int | None = Field(default=None, sa_column=Column(Integer, ForeignKey("mass_send.id"), nullable=True))




class RunAction(SQLModel, table=True):
    """A claim's flow run to create or resume, written in the same transaction as the step that needs it.

    The API records a step and answers; the run starter (tasks/run_actions.py) takes due actions at
    the pace the Prefect server bears, retries them with backoff and marks them done. `lease_until`
    keeps two starters off one action; a starter that dies leaves its lease to expire.
    """

    __tablename__ = "run_action"
    __table_args__ = (
        UniqueConstraint("dedup_key", name="uq_run_action_dedup_key"),
        Index("ix_run_action_due", "status", "next_attempt_at"),
        Index("ix_run_action_claim_status", "claim_id", "status"),
    )
    id: int | None = Field(default=None, primary_key=True)
    claim_id: int = Field(sa_column=Column(Integer, ForeignKey("claim.id"), nullable=False))
    kind: str = Field(sa_type=String(20))  # create | resume
    # create: one per run generation ("create:<claim>:<generation>"); resume: none (NULLs never collide).
    dedup_key: str | None = Field(default=None, sa_type=String(100))
    payload: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    status: str = Field(default="pending", sa_type=String(20))  # pending | done
    attempts: int = 0
    next_attempt_at: datetime = Field(sa_type=UtcDateTime, nullable=False)
    lease_until: datetime | None = _ts()
    created_at: datetime = Field(sa_type=UtcDateTime, nullable=False)
    done_at: datetime | None = _ts()
    outcome: str | None = None  # what the starter did: created <run id>, resumed, up to date, superseded …
    last_error: str | None = None


# --- who calls (DESIGN, Security): service keys, user accounts, their API tokens -----------------
# Every endpoint resolves its caller to a tasks.auth.Principal; audit rows record Principal.audit.

class ServiceKey(SQLModel, table=True):
    """An operator system's key (the sales system, the operator's site): stored as a digest, revocable."""

    __tablename__ = "service_key"
    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(sa_type=String(100), unique=True)
    key_sha256: str = Field(sa_type=String(64), unique=True)
    created_at: datetime = Field(sa_type=UtcDateTime, nullable=False)
    revoked_at: datetime | None = _ts()
    last_used_at: datetime | None = _ts()


class UserAccount(SQLModel, table=True):
    """A person who signs in: an organizer's user (several per organizer) or operator staff with a role."""

    __tablename__ = "user_account"
    id: int | None = Field(default=None, primary_key=True)
    login: str = Field(sa_type=String(320), unique=True)  # an email, lower-cased
    display_name: str = ""
    password_hash: str | None = None  # argon2 (tasks/accounts.py); None: cannot sign in with a password
    kind: str = Field(sa_type=String(20))  # organizer | staff
    organizer_id: int | None = Field(default=None, foreign_key="organizer.id", index=True)
    role: str | None = Field(default=None, sa_type=String(20))  # staff: support | supervisor | accounting
    created_at: datetime = Field(sa_type=UtcDateTime, nullable=False)
    disabled_at: datetime | None = _ts()


class ApiToken(SQLModel, table=True):
    """A user's named API token: stored as a digest, expiring, revocable."""

    __tablename__ = "api_token"
    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="user_account.id", index=True)
    name: str = Field(sa_type=String(100))
    token_sha256: str = Field(sa_type=String(64), unique=True)
    created_at: datetime = Field(sa_type=UtcDateTime, nullable=False)
    expires_at: datetime = Field(sa_type=UtcDateTime, nullable=False)
    revoked_at: datetime | None = _ts()
    last_used_at: datetime | None = _ts()


# --- claims by email (tasks/inbound_mail.py, tasks/inbound_claims.py) ----------------------------

class InboundLetter(SQLModel, table=True):
    """A letter to the refunds address: its raw bytes are kept under `<data_dir>/inbound/` before this
    row is written, and the row before the sender hears "250". `received` letters are (re)processed by
    the drain until they are `processed`; `failed` after too many crashed attempts (kept, retried by ops)."""

    __tablename__ = "inbound_letter"
    __table_args__ = (Index("ix_inbound_letter_status", "status", "next_attempt_at"),)
    id: int | None = Field(default=None, primary_key=True)
    sha256: str = Field(sa_type=String(64), unique=True)  # of the raw bytes: an MTA's resend is one letter
    path: str = Field(sa_type=String(300))  # relative to the data directory
    size: int = Field(sa_type=BigInteger)
    envelope_from: str = Field(default="", sa_type=String(320))
    rcpt_tos: list = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    received_at: datetime = Field(sa_type=UtcDateTime, nullable=False)
    too_large: bool = False  # refused with 552 at the SMTP level, answered anyway
    status: str = Field(default="received", sa_type=String(20))  # received | processed | failed
    # what processing found: pending_claim | no_order_number | not_matched | bad_attachment | not_refunds_address
    # | too_large | malformed | loop | no_sender
    outcome: str | None = Field(default=None, sa_type=String(40))
    message_id: str | None = Field(default=None, sa_type=String(300))
    from_address: str | None = Field(default=None, sa_type=String(320))
    subject: str | None = Field(default=None, sa_type=String(500))
    replied_to: str | None = Field(default=None, sa_type=String(320), index=True)  # whom the reply went to, if any
    attempts: int = 0
    next_attempt_at: datetime = Field(sa_type=UtcDateTime, nullable=False)
    lease_until: datetime | None = _ts()
    last_error: str | None = None
    processed_at: datetime | None = _ts()


class InboundClaim(SQLModel, table=True):
    """A claim sent by email, waiting for the buyer to confirm it from the order's own mailbox (a From
    header can be forged). Confirmed, it files the claims and its files become their documents."""

    __tablename__ = "inbound_claim"
    id: int | None = Field(default=None, primary_key=True)
    letter_id: int = Field(foreign_key="inbound_letter.id", unique=True)
    order_id: int = Field(foreign_key="ticket_order.id", index=True)
    ticket_ids: list = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    reason: str = Field(sa_type=String(20))
    description: str = ""
    # [{"sha256", "size", "content_type", "filename"}]: stored by tasks/documents.py
    files: list = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    code_sha256: str = Field(sa_type=String(64))
    code_attempts: int = 0
    status: str = Field(default="pending", sa_type=String(20))  # pending | confirmed | refused | expired
    created_at: datetime = Field(sa_type=UtcDateTime, nullable=False)
    expires_at: datetime = Field(sa_type=UtcDateTime, nullable=False)
    confirmed_at: datetime | None = _ts()
    claim_ids: list = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    refusal_message: str | None = None
# --- mass paths (issue 12): an event cancelled or replaced, and the mail it causes -----------------

class MassSend(SQLModel, table=True):
    """A send to more than VOZVRAT_MASS_SEND_THRESHOLD recipients: its outbox rows wait `held` until a
    second staff user, not the one who started it, approves it (tasks/mass_sends.py)."""

    __tablename__ = "mass_send"
    id: int | None = Field(default=None, primary_key=True)
    template: str = Field(sa_type=String(100))
    event_id: int | None = Field(default=None, foreign_key="event.id")
    started_by: str = Field(sa_type=String(400))  # Principal.audit of who caused the send
    recipient_count: int = 0
    status: str = Field(default="held", sa_type=String(20), index=True)  # held | approved | rejected | sending | done
    approved_by: str | None = Field(default=None, sa_type=String(400))
    rejected_by: str | None = Field(default=None, sa_type=String(400))
    note: str | None = None
    created_at: datetime = Field(sa_type=UtcDateTime, nullable=False)
    approved_at: datetime | None = _ts()
    rejected_at: datetime | None = _ts()
    done_at: datetime | None = _ts()
    # A resend of a rejected mass send names the one it repeats (same template, its untold recipients).
    resend_of: int | None = Field(default=None, foreign_key="mass_send.id")


class CodeRequest(SQLModel, table=True):
    """A sign-in code asked for (POST /buyer/session), by client address: the per-address limit
    holds across API workers (tasks/buyer_auth.py). Rows older than the window are deleted as it goes."""

    __tablename__ = "code_request"
    __table_args__ = (Index("ix_code_request_client_at", "client", "at"),)
    id: int | None = Field(default=None, primary_key=True)
    client: str = Field(sa_type=String(64))  # a keyed hash of the address, never the address itself
    at: datetime = Field(sa_type=UtcDateTime, nullable=False)


class MailAudit(SQLModel, table=True):
    """Every message that left: one row per dispatched batch, with its outbox ids and Message-IDs."""

    __tablename__ = "mail_audit"
    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(sa_type=UtcDateTime, nullable=False)
    actor: str = Field(sa_type=String(200))  # the dispatcher (host:pid:random)
    mass_send_id: int | None = Field(default=None, foreign_key="mass_send.id", index=True)
    count: int = 0
    outbox_ids: list = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    message_ids: list = Field(default_factory=list, sa_column=Column(JSON, nullable=False))


class MailSwitch(SQLModel, table=True):
    """The outbound-mail kill switch ops throw on a running stack (`vozvrat mail hold`, `POST /mail/switch`):
    one row (id 1), read by every dispatcher on every host (tasks/mail_switch.py). No row: not held."""

    __tablename__ = "mail_switch"
    __table_args__ = (CheckConstraint("id = 1", name="ck_mail_switch_one_row"),)
    id: int | None = Field(default=1, primary_key=True)
    held: bool = Field(default=False, sa_column=Column(Boolean, nullable=False, server_default=false()))
    reason: str | None = None  # why it was held (or released), as the supervisor said it
    changed_by: str | None = Field(default=None, sa_type=String(400))  # Principal.audit of the last change
    changed_at: datetime | None = _ts()


class MailSwitchChange(SQLModel, table=True):
    """The switch's audit trail: one row per hold or release, with who (Principal.audit), when and why."""

    __tablename__ = "mail_switch_change"
    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(sa_type=UtcDateTime, nullable=False)
    principal: str = Field(sa_type=String(400))
    held: bool = Field(sa_column=Column(Boolean, nullable=False))
    reason: str | None = None


class MassCancellation(SQLModel, table=True):
    """One event's mass cancellation (or replacement): its progress in chunks and its summary."""

    __tablename__ = "mass_cancellation"
    __table_args__ = (UniqueConstraint("event_id", name="uq_mass_cancellation_event"),)
    id: int | None = Field(default=None, primary_key=True)
    event_id: int = Field(foreign_key="event.id")
    action: str = Field(sa_type=String(20))  # cancelled | replaced
    reason: str
    started_by: str = Field(sa_type=String(400))
    status: str = Field(default="running", sa_type=String(20))  # running | done
    flow_run_id: str | None = Field(default=None, sa_type=String(64))
    chunks_total: int = 0
    chunks_done: int = 0
    summary: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    created_at: datetime = Field(sa_type=UtcDateTime, nullable=False)
    updated_at: datetime = Field(sa_type=UtcDateTime, nullable=False)
    finished_at: datetime | None = _ts()


class MassChunk(SQLModel, table=True):
    """A chunk of a mass cancellation that committed: a resumed run skips it."""

    __tablename__ = "mass_chunk"
    __table_args__ = (UniqueConstraint("mass_cancellation_id", "first_ticket_id", name="uq_mass_chunk_first_ticket"),)
    id: int | None = Field(default=None, primary_key=True)
    mass_cancellation_id: int = Field(foreign_key="mass_cancellation.id")
    first_ticket_id: int
    last_ticket_id: int
    done_at: datetime = Field(sa_type=UtcDateTime, nullable=False)
    counts: dict = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
# --- proven buyers (issue 10): a one-time code sent to the order's email buys a short-lived token ---

class BuyerCode(SQLModel, table=True):
    """A sign-in code sent to an order's email: stored as an HMAC, expiring, its wrong tries counted."""

    __tablename__ = "buyer_code"
    __table_args__ = (Index("ix_buyer_code_order_created", "order_number", "created_at"),)
    id: int | None = Field(default=None, primary_key=True)
    order_number: str = Field(sa_type=String(100))
    code_hmac: str = Field(sa_type=String(64))
    created_at: datetime = Field(sa_type=UtcDateTime, nullable=False)
    expires_at: datetime = Field(sa_type=UtcDateTime, nullable=False)
    attempts: int = Field(default=0, sa_column=Column(Integer, nullable=False, server_default="0"))
    used_at: datetime | None = _ts()  # spent: verified, superseded by a newer code, or out of tries


class BuyerToken(SQLModel, table=True):
    """A buyer's bearer token (`vzb_…`) for one order: stored as a digest, short-lived, revocable."""

    __tablename__ = "buyer_token"
    id: int | None = Field(default=None, primary_key=True)
    order_number: str = Field(sa_type=String(100), index=True)
    token_sha256: str = Field(sa_type=String(64), unique=True)
    created_at: datetime = Field(sa_type=UtcDateTime, nullable=False)
    expires_at: datetime = Field(sa_type=UtcDateTime, nullable=False)
    revoked_at: datetime | None = _ts()
class BulkDecision(SQLModel, table=True):
    """A bulk decision sent with an Idempotency-Key: the same key from the same caller gets the same answer.

    `request_sha256` is the digest of the request's canonical JSON: the same key with another body is
    refused (422). `response` is empty while the decision is being applied (a second call waits: 409).
    """

    __tablename__ = "bulk_decision"
    __table_args__ = (UniqueConstraint("principal", "idempotency_key", name="uq_bulk_decision_principal_key"),)
    id: int | None = Field(default=None, primary_key=True)
    idempotency_key: str = Field(sa_type=String(200))
    principal: str = Field(sa_type=String(400))  # Principal.audit of the caller
    request_sha256: str = Field(sa_type=String(64))
    response: dict | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    created_at: datetime = Field(sa_type=UtcDateTime, nullable=False)
    completed_at: datetime | None = _ts()
