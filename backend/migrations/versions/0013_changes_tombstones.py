"""changes: an index of each user's tombstones by time, for the feed's purge probe on every read

Revision ID: 0013_changes_tombstones
Revises: 0012_batch
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0013_changes_tombstones'
down_revision: str | None = '0012_batch'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DELETES = sa.text("op = 'delete'")


def upgrade() -> None:
    op.create_index('ix_changes_user_id_changed_at_deletes', 'changes', ['user_id', 'changed_at'], unique=False,
                    sqlite_where=DELETES, postgresql_where=DELETES)


def downgrade() -> None:
    op.drop_index('ix_changes_user_id_changed_at_deletes', table_name='changes')
