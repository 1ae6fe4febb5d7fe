"""canonical emails: stored as backend/models/emails.py normalises them, unique on the column itself

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29
"""

import logging
from collections import defaultdict
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel  # noqa: F401 - autogenerate renders sqlmodel.sql.sqltypes types
from alembic import op

from backend.logging_setup import mask_email
from backend.migrations import MigrationRefused
from backend.models.emails import MAX_EMAIL_LENGTH, canonical_email

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

log = logging.getLogger("taskdeck.migrations")

USERS = sa.table('users', sa.column('id', sa.String), sa.column('email', sa.String))


def upgrade() -> None:
    connection = op.get_bind()
    rows = connection.execute(sa.select(USERS.c.id, USERS.c.email).order_by(USERS.c.id)).all()
    by_canonical: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for user_id, email in rows:
        by_canonical[canonical_email(email)].append((user_id, email))
    collisions = [accounts for accounts in by_canonical.values() if len(accounts) > 1]
    if collisions:
        for accounts in collisions:
            log.error("revision 0006: accounts would share one email once normalised: %s",
                      ", ".join(f"{user_id} ({mask_email(email)})" for user_id, email in accounts))
        groups = "; ".join(", ".join(user_id for user_id, _ in accounts) for accounts in collisions)
        raise MigrationRefused(
            f"revision 0006 refused: {len(collisions)} group(s) of accounts would share one email address once "
            f"normalised (user ids: {groups}). Nothing was changed and no account is merged: give all but one "
            "account of each group another email address, then migrate again."
        )
    too_long = [user_id for canonical, accounts in by_canonical.items() if len(canonical) > MAX_EMAIL_LENGTH
                for user_id, _ in accounts]
    if too_long:
        raise MigrationRefused(
            f"revision 0006 refused: the email of user(s) {', '.join(too_long)} is longer than {MAX_EMAIL_LENGTH} "
            "characters once normalised. Nothing was changed: give them a shorter address, then migrate again."
        )
    # The old index first: it compared the database's lower(), which need not agree with the new forms.
    op.drop_index('uq_users_email_lower', table_name='users')
    for canonical, [(user_id, email)] in by_canonical.items():
        if canonical != email:
            connection.execute(sa.update(USERS).where(USERS.c.id == user_id).values(email=canonical))
    op.create_index('uq_users_email', 'users', ['email'], unique=True)


def downgrade() -> None:
    # The emails stay canonical: every canonical form is a valid address under the old rules too.
    op.drop_index('uq_users_email', table_name='users')
    op.create_index('uq_users_email_lower', 'users', [sa.text('lower(email)')], unique=True)
