"""mass: mass cancellations run in chunks (mass_cancellation, mass_chunk), mass sends held for a
second person (mass_send, outbox.mass_send_id) and the audit trail of sent mail (mail_audit)

Revision ID: 0015
Revises: 0014
"""
from alembic import op
import sqlalchemy as sa

import models.db


revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'mass_send',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('template', sa.String(length=100), nullable=False),
        sa.Column('event_id', sa.Integer(), nullable=True),
        sa.Column('started_by', sa.String(length=400), nullable=False),
        sa.Column('recipient_count', sa.Integer(), nullable=False),
        sa.Column('status', sa.String(length=20), nullable=False),
        sa.Column('approved_by', sa.String(length=400), nullable=True),
        sa.Column('rejected_by', sa.String(length=400), nullable=True),
        sa.Column('note', sa.String(), nullable=True),
        sa.Column('created_at', models.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column('approved_at', models.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column('rejected_at', models.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column('done_at', models.db.UtcDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['event_id'], ['event.id']),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_mass_send_status', 'mass_send', ['status'])
    with op.batch_alter_table('outbox') as batch:
        batch.add_column(sa.Column('mass_send_id', sa.Integer(), nullable=True))
        batch.create_foreign_key('fk_outbox_mass_send', 'mass_send', ['mass_send_id'], ['id'])
        batch.create_index('ix_outbox_mass_send_status', ['mass_send_id', 'status'])
    op.create_table(
        'mail_audit',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('at', models.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column('actor', sa.String(length=200), nullable=False),
        sa.Column('mass_send_id', sa.Integer(), nullable=True),
        sa.Column('count', sa.Integer(), nullable=False),
        sa.Column('outbox_ids', sa.JSON(), nullable=False),
        sa.Column('message_ids', sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(['mass_send_id'], ['mass_send.id']),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_mail_audit_mass_send_id', 'mail_audit', ['mass_send_id'])
    op.create_table(
        'mass_cancellation',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('event_id', sa.Integer(), nullable=False),
        sa.Column('action', sa.String(length=20), nullable=False),
        sa.Column('reason', sa.String(), nullable=False),
        sa.Column('started_by', sa.String(length=400), nullable=False),
        sa.Column('status', sa.String(length=20), nullable=False),
        sa.Column('flow_run_id', sa.String(length=64), nullable=True),
        sa.Column('chunks_total', sa.Integer(), nullable=False),
        sa.Column('chunks_done', sa.Integer(), nullable=False),
        sa.Column('summary', sa.JSON(), nullable=False),
        sa.Column('created_at', models.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column('updated_at', models.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column('finished_at', models.db.UtcDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['event_id'], ['event.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('event_id', name='uq_mass_cancellation_event'),
    )
    op.create_table(
        'mass_chunk',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('mass_cancellation_id', sa.Integer(), nullable=False),
        sa.Column('first_ticket_id', sa.Integer(), nullable=False),
        sa.Column('last_ticket_id', sa.Integer(), nullable=False),
        sa.Column('done_at', models.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column('counts', sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(['mass_cancellation_id'], ['mass_cancellation.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('mass_cancellation_id', 'first_ticket_id', name='uq_mass_chunk_first_ticket'),
    )


def downgrade() -> None:
    op.drop_table('mass_chunk')
    op.drop_table('mass_cancellation')
    op.drop_index('ix_mail_audit_mass_send_id', table_name='mail_audit')
    op.drop_table('mail_audit')
    with op.batch_alter_table('outbox') as batch:
        batch.drop_index('ix_outbox_mass_send_status')
        batch.drop_constraint('fk_outbox_mass_send', type_='foreignkey')
        batch.drop_column('mass_send_id')
    op.drop_index('ix_mass_send_status', table_name='mass_send')
    op.drop_table('mass_send')
