"""The task queries use indexes on PostgreSQL at a size where the planner has a real choice.

300 000 tasks over 1 000 users (300 each), statistics analysed: a sequential scan of `tasks`
would be the planner admitting that an index is missing. The full-size figures (1 000 000
rows) come from the benchmark in tests/perf and are written down in specs/performance.md.
"""

import psycopg
import pytest
from sqlalchemy.dialects import postgresql

from backend.migrations.runner import upgrade
from backend.models.task import TaskSort, TaskStatus
from backend.services.tasks import TaskFilters, count_query, list_query

USER = "user_0042"


@pytest.fixture(scope="module")
def seeded(pg_database):
    """A separate, migrated database (the shared one is emptied after every test)."""
    name = pg_database.rsplit("/", 1)[1] + "_plans"
    admin_url = pg_database.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = pg_database.rsplit("/", 1)[0] + "/" + name
    try:
        upgrade(url)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                "INSERT INTO users (id, email, is_active, auth_provider, created_at, updated_at) "
                "SELECT 'user_' || lpad(g::text, 4, '0'), 'u' || g || '@example.com', true, 'local', now(), now() "
                "FROM generate_series(0, 999) g"
            )
            conn.execute(
                "INSERT INTO tasks (user_id, title, description, status, priority, completed, due_date, "
                "created_at, updated_at) "
                "SELECT 'user_' || lpad((g % 1000)::text, 4, '0'), 'task ' || md5(g::text), "
                "CASE WHEN g % 3 = 0 THEN 'notes ' || md5((g * 7)::text) END, "
                "(ARRAY['pending','in_progress','completed'])[g % 3 + 1], (ARRAY['low','medium','high'])[g % 3 + 1], "
                "g % 3 = 2, now() + (g % 365) * interval '1 day', now() - g * interval '1 second', now() "
                "FROM generate_series(1, 300000) g"
            )
            conn.execute("ANALYZE tasks")
        yield url
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def explain(url: str, statement) -> str:
    compiled = statement.compile(dialect=postgresql.psycopg.dialect())
    with psycopg.connect(url) as conn:
        rows = conn.execute("EXPLAIN " + str(compiled), compiled.params).fetchall()
    return "\n".join(row[0] for row in rows)


@pytest.mark.parametrize(
    ("name", "filters", "sort"),
    [
        ("list", TaskFilters(), TaskSort.CREATED_AT_DESC),
        ("filtered list", TaskFilters(status=TaskStatus.PENDING), TaskSort.CREATED_AT_DESC),
        ("search", TaskFilters(q="abc"), TaskSort.CREATED_AT_DESC),
        ("sorted by due date", TaskFilters(), TaskSort.DUE_DATE),
    ],
)
def test_list_queries_use_indexes(seeded, name, filters, sort):
    plan = explain(seeded, list_query(USER, filters, sort, 50, 0))
    assert "Seq Scan on tasks" not in plan, f"{name}:\n{plan}"
    assert "Index" in plan, f"{name}:\n{plan}"


def test_count_uses_an_index(seeded):
    plan = explain(seeded, count_query(USER, TaskFilters(status=TaskStatus.COMPLETED)))
    assert "Seq Scan on tasks" not in plan, plan


def test_search_across_all_users_uses_the_trigram_index(seeded):
    """Without the owner's index to lean on, only the trigram GIN index avoids a full scan."""
    from sqlalchemy import or_, select

    from backend.models.task import Task
    from backend.services.tasks import like_pattern

    pattern = like_pattern("abcdef")
    statement = select(Task.id).where(
        or_(Task.title.ilike(pattern, escape="\\"), Task.description.ilike(pattern, escape="\\"))
    )
    plan = explain(seeded, statement)
    assert "ix_tasks_title_trgm" in plan, plan
    assert "ix_tasks_description_trgm" in plan, plan
