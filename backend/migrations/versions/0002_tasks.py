"""tasks

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel  # noqa: F401 - autogenerate renders sqlmodel.sql.sqltypes types
from alembic import op

revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('tasks',
    sa.Column('title', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
    sa.Column('description', sqlmodel.sql.sqltypes.AutoString(length=10000), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('priority', sa.String(length=8), nullable=False),
    sa.Column('due_date', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('project_id', sa.Integer(), nullable=True),
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('completed', sa.Boolean(), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('updated_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('completed_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.CheckConstraint("completed = (status = 'completed')", name=op.f('ck_tasks_completed_matches_status')),
    sa.CheckConstraint("priority IN ('low', 'medium', 'high')", name=op.f('ck_tasks_priority')),
    sa.CheckConstraint("status IN ('pending', 'in_progress', 'completed')", name=op.f('ck_tasks_status')),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_tasks_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_tasks'))
    )
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.create_index('ix_tasks_user_id_created_at', ['user_id', 'created_at', 'id'], unique=False)
        batch_op.create_index('ix_tasks_user_id_due_date', ['user_id', 'due_date'], unique=False)
        batch_op.create_index('ix_tasks_user_id_project_id', ['user_id', 'project_id'], unique=False)
        batch_op.create_index('ix_tasks_user_id_status', ['user_id', 'status'], unique=False)
    if op.get_bind().dialect.name == 'postgresql':
        # Trigram GIN indexes keep `ILIKE '%text%'` indexed (pg_trgm is a trusted extension).
        op.execute('CREATE EXTENSION IF NOT EXISTS pg_trgm')
        op.create_index('ix_tasks_title_trgm', 'tasks', ['title'], postgresql_using='gin',
                        postgresql_ops={'title': 'gin_trgm_ops'})
        op.create_index('ix_tasks_description_trgm', 'tasks', ['description'], postgresql_using='gin',
                        postgresql_ops={'description': 'gin_trgm_ops'})


def downgrade() -> None:
    if op.get_bind().dialect.name == 'postgresql':
        op.drop_index('ix_tasks_description_trgm', table_name='tasks')
        op.drop_index('ix_tasks_title_trgm', table_name='tasks')
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.drop_index('ix_tasks_user_id_status')
        batch_op.drop_index('ix_tasks_user_id_project_id')
        batch_op.drop_index('ix_tasks_user_id_due_date')
        batch_op.drop_index('ix_tasks_user_id_created_at')
    op.drop_table('tasks')
