"""scaleout

Owned by the scaleout work. Empty until its owner fills it in: an empty step keeps the chain whole.

Revision ID: 0016
Revises: 0015
"""
from alembic import op  # noqa: F401
import sqlalchemy as sa  # noqa: F401


revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
