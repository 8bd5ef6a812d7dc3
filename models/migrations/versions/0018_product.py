"""product: a resent mass send names the rejected one it repeats; code requests per client address

Revision ID: 0018
Revises: 0017
"""
from alembic import op
import sqlalchemy as sa

import models.db


revision = '0018'
down_revision = '0017'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('mass_send') as batch:
        batch.add_column(sa.Column('resend_of', sa.Integer(), nullable=True))
        batch.create_foreign_key('fk_mass_send_resend_of', 'mass_send', ['resend_of'], ['id'])
    op.create_table(
        'code_request',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('client', sa.String(length=64), nullable=False),
        sa.Column('at', models.db.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_code_request_client_at', 'code_request', ['client', 'at'])


def downgrade() -> None:
    op.drop_index('ix_code_request_client_at', table_name='code_request')
    op.drop_table('code_request')
    with op.batch_alter_table('mass_send') as batch:
        batch.drop_constraint('fk_mass_send_resend_of', type_='foreignkey')
        batch.drop_column('resend_of')
