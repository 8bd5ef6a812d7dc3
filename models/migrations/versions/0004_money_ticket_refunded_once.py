"""money ticket refunded once

A ticket is refunded once (issue 8: money): `claim.refund_granted`, set when a claim reaches approval
or a money state and never cleared, and the partial unique index `uq_claim_ticket_refund` on the
ticket over (refund_granted OR state in a money state). Organizer API tokens get an expiry
(issue 9: secrets).

Existing claims are flagged from their audit trail (any claim that ever entered a money state). A
database where one ticket was already refunded twice cannot take the index: the upgrade stops and
names those tickets, so a person can recover the money before the guard goes on.

Revision ID: 0004
Revises: 0003
"""
from datetime import datetime, timedelta, timezone

from alembic import op
import sqlalchemy as sa

import models.db


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

# Frozen copy: a migration must not change when the code's constants do.
_REFUND_STATES = ("approved", "needs_bank_details", "paid", "payout_failed", "payout_pending", "voucher_issued")
_IN = "(" + ", ".join(f"'{s}'" for s in _REFUND_STATES) + ")"
_HELD = f"refund_granted OR state IN {_IN}"


def upgrade() -> None:
    with op.batch_alter_table('organizer', schema=None) as batch_op:
        batch_op.add_column(sa.Column('api_token_expires_at', models.db.UtcDateTime(timezone=True), nullable=True))
    # Tokens issued before expiry existed get the default lifetime from the upgrade on (a token without
    # an expiry is refused).
    organizer = sa.table('organizer', sa.column('api_token_sha256', sa.String()),
                         sa.column('api_token_expires_at', models.db.UtcDateTime(timezone=True)))
    op.execute(organizer.update().where(organizer.c.api_token_sha256.is_not(None))
               .values(api_token_expires_at=datetime.now(timezone.utc) + timedelta(days=90)))
    op.add_column('claim', sa.Column('refund_granted', sa.Boolean(), nullable=False, server_default=sa.false()))
    op.execute(
        f"UPDATE claim SET refund_granted = true WHERE state IN {_IN} "
        f"OR id IN (SELECT claim_id FROM claim_transition WHERE to_state IN {_IN})"
    )
    twice = op.get_bind().execute(sa.text(
        "SELECT ticket_id, count(*) FROM claim WHERE refund_granted GROUP BY ticket_id HAVING count(*) > 1 ORDER BY ticket_id"
    )).all()
    if twice:
        listed = ", ".join(f"ticket {t} ({n} claims)" for t, n in twice[:20])
        raise RuntimeError(
            f"{len(twice)} ticket(s) were refunded more than once ({listed}); recover the money and close the extra "
            "claims before upgrading: the guard that a ticket is refunded once cannot go on over them"
        )
    op.create_index(
        'uq_claim_ticket_refund', 'claim', ['ticket_id'], unique=True,
        sqlite_where=sa.text(_HELD), postgresql_where=sa.text(_HELD),
    )


def downgrade() -> None:
    op.drop_index('uq_claim_ticket_refund', table_name='claim')
    with op.batch_alter_table('claim', schema=None) as batch_op:
        batch_op.drop_column('refund_granted')
    with op.batch_alter_table('organizer', schema=None) as batch_op:
        batch_op.drop_column('api_token_expires_at')
