"""accounts: service keys, user accounts and their API tokens; a document's stored file

Revision ID: 0009
Revises: 0008
"""
from alembic import op
import sqlalchemy as sa

import models.db


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'service_key',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=100), nullable=False),
        sa.Column('key_sha256', sa.String(length=64), nullable=False),
        sa.Column('created_at', models.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column('revoked_at', models.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column('last_used_at', models.db.UtcDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('name'),
        sa.UniqueConstraint('key_sha256'),
    )
    op.create_table(
        'user_account',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('login', sa.String(length=320), nullable=False),
        sa.Column('display_name', sa.String(), nullable=False),
        sa.Column('password_hash', sa.String(), nullable=True),
        sa.Column('kind', sa.String(length=20), nullable=False),
        sa.Column('organizer_id', sa.Integer(), nullable=True),
        sa.Column('role', sa.String(length=20), nullable=True),
        sa.Column('created_at', models.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column('disabled_at', models.db.UtcDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['organizer_id'], ['organizer.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('login'),
    )
    op.create_index('ix_user_account_organizer_id', 'user_account', ['organizer_id'])
    op.create_table(
        'api_token',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=100), nullable=False),
        sa.Column('token_sha256', sa.String(length=64), nullable=False),
        sa.Column('created_at', models.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column('expires_at', models.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column('revoked_at', models.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column('last_used_at', models.db.UtcDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(['user_id'], ['user_account.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('token_sha256'),
    )
    op.create_index('ix_api_token_user_id', 'api_token', ['user_id'])
    with op.batch_alter_table('document') as batch:
        batch.add_column(sa.Column('sha256', sa.String(length=64), nullable=True))
        batch.add_column(sa.Column('size', sa.Integer(), nullable=True))
        batch.add_column(sa.Column('content_type', sa.String(length=100), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('document') as batch:
        batch.drop_column('content_type')
        batch.drop_column('size')
        batch.drop_column('sha256')
    op.drop_index('ix_api_token_user_id', 'api_token')
    op.drop_table('api_token')
    op.drop_index('ix_user_account_organizer_id', 'user_account')
    op.drop_table('user_account')
    op.drop_table('service_key')
