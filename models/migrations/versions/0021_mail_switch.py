"""mail_switch: the outbound-mail kill switch in the database (one row), thrown live by a staff supervisor
and read by every dispatcher on every host; mail_switch_change: who held or released it, when and why

Revision ID: 0021
Revises: 0020
"""
import sqlalchemy as sa
from alembic import op

import models.db

revision = '0021'
down_revision = '0020'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'mail_switch',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('held', sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column('reason', sa.String(), nullable=True),
        sa.Column('changed_by', sa.String(length=400), nullable=True),
        sa.Column('changed_at', models.db.UtcDateTime(timezone=True), nullable=True),
        sa.CheckConstraint('id = 1', name='ck_mail_switch_one_row'),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_table(
        'mail_switch_change',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('at', models.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column('principal', sa.String(length=400), nullable=False),
        sa.Column('held', sa.Boolean(), nullable=False),
        sa.Column('reason', sa.String(), nullable=True),
        sa.PrimaryKeyConstraint('id'),
    )


def downgrade() -> None:
    op.drop_table('mail_switch_change')
    op.drop_table('mail_switch')
