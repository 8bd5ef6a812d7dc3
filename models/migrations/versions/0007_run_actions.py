"""run actions: the claims' flow runs to create or resume, queued with the step (issue 9)

The API records a step and answers at once; the run starter drains this table at the pace the
Prefect server bears (tasks/run_actions.py).

Revision ID: 0007
Revises: 0006
"""
from alembic import op
import sqlalchemy as sa

import models.db


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'run_action',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('claim_id', sa.Integer(), nullable=False),
        sa.Column('kind', sa.String(length=20), nullable=False),
        sa.Column('dedup_key', sa.String(length=100), nullable=True),
        sa.Column('payload', sa.JSON(), nullable=False),
        sa.Column('status', sa.String(length=20), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('next_attempt_at', models.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column('lease_until', models.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column('created_at', models.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column('done_at', models.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column('outcome', sa.String(), nullable=True),
        sa.Column('last_error', sa.String(), nullable=True),
        sa.ForeignKeyConstraint(['claim_id'], ['claim.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('dedup_key', name='uq_run_action_dedup_key'),
    )
    with op.batch_alter_table('run_action', schema=None) as batch_op:
        batch_op.create_index('ix_run_action_due', ['status', 'next_attempt_at'], unique=False)
        batch_op.create_index('ix_run_action_claim_status', ['claim_id', 'status'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('run_action', schema=None) as batch_op:
        batch_op.drop_index('ix_run_action_claim_status')
        batch_op.drop_index('ix_run_action_due')
    op.drop_table('run_action')
