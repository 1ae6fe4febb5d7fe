"""pinned projects

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel  # noqa: F401 - autogenerate renders sqlmodel.sql.sqltypes types
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The SQLite rebuild of `tasks` reflects that table only. Resolving its foreign keys would reflect `users` too,
# whose expression index uq_users_email_lower SQLAlchemy cannot reflect on SQLite (an SAWarning at every first
# start); the rebuild needs only the referred column names, which the foreign keys carry.
NO_REFERRED_TABLES = {'resolve_fks': False}


def upgrade() -> None:
    op.create_table('pinned_projects',
    sa.Column('github_repo_name', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
    sa.Column('github_repo_url', sqlmodel.sql.sqltypes.AutoString(length=500), nullable=False),
    sa.Column('display_name', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=True),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('is_active', sa.Boolean(), nullable=False),
    sa.Column('pinned_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('last_updated', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('repo_metadata', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'),
              nullable=True),
    sa.Column('last_synced_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_pinned_projects_user_id_users'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_pinned_projects'))
    )
    op.create_index('ix_pinned_projects_user_id_is_active_position', 'pinned_projects',
                    ['user_id', 'is_active', 'position'], unique=False)
    op.create_index('uq_pinned_projects_user_id_repo_lower', 'pinned_projects',
                    ['user_id', sa.text('lower(github_repo_name)')], unique=True)
    with op.batch_alter_table('tasks', schema=None, reflect_kwargs=NO_REFERRED_TABLES) as batch_op:
        batch_op.create_foreign_key(op.f('fk_tasks_project_id_pinned_projects'), 'pinned_projects',
                                    ['project_id'], ['id'], ondelete='SET NULL')


def downgrade() -> None:
    with op.batch_alter_table('tasks', schema=None, reflect_kwargs=NO_REFERRED_TABLES) as batch_op:
        batch_op.drop_constraint(op.f('fk_tasks_project_id_pinned_projects'), type_='foreignkey')
    op.drop_index('uq_pinned_projects_user_id_repo_lower', table_name='pinned_projects')
    op.drop_index('ix_pinned_projects_user_id_is_active_position', table_name='pinned_projects')
    op.drop_table('pinned_projects')
