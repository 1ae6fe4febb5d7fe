"""sync run leases: the instance running a run, until when, and how often it was taken over

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel  # noqa: F401 - autogenerate renders sqlmodel.sql.sqltypes types
from alembic import op

revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain ADD COLUMN, never a batch rebuild (SQLite would lose the partial index uq_sync_runs_project_id_active).
    # No new index: the takeover query reads the active runs through ix_sync_runs_status, and they are few.
    # Runs active at upgrade time get no owner: the first sweep takes them over, as start-up recovery used to.
    op.add_column('sync_runs', sa.Column('lease_owner', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True))
    op.add_column('sync_runs', sa.Column('lease_expires_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))
    op.add_column('sync_runs', sa.Column('lease_takeovers', sa.Integer(), server_default='0', nullable=False))


def downgrade() -> None:
    for column in ('lease_takeovers', 'lease_expires_at', 'lease_owner'):
        op.drop_column('sync_runs', column)  # SQLite >= 3.35 drops a plain column in place
