"""batches: the recorded result of each applied command, answered again when its id comes again (24 h)

Revision ID: 0012_batch
Revises: 0011_changes (to be re-chained onto 0011_changes, the change feed, when both are merged)
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel  # noqa: F401 - autogenerate renders sqlmodel.sql.sqltypes types
from alembic import op

revision: str = '0012_batch'
down_revision: str | None = '0011_changes'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('batch_commands',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('command_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('request_hash', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('result', sa.Text(), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('expires_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_batch_commands_user_id_users'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_batch_commands')),
    sa.UniqueConstraint('user_id', 'command_id', name=op.f('uq_batch_commands_user_id'))
    )
    op.create_index('ix_batch_commands_expires_at', 'batch_commands', ['expires_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_batch_commands_expires_at', table_name='batch_commands')
    op.drop_table('batch_commands')
