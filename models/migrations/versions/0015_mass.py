"""mass

Owned by the mass work. Empty until its owner fills it in: an empty step keeps the chain whole.

Revision ID: 0015
Revises: 0014
"""
from alembic import op  # noqa: F401
import sqlalchemy as sa  # noqa: F401


revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
