"""regimes: event history (event_change), vouchers, a claim's Decree 442 refund deadline, an event's original date

Revision ID: 0017
Revises: 0016
"""
from alembic import op
import sqlalchemy as sa

import models.db


revision = '0017'
down_revision = '0016'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('regime') as batch:
        batch.add_column(sa.Column('created_by', sa.String(length=200), nullable=True))
        batch.add_column(sa.Column('created_at', models.db.UtcDateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column('ended_by', sa.String(length=200), nullable=True))
    with op.batch_alter_table('event') as batch:
        batch.add_column(sa.Column('original_starts_at', models.db.UtcDateTime(timezone=True), nullable=True))
    with op.batch_alter_table('claim') as batch:
        batch.add_column(sa.Column('regime_refund_due', sa.Date(), nullable=True))
    op.create_index('ix_claim_regime_refund_due', 'claim', ['regime_refund_due'])
    op.create_table(
        'event_change',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('event_id', sa.Integer(), nullable=False),
        sa.Column('kind', sa.String(length=20), nullable=False),
        sa.Column('original_starts_at', models.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column('previous_starts_at', models.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column('new_starts_at', models.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column('claims_until', sa.Date(), nullable=True),
        sa.Column('regime_id', sa.Integer(), nullable=True),
        sa.Column('rule', sa.String(length=60), nullable=True),
        sa.Column('changed_by', sa.String(length=200), nullable=False),
        sa.Column('changed_at', models.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column('note', sa.String(), nullable=False),
        sa.ForeignKeyConstraint(['event_id'], ['event.id']),
        sa.ForeignKeyConstraint(['regime_id'], ['regime.id']),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_event_change_event_id', 'event_change', ['event_id'])
    op.create_table(
        'voucher',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('number', sa.String(length=40), nullable=False),
        sa.Column('claim_id', sa.Integer(), nullable=False),
        sa.Column('ticket_id', sa.Integer(), nullable=False),
        sa.Column('event_id', sa.Integer(), nullable=False),
        sa.Column('organizer_id', sa.Integer(), nullable=False),
        sa.Column('holder_email', sa.String(), nullable=False),
        sa.Column('holder_name', sa.String(), nullable=False),
        sa.Column('value', sa.BigInteger(), nullable=False),
        sa.Column('issued_on', sa.Date(), nullable=False),
        sa.Column('valid_until', sa.Date(), nullable=False),
        sa.Column('status', sa.String(length=20), nullable=False),
        sa.Column('redeemed_event_id', sa.Integer(), nullable=True),
        sa.Column('redeemed_at', models.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column('redeemed_by', sa.String(length=200), nullable=True),
        sa.Column('rule', sa.String(), nullable=False),
        sa.ForeignKeyConstraint(['claim_id'], ['claim.id']),
        sa.ForeignKeyConstraint(['ticket_id'], ['ticket.id']),
        sa.ForeignKeyConstraint(['event_id'], ['event.id']),
        sa.ForeignKeyConstraint(['organizer_id'], ['organizer.id']),
        sa.ForeignKeyConstraint(['redeemed_event_id'], ['event.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('number'),
        sa.UniqueConstraint('claim_id'),
    )
    op.create_index('ix_voucher_ticket_id', 'voucher', ['ticket_id'])
    op.create_index('ix_voucher_event_id', 'voucher', ['event_id'])
    op.create_index('ix_voucher_organizer_id', 'voucher', ['organizer_id'])
    op.create_index('ix_voucher_status_valid_until', 'voucher', ['status', 'valid_until'])


def downgrade() -> None:
    op.drop_index('ix_voucher_status_valid_until', 'voucher')
    op.drop_index('ix_voucher_organizer_id', 'voucher')
    op.drop_index('ix_voucher_event_id', 'voucher')
    op.drop_index('ix_voucher_ticket_id', 'voucher')
    op.drop_table('voucher')
    op.drop_index('ix_event_change_event_id', 'event_change')
    op.drop_table('event_change')
    op.drop_index('ix_claim_regime_refund_due', 'claim')
    with op.batch_alter_table('claim') as batch:
        batch.drop_column('regime_refund_due')
    with op.batch_alter_table('event') as batch:
        batch.drop_column('original_starts_at')
    with op.batch_alter_table('regime') as batch:
        batch.drop_column('ended_by')
        batch.drop_column('created_at')
        batch.drop_column('created_by')
