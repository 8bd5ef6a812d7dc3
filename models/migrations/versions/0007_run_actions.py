"""run actions

Pending run actions / starter (issue 9: nothing stuck). Owned by the starter work.
Empty until its owner fills it in: an empty step keeps the chain whole.

Revision ID: 0007
Revises: 0006
"""
from alembic import op  # noqa: F401
import sqlalchemy as sa  # noqa: F401


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
