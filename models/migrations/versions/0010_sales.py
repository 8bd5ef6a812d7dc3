"""sales: the operator's own keys on organizers, venues and events; an order's status and payment amount

The sales feed (docs/sales-feed.md) upserts by the operator's ids: `external_id` on organizer, venue
and event (unique where set; rows made before the feed keep NULL), the order number and the barcode.

Revision ID: 0010
Revises: 0009
"""
from alembic import op
import sqlalchemy as sa


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None

KEYED = ("organizer", "venue", "event")


def upgrade() -> None:
    for table in KEYED:
        op.add_column(table, sa.Column('external_id', sa.String(length=100), nullable=True))
        op.create_index(f'ix_{table}_external_id', table, ['external_id'], unique=True)
    # paid | refunded (refunded elsewhere: at the box office, by the organizer); what the acquirer took, in kopecks.
    op.add_column('ticket_order', sa.Column('status', sa.String(length=20), nullable=False, server_default='paid'))
    op.add_column('ticket_order', sa.Column('payment_amount', sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('ticket_order') as batch:
        batch.drop_column('payment_amount')
        batch.drop_column('status')
    for table in reversed(KEYED):
        op.drop_index(f'ix_{table}_external_id', table)
        with op.batch_alter_table(table) as batch:
            batch.drop_column('external_id')
