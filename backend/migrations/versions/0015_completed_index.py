"""tasks: an index of each owner's open and completed tasks by creation, for `completed=` lists and their counts

Revision ID: 0015_completed_index
Revises: 0014_search_text
Create Date: 2026-12-07
"""

from collections.abc import Sequence

from alembic import op

revision: str = '0015_completed_index'
down_revision: str | None = '0014_search_text'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # `completed` was in no index: a `completed=` count read every task of the owner from the heap (1 000 heap
    # blocks for a user with 1 000 tasks in a 1M-row table: specs/performance.md, "Scale run").
    op.create_index('ix_tasks_user_id_completed_created_at', 'tasks', ['user_id', 'completed', 'created_at', 'id'],
                    unique=False)


def downgrade() -> None:
    op.drop_index('ix_tasks_user_id_completed_created_at', table_name='tasks')
