"""buyers: one-time sign-in codes sent to an order's email, and the short-lived buyer tokens they buy

Revision ID: 0011
Revises: 0010
"""
from alembic import op
import sqlalchemy as sa

import models.db


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'buyer_code',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('order_number', sa.String(length=100), nullable=False),
        sa.Column('code_hmac', sa.String(length=64), nullable=False),
        sa.Column('created_at', models.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column('expires_at', models.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column('attempts', sa.Integer(), server_default='0', nullable=False),
        sa.Column('used_at', models.db.UtcDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_buyer_code_order_created', 'buyer_code', ['order_number', 'created_at'])
    op.create_table(
        'buyer_token',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('order_number', sa.String(length=100), nullable=False),
        sa.Column('token_sha256', sa.String(length=64), nullable=False),
        sa.Column('created_at', models.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column('expires_at', models.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column('revoked_at', models.db.UtcDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('token_sha256'),
    )
    op.create_index('ix_buyer_token_order_number', 'buyer_token', ['order_number'])


def downgrade() -> None:
    op.drop_index('ix_buyer_token_order_number', 'buyer_token')
    op.drop_table('buyer_token')
    op.drop_index('ix_buyer_code_order_created', 'buyer_code')
    op.drop_table('buyer_code')
