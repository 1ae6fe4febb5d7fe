"""the change feed: users.change_seq and changes_floor, the changes table (one row per item: its latest
change), backfilled with an upsert per existing task and pinned project, numbered per user

Revision ID: 0011_changes
Revises: 0010_task_tree
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel  # noqa: F401 - autogenerate renders sqlmodel.sql.sqltypes types
from alembic import op

revision: str = '0011_changes'
down_revision: str | None = '0010_task_tree'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column('users', sa.Column('change_seq', sa.BigInteger(), server_default='0', nullable=False))
    op.add_column('users', sa.Column('changes_floor', sa.BigInteger(), server_default='0', nullable=False))
    op.create_table('changes',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('type', sa.String(length=16), nullable=False),
    sa.Column('item_id', sa.Integer(), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('op', sa.String(length=8), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('changed_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_changes_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_changes')),
    sa.UniqueConstraint('user_id', 'type', 'item_id', name='uq_changes_user_id_type_item_id')
    )
    op.create_index('ix_changes_user_id_seq', 'changes', ['user_id', 'seq'], unique=False)
    _backfill()


def _backfill() -> None:
    """One upsert per task and active pin, each user's numbered 1.. (tasks by id, then projects by id), in a
    few set statements; users.change_seq is the count."""
    op.execute("""
        INSERT INTO changes (user_id, type, item_id, seq, op, version, changed_at)
        SELECT user_id, type, item_id,
               ROW_NUMBER() OVER (PARTITION BY user_id ORDER BY kind, item_id), 'upsert', version, changed_at
        FROM (
            SELECT user_id, 'task' AS type, id AS item_id, version, updated_at AS changed_at, 0 AS kind FROM tasks
            UNION ALL
            SELECT user_id, 'project', id, version, last_updated, 1 FROM pinned_projects WHERE is_active
        ) AS items
    """)
    op.execute("""
        UPDATE users SET change_seq = (SELECT COUNT(*) FROM changes WHERE changes.user_id = users.id)
    """)


def downgrade() -> None:
    op.drop_index('ix_changes_user_id_seq', table_name='changes')
    op.drop_table('changes')
    with op.batch_alter_table('users') as batch:
        batch.drop_column('changes_floor')
        batch.drop_column('change_seq')
