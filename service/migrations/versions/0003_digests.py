"""Weekly digests: one row per digest generated and handed to the outbox; the scheduler's row is
unique per week.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')
TS = sa.DateTime(timezone=True)
JSON = sa.JSON().with_variant(postgresql.JSONB(), 'postgresql')
SCHEDULED = "source = 'schedule'"


def upgrade() -> None:
    op.create_table('digests',
    sa.Column('id', ID, nullable=False),
    sa.Column('week', sa.String(length=8), nullable=False),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('forced', sa.Boolean(), server_default=sa.text('false'), nullable=False),
    sa.Column('recipients', JSON, nullable=False),
    sa.Column('content_hash', sa.String(length=64), nullable=False),
    sa.Column('generated_at', TS, nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_digests'))
    )
    op.create_index(op.f('ix_digests_week'), 'digests', ['week'], unique=False)
    op.create_index('uq_digests_scheduled_week', 'digests', ['week'], unique=True,
                    sqlite_where=sa.text(SCHEDULED), postgresql_where=sa.text(SCHEDULED))


def downgrade() -> None:
    op.drop_index('uq_digests_scheduled_week', table_name='digests')
    op.drop_index(op.f('ix_digests_week'), table_name='digests')
    op.drop_table('digests')
