"""organizers: the bulk decisions' idempotency record (Idempotency-Key, who sent it, the request's digest, the answer)

Revision ID: 0013
Revises: 0012
"""
from alembic import op
import sqlalchemy as sa

import models.db


revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'bulk_decision',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('idempotency_key', sa.String(length=200), nullable=False),
        sa.Column('principal', sa.String(length=400), nullable=False),
        sa.Column('request_sha256', sa.String(length=64), nullable=False),
        sa.Column('response', sa.JSON(), nullable=True),
        sa.Column('created_at', models.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column('completed_at', models.db.UtcDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('principal', 'idempotency_key', name='uq_bulk_decision_principal_key'),
    )


def downgrade() -> None:
    op.drop_table('bulk_decision')
