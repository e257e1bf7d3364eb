"""Initial schema: API keys, complaints and their outcomes, and the tables alerting, letters,
delivery (outbox) and silences build on.

Revision ID: 0001
Revises:
Create Date: 2026-11-27 14:25:28.427117
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The column types of service.tables, spelled out so this file never changes when the models do.
ID = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')
TS = sa.DateTime(timezone=True)
JSON = sa.JSON().with_variant(postgresql.JSONB(), 'postgresql')


def upgrade() -> None:
    op.create_table('api_keys',
    sa.Column('id', ID, nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('scope', sa.String(length=120), nullable=False),
    sa.Column('key_hash', sa.String(length=64), nullable=False),
    sa.Column('prefix', sa.String(length=16), nullable=False),
    sa.Column('created_at', TS, nullable=False),
    sa.Column('revoked_at', TS, nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_keys')),
    sa.UniqueConstraint('key_hash', name=op.f('uq_api_keys_key_hash')),
    sa.UniqueConstraint('name', name=op.f('uq_api_keys_name'))
    )
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
    op.create_table('letter_sequences',
    sa.Column('year', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('last_seq', sa.Integer(), nullable=False),
    sa.CheckConstraint('last_seq >= 0', name=op.f('ck_letter_sequences_last_seq_not_negative')),
    sa.PrimaryKeyConstraint('year', name=op.f('pk_letter_sequences'))
    )
    op.create_table('letters',
    sa.Column('id', ID, nullable=False),
    sa.Column('year', sa.Integer(), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('number', sa.String(length=32), nullable=False),
    sa.Column('department', sa.String(length=100), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('group_key', sa.String(length=200), nullable=True),
    sa.Column('risk_level', sa.String(length=4), nullable=True),
    sa.Column('issued_at', TS, nullable=False),
    sa.Column('ack_due_at', TS, nullable=True),
    sa.Column('response_due_at', TS, nullable=True),
    sa.Column('acknowledged_at', TS, nullable=True),
    sa.Column('resolved_at', TS, nullable=True),
    sa.Column('reminded_at', TS, nullable=True),
    sa.Column('ack_note', sa.Text(), nullable=True),
    sa.Column('resolve_note', sa.Text(), nullable=True),
    sa.Column('created_at', TS, nullable=False),
    sa.Column('updated_at', TS, nullable=False),
    sa.CheckConstraint('seq >= 1', name=op.f('ck_letters_seq_positive')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_letters')),
    sa.UniqueConstraint('group_key', name=op.f('uq_letters_group_key')),
    sa.UniqueConstraint('number', name=op.f('uq_letters_number')),
    sa.UniqueConstraint('year', 'seq', name=op.f('uq_letters_year_seq'))
    )
    op.create_index(op.f('ix_letters_ack_due_at'), 'letters', ['ack_due_at'])
    op.create_index(op.f('ix_letters_department'), 'letters', ['department'])
    op.create_index(op.f('ix_letters_response_due_at'), 'letters', ['response_due_at'])
    op.create_index(op.f('ix_letters_status'), 'letters', ['status'])

    op.create_table('alerts',
    sa.Column('id', ID, nullable=False),
    sa.Column('dedup_key', sa.String(length=400), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.String(length=32), nullable=False),
    sa.Column('department', sa.String(length=100), nullable=False),
    sa.Column('customer_ref', sa.String(length=128), nullable=True),
    sa.Column('category', sa.String(length=64), nullable=True),
    sa.Column('cause', sa.String(length=64), nullable=True),
    sa.Column('branch', sa.String(length=100), nullable=True),
    sa.Column('risk_score', sa.Double(), nullable=True),
    sa.Column('risk_level', sa.String(length=4), nullable=True),
    sa.Column('occurrences', sa.Integer(), nullable=False),
    sa.Column('letter_id', ID, nullable=True),
    sa.Column('opened_at', TS, nullable=False),
    sa.Column('updated_at', TS, nullable=False),
    sa.Column('resolved_at', TS, nullable=True),
    sa.CheckConstraint('occurrences >= 1', name=op.f('ck_alerts_occurrences_positive')),
    sa.ForeignKeyConstraint(['letter_id'], ['letters.id'], name=op.f('fk_alerts_letter_id_letters'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_alerts'))
    )
    op.create_index(op.f('ix_alerts_dedup_key'), 'alerts', ['dedup_key'])
    op.create_index(op.f('ix_alerts_department'), 'alerts', ['department'])
    op.create_index(op.f('ix_alerts_letter_id'), 'alerts', ['letter_id'])
    op.create_index(op.f('ix_alerts_status'), 'alerts', ['status'])
    op.create_index(op.f('uq_alerts_open_dedup_key'), 'alerts', ['dedup_key'], unique=True, sqlite_where=sa.text("status = 'open'"), postgresql_where=sa.text("status = 'open'"))

    op.create_table('letter_events',
    sa.Column('id', ID, nullable=False),
    sa.Column('letter_id', ID, nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('note', sa.Text(), nullable=True),
    sa.Column('api_key_id', ID, nullable=True),
    sa.Column('at', TS, nullable=False),
    sa.ForeignKeyConstraint(['api_key_id'], ['api_keys.id'], name=op.f('fk_letter_events_api_key_id_api_keys'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['letter_id'], ['letters.id'], name=op.f('fk_letter_events_letter_id_letters'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_letter_events'))
    )
    op.create_index(op.f('ix_letter_events_letter_id'), 'letter_events', ['letter_id'])

    op.create_table('outbox',
    sa.Column('id', ID, nullable=False),
    sa.Column('idempotency_key', sa.String(length=200), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('receiver', sa.String(length=1000), nullable=False),
    sa.Column('subject', sa.String(length=300), nullable=True),
    sa.Column('payload', JSON, nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', TS, nullable=False),
    sa.Column('locked_until', TS, nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('letter_id', ID, nullable=True),
    sa.Column('created_at', TS, nullable=False),
    sa.Column('sent_at', TS, nullable=True),
    sa.CheckConstraint('attempts >= 0', name=op.f('ck_outbox_attempts_not_negative')),
    sa.ForeignKeyConstraint(['letter_id'], ['letters.id'], name=op.f('fk_outbox_letter_id_letters'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_outbox')),
    sa.UniqueConstraint('idempotency_key', name=op.f('uq_outbox_idempotency_key'))
    )
    op.create_index(op.f('ix_outbox_due'), 'outbox', ['status', 'next_attempt_at'])
    op.create_index(op.f('ix_outbox_letter_id'), 'outbox', ['letter_id'])

    op.create_table('silences',
    sa.Column('id', ID, nullable=False),
    sa.Column('department', sa.String(length=100), nullable=True),
    sa.Column('category', sa.String(length=64), nullable=True),
    sa.Column('cause', sa.String(length=64), nullable=True),
    sa.Column('branch', sa.String(length=100), nullable=True),
    sa.Column('comment', sa.Text(), nullable=True),
    sa.Column('starts_at', TS, nullable=False),
    sa.Column('ends_at', TS, nullable=False),
    sa.Column('api_key_id', ID, nullable=True),
    sa.Column('created_at', TS, nullable=False),
    sa.ForeignKeyConstraint(['api_key_id'], ['api_keys.id'], name=op.f('fk_silences_api_key_id_api_keys'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_silences'))
    )
    op.create_index(op.f('ix_silences_ends_at'), 'silences', ['ends_at'])

    op.create_table('complaints',
    sa.Column('id', ID, nullable=False),
    sa.Column('external_id', sa.String(length=128), nullable=False),
    sa.Column('text_masked', sa.Text(), nullable=False),
    sa.Column('channel', sa.String(length=32), nullable=False),
    sa.Column('branch', sa.String(length=100), nullable=False),
    sa.Column('received_at', TS, nullable=False),
    sa.Column('customer_ref', sa.String(length=128), nullable=True),
    sa.Column('product', sa.String(length=100), nullable=True),
    sa.Column('amount', sa.Numeric(precision=18, scale=2), nullable=True),
    sa.Column('repeat_count', sa.Integer(), nullable=True),
    sa.Column('prediction', JSON, nullable=False),
    sa.Column('model_version', sa.String(length=64), nullable=False),
    sa.Column('category', sa.String(length=64), nullable=True),
    sa.Column('category_probability', sa.Double(), nullable=True),
    sa.Column('cause', sa.String(length=64), nullable=True),
    sa.Column('cause_probability', sa.Double(), nullable=True),
    sa.Column('risk_score', sa.Double(), nullable=True),
    sa.Column('risk_level', sa.String(length=4), nullable=True),
    sa.Column('needs_review', sa.Boolean(), nullable=False),
    sa.Column('status', sa.String(length=16), server_default='open', nullable=False),
    sa.Column('closed_at', TS, nullable=True),
    sa.Column('alert_id', ID, nullable=True),
    sa.Column('api_key_id', ID, nullable=True),
    sa.Column('created_at', TS, nullable=False),
    sa.Column('updated_at', TS, nullable=False),
    sa.CheckConstraint("status IN ('open', 'closed')", name=op.f('ck_complaints_status_known')),
    sa.CheckConstraint('repeat_count IS NULL OR repeat_count >= 0', name=op.f('ck_complaints_repeat_count_not_negative')),
    sa.ForeignKeyConstraint(['alert_id'], ['alerts.id'], name=op.f('fk_complaints_alert_id_alerts'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['api_key_id'], ['api_keys.id'], name=op.f('fk_complaints_api_key_id_api_keys'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_complaints')),
    sa.UniqueConstraint('external_id', name=op.f('uq_complaints_external_id'))
    )
    op.create_index(op.f('ix_complaints_alert_id'), 'complaints', ['alert_id'])
    op.create_index(op.f('ix_complaints_branch'), 'complaints', ['branch'])
    op.create_index(op.f('ix_complaints_category'), 'complaints', ['category'])
    op.create_index(op.f('ix_complaints_cause'), 'complaints', ['cause'])
    op.create_index(op.f('ix_complaints_channel'), 'complaints', ['channel'])
    op.create_index(op.f('ix_complaints_created_at'), 'complaints', ['created_at'])
    op.create_index(op.f('ix_complaints_customer_ref'), 'complaints', ['customer_ref'])
    op.create_index(op.f('ix_complaints_model_version'), 'complaints', ['model_version'])
    op.create_index(op.f('ix_complaints_needs_review'), 'complaints', ['needs_review'])
    op.create_index(op.f('ix_complaints_received_at_id'), 'complaints', ['received_at', 'id'])
    op.create_index(op.f('ix_complaints_risk_level'), 'complaints', ['risk_level'])
    op.create_index(op.f('ix_complaints_status'), 'complaints', ['status'])

    op.create_table('complaint_outcomes',
    sa.Column('id', ID, nullable=False),
    sa.Column('complaint_id', ID, nullable=False),
    sa.Column('escalated', sa.Boolean(), nullable=True),
    sa.Column('category', sa.String(length=64), nullable=True),
    sa.Column('cause', sa.String(length=64), nullable=True),
    sa.Column('confirmed', sa.Boolean(), server_default=sa.false(), nullable=False),
    sa.Column('note', sa.Text(), nullable=True),
    sa.Column('api_key_id', ID, nullable=True),
    sa.Column('recorded_at', TS, nullable=False),
    sa.ForeignKeyConstraint(['api_key_id'], ['api_keys.id'], name=op.f('fk_complaint_outcomes_api_key_id_api_keys'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['complaint_id'], ['complaints.id'], name=op.f('fk_complaint_outcomes_complaint_id_complaints'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_complaint_outcomes'))
    )
    op.create_index(op.f('ix_complaint_outcomes_complaint_id'), 'complaint_outcomes', ['complaint_id'])

    op.create_table('letter_items',
    sa.Column('id', ID, nullable=False),
    sa.Column('letter_id', ID, nullable=False),
    sa.Column('complaint_id', ID, nullable=False),
    sa.Column('alert_id', ID, nullable=True),
    sa.Column('snapshot', JSON, nullable=False),
    sa.ForeignKeyConstraint(['alert_id'], ['alerts.id'], name=op.f('fk_letter_items_alert_id_alerts'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['complaint_id'], ['complaints.id'], name=op.f('fk_letter_items_complaint_id_complaints'), ondelete='RESTRICT'),
    sa.ForeignKeyConstraint(['letter_id'], ['letters.id'], name=op.f('fk_letter_items_letter_id_letters'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_letter_items')),
    sa.UniqueConstraint('letter_id', 'complaint_id', name=op.f('uq_letter_items_letter_id_complaint_id'))
    )
    op.create_index(op.f('ix_letter_items_alert_id'), 'letter_items', ['alert_id'])
    op.create_index(op.f('ix_letter_items_complaint_id'), 'letter_items', ['complaint_id'])
    op.create_index(op.f('ix_letter_items_letter_id'), 'letter_items', ['letter_id'])


def downgrade() -> None:
    # Indexes and constraints go with their tables; dependents first.
    op.drop_table('letter_items')
    op.drop_table('complaint_outcomes')
    op.drop_table('complaints')
    op.drop_table('silences')
    op.drop_table('outbox')
    op.drop_table('letter_events')
    op.drop_table('alerts')
    op.drop_table('letters')
    op.drop_table('letter_sequences')
    op.drop_table('departments')
    op.drop_table('api_keys')
