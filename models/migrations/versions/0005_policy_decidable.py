"""policy decidable

Policy corrections (issue 8: rules), e.g. the day a claim became decidable. Owned by the states/policy work.
Empty until its owner fills it in: an empty step keeps the chain whole.

Revision ID: 0005
Revises: 0004
"""
from alembic import op  # noqa: F401
import sqlalchemy as sa  # noqa: F401


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
