"""inbound: letters to the refunds address (kept raw, processed, retried) and claims sent by email
waiting for the buyer's confirmation

Revision ID: 0012
Revises: 0011
"""
from alembic import op
import sqlalchemy as sa

import models.db


revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'inbound_letter',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('sha256', sa.String(length=64), nullable=False),
        sa.Column('path', sa.String(length=300), nullable=False),
        sa.Column('size', sa.BigInteger(), nullable=False),
        sa.Column('envelope_from', sa.String(length=320), nullable=False),
        sa.Column('rcpt_tos', sa.JSON(), nullable=False),
        sa.Column('received_at', models.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column('too_large', sa.Boolean(), nullable=False),
        sa.Column('status', sa.String(length=20), nullable=False),
        sa.Column('outcome', sa.String(length=40), nullable=True),
        sa.Column('message_id', sa.String(length=300), nullable=True),
        sa.Column('from_address', sa.String(length=320), nullable=True),
        sa.Column('subject', sa.String(length=500), nullable=True),
        sa.Column('replied_to', sa.String(length=320), nullable=True),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('next_attempt_at', models.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column('lease_until', models.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column('last_error', sa.String(), nullable=True),
        sa.Column('processed_at', models.db.UtcDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('sha256'),
    )
    op.create_index('ix_inbound_letter_status', 'inbound_letter', ['status', 'next_attempt_at'])
    op.create_index('ix_inbound_letter_replied_to', 'inbound_letter', ['replied_to'])
    op.create_table(
        'inbound_claim',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('letter_id', sa.Integer(), nullable=False),
        sa.Column('order_id', sa.Integer(), nullable=False),
        sa.Column('ticket_ids', sa.JSON(), nullable=False),
        sa.Column('reason', sa.String(length=20), nullable=False),
        sa.Column('description', sa.String(), nullable=False),
        sa.Column('files', sa.JSON(), nullable=False),
        sa.Column('code_sha256', sa.String(length=64), nullable=False),
        sa.Column('code_attempts', sa.Integer(), nullable=False),
        sa.Column('status', sa.String(length=20), nullable=False),
        sa.Column('created_at', models.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column('expires_at', models.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column('confirmed_at', models.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column('claim_ids', sa.JSON(), nullable=False),
        sa.Column('refusal_message', sa.String(), nullable=True),
        sa.ForeignKeyConstraint(['letter_id'], ['inbound_letter.id']),
        sa.ForeignKeyConstraint(['order_id'], ['ticket_order.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('letter_id'),
    )
    op.create_index('ix_inbound_claim_order_id', 'inbound_claim', ['order_id'])


def downgrade() -> None:
    op.drop_index('ix_inbound_claim_order_id', 'inbound_claim')
    op.drop_table('inbound_claim')
    op.drop_index('ix_inbound_letter_replied_to', 'inbound_letter')
    op.drop_index('ix_inbound_letter_status', 'inbound_letter')
    op.drop_table('inbound_letter')
