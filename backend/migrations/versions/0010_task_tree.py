"""subtasks, manual order, recurrence: tasks gain parent_id, position, due_timezone, recurrence and
recurrence_start; completions of recurring tasks get their table

Revision ID: 0010_task_tree
Revises: 0009_labels
Create Date: 2026-11-30
"""

import contextlib
import warnings
from collections.abc import Iterator, Sequence

import sqlalchemy as sa
import sqlmodel  # noqa: F401 - autogenerate renders sqlmodel.sql.sqltypes types
from alembic import op
from fractional_indexing import generate_n_keys_between

revision: str = '0010_task_tree'
down_revision: str | None = '0009_labels'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_POSITION = sa.String(length=255).with_variant(sa.String(length=255, collation='C'), 'postgresql')
_NEW_COLUMNS = ('recurrence_start', 'recurrence', 'due_timezone', 'position', 'parent_id')


def upgrade() -> None:
    # SQLite cannot add a named foreign key to a table: `tasks` is rebuilt there (no expression index lives on it,
    # unlike 0005's pinned_projects, so the rebuild keeps every index and constraint). PostgreSQL adds in place.
    if op.get_bind().dialect.name == 'sqlite':
        # The rebuild also makes the id AUTOINCREMENT: a deleted task's id is never given again (as on PostgreSQL).
        with _quiet_reflection(), op.batch_alter_table(
            'tasks', recreate='always', table_kwargs={'sqlite_autoincrement': True}
        ) as batch:
            batch.add_column(sa.Column('parent_id', sa.Integer(), nullable=True))
            batch.create_foreign_key(op.f('fk_tasks_parent_id_tasks'), 'tasks', ['parent_id'], ['id'],
                                     ondelete='CASCADE')
    else:
        op.add_column('tasks', sa.Column('parent_id', sa.Integer(), sa.ForeignKey(
            'tasks.id', name=op.f('fk_tasks_parent_id_tasks'), ondelete='CASCADE'), nullable=True))
    op.add_column('tasks', sa.Column('position', _POSITION, server_default='', nullable=False))
    op.add_column('tasks', sa.Column('due_timezone', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True))
    op.add_column('tasks', sa.Column('recurrence', sqlmodel.sql.sqltypes.AutoString(length=500), nullable=True))
    op.add_column('tasks', sa.Column('recurrence_start', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))
    op.create_index('ix_tasks_parent_id', 'tasks', ['parent_id'], unique=False)
    op.create_index('ix_tasks_user_id_project_id_parent_id_position', 'tasks',
                    ['user_id', 'project_id', 'parent_id', 'position'], unique=False)
    op.create_table('task_completions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('task_id', sa.Integer(), nullable=False),
    sa.Column('completed_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('due_date', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(['task_id'], ['tasks.id'], name=op.f('fk_task_completions_task_id_tasks'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_task_completions'))
    )
    op.create_index('ix_task_completions_task_id_completed_at', 'task_completions',
                    ['task_id', 'completed_at', 'id'], unique=False)
    _number_existing_tasks()


@contextlib.contextmanager
def _quiet_reflection() -> Iterator[None]:
    """The rebuild reflects the tables `tasks` refers to: pinned_projects' expression index (which the rebuild
    does not touch) cannot be reflected, and SQLAlchemy would say so on every migration."""
    with warnings.catch_warnings():
        warnings.filterwarnings('ignore', message='Skipped unsupported reflection of expression-based index')
        yield


def _number_existing_tasks() -> None:
    """Existing tasks get positions in the order they were created, per owner and project (all are top-level)."""
    bind = op.get_bind()
    tasks = sa.table('tasks', sa.column('id'), sa.column('user_id'), sa.column('project_id'),
                     sa.column('created_at'), sa.column('position'))
    rows = bind.execute(sa.select(tasks.c.id, tasks.c.user_id, tasks.c.project_id)
                        .order_by(tasks.c.user_id, tasks.c.project_id, tasks.c.created_at, tasks.c.id)).all()
    groups: dict[tuple[str, int | None], list[int]] = {}
    for task_id, user_id, project_id in rows:
        groups.setdefault((user_id, project_id), []).append(task_id)
    update = tasks.update().where(tasks.c.id == sa.bindparam('task_id')).values(position=sa.bindparam('key'))
    for ids in groups.values():
        keys = generate_n_keys_between(None, None, len(ids))
        bind.execute(update, [{'task_id': task_id, 'key': key} for task_id, key in zip(ids, keys, strict=True)])


def downgrade() -> None:
    op.drop_index('ix_task_completions_task_id_completed_at', table_name='task_completions')
    op.drop_table('task_completions')
    op.drop_index('ix_tasks_user_id_project_id_parent_id_position', table_name='tasks')
    op.drop_index('ix_tasks_parent_id', table_name='tasks')
    if op.get_bind().dialect.name == 'postgresql':
        op.drop_constraint(op.f('fk_tasks_parent_id_tasks'), 'tasks', type_='foreignkey')
        for column in _NEW_COLUMNS:
            op.drop_column('tasks', column)
        return
    # SQLite cannot drop a column that a foreign key names: the table is rebuilt without the new columns (no
    # expression index lives on `tasks`, so the rebuild keeps every index and constraint).
    with _quiet_reflection(), op.batch_alter_table('tasks', recreate='always') as batch:
        for column in _NEW_COLUMNS:
            batch.drop_column(column)
