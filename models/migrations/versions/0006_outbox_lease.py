"""outbox lease

Outbox leases (issue 8: messages). A dispatcher claims rows by writing its name and an expiry
(`lease_owner`, `leased_until`) before it talks to SMTP, so two dispatchers never send the same row;
a dispatcher that died frees its rows when the lease runs out. `message_id` is the row's Message-ID,
fixed the first time the row is leased, so every resend carries the same one.

Revision ID: 0006
Revises: 0005
"""
from alembic import op
import sqlalchemy as sa

import models.db


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.add_column(sa.Column('lease_owner', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('leased_until', models.db.UtcDateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('message_id', sa.String(length=200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_column('message_id')
        batch_op.drop_column('leased_until')
        batch_op.drop_column('lease_owner')
