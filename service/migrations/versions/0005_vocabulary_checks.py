"""One vocabulary in the database: CHECK constraints keep the statuses of letters, alerts and outbox
messages and every risk level inside service.vocab; the `departments` table, never read or written
(contacts live in the routing file), is dropped.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04 18:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')
TS = sa.DateTime(timezone=True)
# The values of service.vocab as of this revision, spelled out so this file never changes when the
# vocabulary does (a later change gets its own migration; tests compare the two).
LEVELS = "risk_level IN ('高', '中', '低')"
CHECKS = {
    'letters': {'status_known': "status IN ('issued', 'acknowledged', 'resolved')", 'risk_level_known': LEVELS},
    'alerts': {'status_known': "status IN ('open', 'silenced', 'resolved', 'lapsed')", 'risk_level_known': LEVELS},
    'outbox': {'status_known': "status IN ('pending', 'sending', 'failed', 'sent', 'dead')"},
    'complaints': {'risk_level_known': LEVELS},  # its status_known came with 0001
}


def upgrade() -> None:
    op.drop_table('departments')
    # Batch mode: SQLite cannot add a constraint in place (PostgreSQL just ALTERs).
    for table, checks in CHECKS.items():
        with op.batch_alter_table(table) as batch:
            for name, condition in checks.items():
                batch.create_check_constraint(op.f(f'ck_{table}_{name}'), condition)


def downgrade() -> None:
    for table, checks in reversed(CHECKS.items()):
        with op.batch_alter_table(table) as batch:
            for name in reversed(checks):
                batch.drop_constraint(op.f(f'ck_{table}_{name}'), type_='check')
    op.create_table('departments',
    sa.Column('id', ID, nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('email', sa.String(length=320), nullable=True),
    sa.Column('webhook_url', sa.String(length=1000), nullable=True),
    sa.Column('active', sa.Boolean(), server_default=sa.true(), nullable=False),
    sa.Column('created_at', TS, nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_departments')),
    sa.UniqueConstraint('name', name=op.f('uq_departments_name'))
    )
