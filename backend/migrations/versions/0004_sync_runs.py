"""sync runs

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel  # noqa: F401 - autogenerate renders sqlmodel.sql.sqltypes types
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql')
ACTIVE = sa.text("status IN ('queued', 'running')")


def upgrade() -> None:
    op.create_table('sync_runs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('project_id', sa.Integer(), nullable=False),
    sa.Column('user_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('current_stage', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=True),
    sa.Column('progress', sa.Integer(), nullable=False),
    sa.Column('stages', JSON, nullable=False),
    sa.Column('error', JSON, nullable=True),
    sa.Column('results', JSON, nullable=True),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('started_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('finished_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.CheckConstraint('progress BETWEEN 0 AND 100', name=op.f('ck_sync_runs_progress')),
    sa.CheckConstraint("status IN ('queued', 'running', 'succeeded', 'failed')", name=op.f('ck_sync_runs_status')),
    sa.ForeignKeyConstraint(['project_id'], ['pinned_projects.id'], name=op.f('fk_sync_runs_project_id_pinned_projects'),
                            ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_sync_runs_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sync_runs'))
    )
    op.create_index('ix_sync_runs_project_id_created_at', 'sync_runs', ['project_id', 'created_at'], unique=False)
    op.create_index('ix_sync_runs_status', 'sync_runs', ['status'], unique=False)
    op.create_index('uq_sync_runs_project_id_active', 'sync_runs', ['project_id'], unique=True,
                    sqlite_where=ACTIVE, postgresql_where=ACTIVE)


def downgrade() -> None:
    op.drop_index('uq_sync_runs_project_id_active', table_name='sync_runs')
    op.drop_index('ix_sync_runs_status', table_name='sync_runs')
    op.drop_index('ix_sync_runs_project_id_created_at', table_name='sync_runs')
    op.drop_table('sync_runs')
