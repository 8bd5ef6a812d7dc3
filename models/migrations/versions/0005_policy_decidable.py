"""policy decidable

Policy corrections (issue 8: rules): the day a claim became decidable (filed, or its documents
complete), from which the organizer's decision deadline counts (docs/rules.md, "Decision deadline").
`event.claims_until` (a postponed event's last day for claims) already exists since 0001.

Revision ID: 0005
Revises: 0004
"""
from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("claim") as batch:
        batch.add_column(sa.Column("decidable_on", sa.Date(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("claim") as batch:
        batch.drop_column("decidable_on")
