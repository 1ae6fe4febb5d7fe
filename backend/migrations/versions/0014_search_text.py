"""search text: one stored, lowered text of each task (title, line break, description) and its trigram index, for
`q` without lowering every candidate row again, PostgreSQL only

Revision ID: 0014_search_text
Revises: 0013_changes_tombstones
Create Date: 2026-12-07
"""

from collections.abc import Sequence

from alembic import op

revision: str = '0014_search_text'
down_revision: str | None = '0013_changes_tombstones'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# `ILIKE` on a UTF-8 database lowers the pattern and then every candidate row, each time it is tested (PostgreSQL's
# like.c: "in the multi-byte case we don't have much choice"); a plain `LIKE lower(q)` on this column, lowered once
# when the row is written, is the same test (specs/performance.md, "Search, stored lowered text"). The line break
# keeps a match inside one field: the service adds the exact ILIKEs for a text that contains one.
SEARCH_TEXT = "lower(title) || E'\\n' || lower(coalesce(description, ''))"
OWNER_INDEX = 'ix_tasks_user_id_search_trgm'  # with btree_gin (revision 0008)
TABLE_INDEX = 'ix_tasks_search_trgm'  # without it
OLD_OWNER_INDEX = 'ix_tasks_user_id_text_trgm'
OLD_TABLE_INDEXES = {'ix_tasks_title_trgm': 'title', 'ix_tasks_description_trgm': 'description'}


def _has_btree_gin() -> bool:
    bind = op.get_bind()
    return bind.exec_driver_sql("SELECT 1 FROM pg_extension WHERE extname = 'btree_gin'").first() is not None


def upgrade() -> None:
    if op.get_bind().dialect.name != 'postgresql':
        return  # SQLite has no trigram index: `q` reads the owner's rows with both ILIKEs, as before
    # Not a column of the model: nothing writes or answers it, PostgreSQL keeps it (backend/migrations/runner.py
    # leaves it out of the model comparison).
    op.execute(f'ALTER TABLE tasks ADD COLUMN search_text text GENERATED ALWAYS AS ({SEARCH_TEXT}) STORED')
    if _has_btree_gin():
        op.execute(f'CREATE INDEX {OWNER_INDEX} ON tasks USING gin (user_id, search_text gin_trgm_ops)')
    else:
        op.execute(f'CREATE INDEX {TABLE_INDEX} ON tasks USING gin (search_text gin_trgm_ops)')
    op.execute(f'DROP INDEX IF EXISTS {OLD_OWNER_INDEX}')
    for name in OLD_TABLE_INDEXES:
        op.execute(f'DROP INDEX IF EXISTS {name}')


def downgrade() -> None:
    if op.get_bind().dialect.name != 'postgresql':
        return
    if _has_btree_gin():
        op.execute(f'CREATE INDEX IF NOT EXISTS {OLD_OWNER_INDEX} ON tasks USING gin '
                   '(user_id, title gin_trgm_ops, description gin_trgm_ops)')
    else:
        for name, column in OLD_TABLE_INDEXES.items():
            op.execute(f'CREATE INDEX IF NOT EXISTS {name} ON tasks USING gin ({column} gin_trgm_ops)')
    op.execute('ALTER TABLE tasks DROP COLUMN search_text')  # its indexes go with it
