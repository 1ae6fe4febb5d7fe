"""The change feed's page on PostgreSQL, in the benchmark's shape: one user owns most of `tasks`.

The benchmark's search user has 10 000 of the table's ~12 000 tasks and a change per task. There the planner
costs a sequential scan of the owner's tasks (almost the whole table) below 200 primary-key probes, and a plain
outer join of the page to `tasks` became a hash join over every task of the owner. The full-size figures come
from the benchmark in tests/perf (specs/performance.md).
"""

import psycopg
import pytest
from sqlalchemy.dialects import postgresql

from backend.services.feed import page_query
from tests.support import plan_nodes, plans_database

OWNER = "feed_owner"  # 10 000 tasks, one change each
OTHER = "feed_other"  # 2 000 tasks


@pytest.fixture(scope="module")
def seeded(pg_database):
    with plans_database(pg_database, "_feed_plans") as url:
        with psycopg.connect(url, autocommit=True) as conn:
            for user, count in ((OWNER, 10_000), (OTHER, 2_000)):
                conn.execute(
                    "INSERT INTO users (id, email, is_active, auth_provider, created_at, updated_at) "
                    "VALUES (%s, %s, true, 'local', now(), now())",
                    (user, f"{user}@example.com"),
                )
                conn.execute(
                    "INSERT INTO tasks (user_id, title, description, status, priority, completed, created_at, "
                    "updated_at) SELECT %s, 'Task ' || g || ' ' || md5(g::text), 'notes ' || g, 'pending', 'low', "
                    "false, now() - g * interval '1 minute', now() FROM generate_series(1, %s) g",
                    (user, count),
                )
                conn.execute(
                    "INSERT INTO changes (user_id, type, item_id, seq, op, version, changed_at) "
                    "SELECT user_id, 'task', id, row_number() OVER (ORDER BY id), 'upsert', version, now() "
                    "FROM tasks WHERE user_id = %s",
                    (user,),
                )
            conn.execute("ANALYZE")
        yield url


@pytest.mark.parametrize("limit", [1, 200, 500])
def test_a_page_reads_its_own_tasks_not_every_task_of_the_owner(seeded, limit):
    """Each change of the page finds its task by primary key: a page of 200 on the benchmark's data was a hash join
    over a sequential scan of the owner's 10 000 tasks, 7.8 ms of PostgreSQL per page instead of 3.0
    (specs/performance.md, "Subtree and feed page")."""
    compiled = page_query(OWNER, 10_000 - limit, limit).compile(dialect=postgresql.psycopg.dialect())
    with psycopg.connect(seeded) as conn:
        (document,) = conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + str(compiled), compiled.params).fetchone()
    plan = document[0]["Plan"]
    read = [node for node in plan_nodes(plan) if node.get("Relation Name") == "tasks"]
    assert read, plan
    assert sum(node["Actual Rows"] * node["Actual Loops"] for node in read) <= limit, plan
    assert all(node.get("Index Name") == "pk_tasks" for node in read), plan
