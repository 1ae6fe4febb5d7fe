"""owner search index: one GIN index on (user_id, title, description) for `q`, PostgreSQL only

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29
"""

import logging
from collections.abc import Sequence

from alembic import op
from sqlalchemy.exc import DBAPIError

revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

log = logging.getLogger("taskdeck.migrations")

OWNER_INDEX = 'ix_tasks_user_id_text_trgm'
# Revision 0002's whole-table indexes: the planner intersected them with the owner's rows (a bitmap of every
# matching row of every user). Replaced by the owner's index, kept where it cannot be built.
WHOLE_TABLE = {'ix_tasks_title_trgm': 'title', 'ix_tasks_description_trgm': 'description'}


def _btree_gin() -> bool:
    """btree_gin (a trusted extension: the database owner, or any role with CREATE on the database, may create it)
    lets user_id be a key of the trigram GIN index. Refused (no privilege, not installed on the server): False,
    and nothing else of the transaction is lost (a savepoint)."""
    bind = op.get_bind()
    try:
        with bind.begin_nested():
            bind.exec_driver_sql('CREATE EXTENSION IF NOT EXISTS btree_gin')
    except DBAPIError as exc:
        log.warning(
            "revision 0008: CREATE EXTENSION btree_gin refused (%s); %s not created, search keeps the "
            "whole-table trigram indexes: correct, slower on users with many tasks. To add it later: "
            "CREATE EXTENSION btree_gin as a role allowed to, then downgrade to 0007 and migrate again.",
            str(exc.orig).strip().splitlines()[0], OWNER_INDEX,
        )
        return False
    return True


def upgrade() -> None:
    if op.get_bind().dialect.name != 'postgresql':
        return  # SQLite has no trigram index: `q` reads the owner's rows through ix_tasks_user_id_created_at
    if not _btree_gin():
        return
    # One index scan finds the owner's rows containing the text: the user_id key and the trigram keys are
    # intersected inside the index (title and description each an arm of a BitmapOr on the same index).
    op.create_index(OWNER_INDEX, 'tasks', ['user_id', 'title', 'description'], postgresql_using='gin',
                    postgresql_ops={'title': 'gin_trgm_ops', 'description': 'gin_trgm_ops'})
    for name in WHOLE_TABLE:
        op.drop_index(name, table_name='tasks')


def downgrade() -> None:
    if op.get_bind().dialect.name != 'postgresql':
        return
    # The extension stays (dropping it could break what others built on it); the whole-table indexes return
    # unless they were kept.
    op.execute(f'DROP INDEX IF EXISTS {OWNER_INDEX}')
    for name, column in WHOLE_TABLE.items():
        op.execute(f'CREATE INDEX IF NOT EXISTS {name} ON tasks USING gin ({column} gin_trgm_ops)')
