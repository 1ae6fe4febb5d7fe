"""The schema's migrations (runner.py drives alembic). This package itself imports nothing: a server started
with AUTO_MIGRATE=false never loads alembic (specs/performance.md, RSS)."""


class MigrationRefused(Exception):
    """A migration found data it will not change on its own; the message says what to do. Nothing was applied."""
