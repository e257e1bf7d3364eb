"""Alerting, letters and delivery: silenced alerts keep their dedup key (the unique index covers
open and silenced alerts), the dedup window runs from `last_seen_at`, letters count reminders and
carry their response period (15/30/60 days), outbox leases name their owner.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 09:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')
TS = sa.DateTime(timezone=True)
OPEN = "status = 'open'"
ACTIVE = "status IN ('open', 'silenced')"


def upgrade() -> None:
    # Batch mode: SQLite cannot add a foreign key or tighten NULL in place (PostgreSQL just ALTERs).
    op.drop_index('uq_alerts_open_dedup_key', table_name='alerts')
    with op.batch_alter_table('alerts') as batch:
        batch.add_column(sa.Column('silence_id', ID, nullable=True))
        batch.add_column(sa.Column('last_seen_at', TS, nullable=True))
        batch.create_foreign_key(op.f('fk_alerts_silence_id_silences'), 'silences', ['silence_id'], ['id'],
                                 ondelete='SET NULL')
    op.execute("UPDATE alerts SET last_seen_at = updated_at")
    with op.batch_alter_table('alerts') as batch:
        batch.alter_column('last_seen_at', existing_type=TS, nullable=False)
    op.create_index('uq_alerts_active_dedup_key', 'alerts', ['dedup_key'], unique=True,
                    sqlite_where=sa.text(ACTIVE), postgresql_where=sa.text(ACTIVE))

    with op.batch_alter_table('letters') as batch:
        batch.add_column(sa.Column('reminders', sa.Integer(), server_default=sa.text('0'), nullable=False))
        batch.add_column(sa.Column('response_days', sa.Integer(), server_default=sa.text('15'), nullable=False))

    with op.batch_alter_table('outbox') as batch:
        batch.add_column(sa.Column('lease_owner', sa.String(length=64), nullable=True))
        batch.add_column(sa.Column('event', sa.String(length=40), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('outbox') as batch:
        batch.drop_column('event')
        batch.drop_column('lease_owner')
    with op.batch_alter_table('letters') as batch:
        batch.drop_column('response_days')
        batch.drop_column('reminders')
    op.drop_index('uq_alerts_active_dedup_key', table_name='alerts')
    op.execute("UPDATE alerts SET status = 'open' WHERE status = 'silenced'")
    with op.batch_alter_table('alerts') as batch:
        batch.drop_constraint(op.f('fk_alerts_silence_id_silences'), type_='foreignkey')
        batch.drop_column('last_seen_at')
        batch.drop_column('silence_id')
    op.create_index('uq_alerts_open_dedup_key', 'alerts', ['dedup_key'], unique=True,
                    sqlite_where=sa.text(OPEN), postgresql_where=sa.text(OPEN))
