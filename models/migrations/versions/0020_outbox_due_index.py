"""outbox: the due index ends with the id, so the dispatcher's lease (oldest due first, then by id) walks it
and stops at its limit instead of sorting every due row (PostgreSQL; SQLite has the rowid there already)

Revision ID: 0020
Revises: 0019
"""
from alembic import op

revision = '0020'
down_revision = '0019'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index('ix_outbox_due', table_name='outbox')
    op.create_index('ix_outbox_due', 'outbox', ['status', 'kind', 'next_attempt_at', 'id'])


def downgrade() -> None:
    op.drop_index('ix_outbox_due', table_name='outbox')
    op.create_index('ix_outbox_due', 'outbox', ['status', 'kind', 'next_attempt_at'])
