"""Payouts: one row per attempt to pay a claim's refund (a card refund through the acquirer, or a bank
transfer exported to 1C).

A payout keeps its idempotency key (derived from the claim and the attempt) for its whole life, so a
crash between asking the acquirer and recording the answer is recovered by asking again with the
same key. A new attempt (after `insufficient_funds`, or after `retry_payout` of a failed claim) is a
new row with a new key: YooKassa replays a canceled answer for an old key.

Statuses:
- pending      opened, nothing sent yet
- submitted    about to be / being sent to the acquirer; committed BEFORE the call. With
               `acquirer_refund_id` it is a refund the acquirer holds as pending (reconcile polls it);
               without it the answer was never recorded (a crash or a lost answer): ask again, same key
- succeeded    the card refund went through (final)
- canceled     the acquirer canceled the refund for good; the claim went to payout_failed (final)
- retry_later  canceled for a passing reason (insufficient_funds): a new attempt opens at
               `next_attempt_at`; the claim stays payout_pending (final for this attempt)
- exported     a bank transfer written to a 1C file (`export_batch`), awaiting the bank statement
- paid         the bank statement shows the transfer (final)
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Column, ForeignKey, Index, Integer, String, text
from sqlmodel import Field, SQLModel

from models.db import UtcDateTime

CARD = "card"
BANK_TRANSFER = "bank_transfer"

PENDING = "pending"
SUBMITTED = "submitted"
SUCCEEDED = "succeeded"
CANCELED = "canceled"
RETRY_LATER = "retry_later"
EXPORTED = "exported"
PAID = "paid"

# A live payout holds the claim: at most one per claim (the database enforces it). `retry_later`
# is not live: its successor attempt opens when it comes due.
LIVE_STATUSES = (PENDING, SUBMITTED, EXPORTED)
FINAL_STATUSES = (SUCCEEDED, CANCELED, RETRY_LATER, PAID)
_LIVE_SQL = "status IN (" + ", ".join(f"'{s}'" for s in LIVE_STATUSES) + ")"


def _ts(nullable: bool = True) -> Any:
    return Field(default=None, sa_type=UtcDateTime, nullable=nullable)


class Payout(SQLModel, table=True):
    __tablename__ = "payout"
    __table_args__ = (
        Index("uq_payout_live_claim", "claim_id", unique=True, sqlite_where=text(_LIVE_SQL), postgresql_where=text(_LIVE_SQL)),
        # Each run reads due rows by these, never the whole table.
        Index("ix_payout_channel_status", "channel", "status", "next_attempt_at"),
        Index("ix_payout_export_batch", "export_batch"),
    )
    id: int | None = Field(default=None, primary_key=True)
    claim_id: int = Field(sa_column=Column(Integer, ForeignKey("claim.id"), index=True, nullable=False))
    channel: str = Field(sa_type=String(20))  # card | bank_transfer
    amount: int = Field(sa_type=BigInteger)  # kopecks
    attempt: int = 1
    idempotency_key: str = Field(sa_type=String(64), unique=True)
    status: str = Field(default=PENDING, sa_type=String(20))
    acquirer_refund_id: str | None = Field(default=None, sa_type=String(64))
    cancellation_reason: str | None = None
    export_batch: str | None = Field(default=None, sa_type=String(64))
    exported_at: datetime | None = _ts()  # the 1C file's creation time, so a rewrite is byte-identical
    created_at: datetime = Field(sa_type=UtcDateTime, nullable=False)
    updated_at: datetime = Field(sa_type=UtcDateTime, nullable=False)
    next_attempt_at: datetime | None = _ts()
    last_error: str | None = None
