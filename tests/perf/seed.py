"""Benchmark data, written with SQL (`generate_series`), never with thousands of HTTP calls.

Users are inserted with one bcrypt hash (cost 12) computed once, so they can log in through the
API. Access tokens are minted for sessions inserted here with the run's JWT_SECRET: exactly what
a login would have produced, without paying bcrypt for every benchmark user.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import bcrypt
import psycopg
from fractional_indexing import generate_n_keys_between

from backend.migrations.runner import upgrade
from backend.security.tokens import create_access_token, new_refresh_token

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
PASSWORD = "Sturdy-Lantern-42"
WORDS = ("alpha", "report", "invoice", "deploy", "review", "budget", "garden", "meeting", "launch", "refactor")
SEARCH_WORD = "invoice"  # in one title in ten, and in some descriptions: about one task in six matches
PINNERS = 64  # one pin/unpin slot (own user) per load-generator connection, at most 64
LOGIN_USERS = 16
WRITERS = 10  # users sharing the `*_10users` write rows
# Each user's labels (lower case, so `key` = `name`); a task carries 0-3 of them (issue 18).
LABELS = ("work", "home", "urgent", "errand", "reading", "finance", "health", "travel", "ideas", "waiting")
LIST_TASKS = 50  # the list user's top-level tasks: the newest, so the default page is exactly these
# The list user's subtasks (older than every top-level task, so the default page is unchanged): task 1 roots a
# subtree of 30 over three levels below it (3, 9, 18), and tasks 81-90 are one child each of tasks 5, 10 ... 50.
SUBTREE_ROOT = 1
SEARCH_LABEL = LABELS[0]  # the label filter on the 10 000-task user (about one task in six carries it)


def db_url(name: str) -> str:
    return ADMIN_URL.rsplit("/", 1)[0] + "/" + name


def create_database(name: str) -> str:
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    url = db_url(name)
    upgrade(url)
    return url


def drop_database(name: str) -> None:
    with psycopg.connect(ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


_TASKS_SQL = """
INSERT INTO tasks (user_id, title, description, status, priority, completed, created_at, updated_at, completed_at)
SELECT u.id,
       'Task ' || g || ' ' || (%(words)s::text[])[1 + (g %% 10)] || ' ' || md5(g::text || u.id),
       CASE WHEN g %% 3 <> 0 THEN 'Notes for ' || (%(words)s::text[])[1 + ((g / 10) %% 10)] || ' item ' || g END,
       (ARRAY['pending','in_progress','completed'])[1 + (g %% 3)],
       (ARRAY['low','medium','high'])[1 + ((g / 3) %% 3)],
       g %% 3 = 2,
       now() - make_interval(mins => g),
       now() - make_interval(mins => g),
       CASE WHEN g %% 3 = 2 THEN now() - make_interval(mins => g) END
FROM users u CROSS JOIN generate_series(%(first)s::int, %(last)s::int) AS g
WHERE u.id = ANY(%(users)s)
"""


def insert_users(conn: psycopg.Connection, ids: list[str], hashed: str) -> None:
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO users (id, email, full_name, hashed_password, is_active, auth_provider,"
            " created_at, updated_at) SELECT i, i || '@perf.example.com', 'Perf ' || i, %s, true, 'local',"
            " now(), now() FROM unnest(%s::text[]) i",
            (hashed, ids),
        )


def insert_tasks(conn: psycopg.Connection, users: list[str], first: int, last: int) -> None:
    """Tasks number `first`..`last` for each user (titles carry one of WORDS, one in ten `invoice`)."""
    conn.execute(_TASKS_SQL, {"words": list(WORDS), "first": first, "last": last, "users": users})


_TASK_LABELS_SQL = """
INSERT INTO task_labels (task_id, label_id, position)
SELECT t.id, l.id, k
FROM (SELECT id, user_id, hashtext(id::text) & 2147483647 AS h
      FROM tasks WHERE user_id = ANY(%(users)s) AND id > %(after)s) t
CROSS JOIN LATERAL generate_series(0, (t.h %% 4) - 1) AS k
JOIN labels l ON l.user_id = t.user_id AND l.key = (%(labels)s::text[])[1 + ((t.h / 4 + 3 * k) %% 10)]
"""


def max_task_id(conn: psycopg.Connection) -> int:
    return int(conn.execute("SELECT coalesce(max(id), 0) FROM tasks").fetchone()[0])  # type: ignore[index]


def insert_labels(conn: psycopg.Connection, users: list[str]) -> None:
    """The ten LABELS for each user."""
    conn.execute(
        "INSERT INTO labels (user_id, name, key)"
        " SELECT u, n, n FROM unnest(%s::text[]) u CROSS JOIN unnest(%s::text[]) n",
        (users, list(LABELS)),
    )


def label_tasks(conn: psycopg.Connection, users: list[str], after: int = 0) -> None:
    """Every task of `users` with an id above `after` gets 0-3 distinct labels of its owner's, in one INSERT:
    with h a hash of the id (ids alone would give every scale user's tasks the same labels: they are inserted
    interleaved), `h % 4` labels, numbers `(h / 4 + 3 k) % 10` (distinct: 3k mod 10 differs for k < 3)."""
    conn.execute(_TASK_LABELS_SQL, {"labels": list(LABELS), "users": users, "after": after})


def number_positions(conn: psycopg.Connection, users: list[str]) -> None:
    """Fractional-indexing keys per sibling group (owner, project, parent), in the order tasks were created,
    as revision 0010 numbers existing tasks; one UPDATE for all."""
    groups: dict[tuple[str, int | None, int | None], list[int]] = {}
    rows = conn.execute(
        "SELECT id, user_id, project_id, parent_id FROM tasks WHERE user_id = ANY(%s) ORDER BY created_at, id",
        (users,),
    ).fetchall()
    for task_id, user, project, parent in rows:
        groups.setdefault((user, project, parent), []).append(task_id)
    ids: list[int] = []
    keys: list[str] = []
    for members in groups.values():
        ids.extend(members)
        keys.extend(generate_n_keys_between(None, None, len(members)))
    conn.execute(
        "UPDATE tasks SET position = m.key FROM unnest(%s::int[], %s::text[]) AS m(id, key) WHERE tasks.id = m.id",
        (ids, keys),
    )


def subtree_parents() -> dict[int, int]:
    """Task number -> its parent's number, for the list user's subtasks (see SUBTREE_ROOT)."""
    parents = {g: SUBTREE_ROOT for g in range(51, 54)}  # level 1: 3
    parents |= {g: 51 + (g - 54) // 3 for g in range(54, 63)}  # level 2: 9
    parents |= {g: 54 + (g - 63) // 2 for g in range(63, 81)}  # level 3: 18
    parents |= {g: 5 * (g - 80) for g in range(81, 91)}  # scattered: one child of each of tasks 5, 10 ... 50
    return parents


def shape_list_user(conn: psycopg.Connection, user: str) -> dict[int, int]:
    """The list user's subtasks, positions, due dates in a zone, recurring tasks with past completions and labels;
    returns task number -> id."""
    number = {
        g: task_id
        for task_id, g in conn.execute(
            "SELECT id, split_part(title, ' ', 2)::int FROM tasks WHERE user_id = %s", (user,)
        ).fetchall()
    }
    parents = subtree_parents()
    conn.execute(
        "UPDATE tasks SET parent_id = m.parent FROM unnest(%s::int[], %s::int[]) AS m(id, parent)"
        " WHERE tasks.id = m.id",
        ([number[g] for g in parents], [number[p] for p in parents.values()]),
    )
    # One task in five is due in a time zone; one in ten of all recurs weekly (its due date is the anchor).
    conn.execute(
        "UPDATE tasks SET due_date = date_trunc('day', now()) + make_interval(days => id %% 30, hours => 9),"
        " due_timezone = 'Europe/Berlin' WHERE user_id = %s AND id %% 5 = 0",
        (user,),
    )
    conn.execute(
        "UPDATE tasks SET recurrence = 'FREQ=WEEKLY;BYDAY=MO', recurrence_start = due_date, status = 'pending',"
        " completed = false, completed_at = NULL WHERE user_id = %s AND id %% 10 = 0",
        (user,),
    )
    conn.execute(
        "INSERT INTO task_completions (task_id, completed_at, due_date)"
        " SELECT t.id, t.due_date - make_interval(weeks => w), t.due_date - make_interval(weeks => w)"
        " FROM tasks t CROSS JOIN generate_series(1, 3) w WHERE t.user_id = %s AND t.recurrence IS NOT NULL",
        (user,),
    )
    insert_labels(conn, [user])
    label_tasks(conn, [user])
    return number


_CHANGES_SQL = """
INSERT INTO changes (user_id, type, item_id, seq, op, version, changed_at)
SELECT i.user_id, i.type, i.item_id,
       u.change_seq + ROW_NUMBER() OVER (PARTITION BY i.user_id ORDER BY i.kind, i.item_id), 'upsert', i.version,
       i.changed_at
FROM (SELECT user_id, 'task' AS type, id AS item_id, version, updated_at AS changed_at, 0 AS kind FROM tasks
      UNION ALL
      SELECT user_id, 'project', id, version, last_updated, 1 FROM pinned_projects WHERE is_active) AS i
JOIN users u ON u.id = i.user_id
WHERE u.id = ANY(%(users)s) AND NOT EXISTS (
  SELECT 1 FROM changes c WHERE c.user_id = i.user_id AND c.type = i.type AND c.item_id = i.item_id)
"""


def record_changes(conn: psycopg.Connection, users: list[str]) -> None:
    """The change feed's rows for items inserted here with SQL, as revision 0011 backfills them: one upsert per task
    and active pin without one, numbered on from the user's `change_seq` (tasks by id, then projects by id), and
    `users.change_seq` the last of them."""
    conn.execute(_CHANGES_SQL, {"users": users})
    conn.execute(
        "UPDATE users SET change_seq = (SELECT coalesce(max(seq), 0) FROM changes WHERE changes.user_id = users.id)"
        " WHERE id = ANY(%s)",
        (users,),
    )


def password_hash() -> str:
    return bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=12)).decode()


@dataclass
class Dataset:
    url: str
    secret: str
    list_user: str = "perf-list"  # 50 top-level tasks, 40 subtasks, labels (shape_list_user)
    write_user: str = "perf-write"  # 1 000 tasks: create, update, complete
    # 100 tasks each: the same writes spread over several users (one user's writes queue on its row, by design)
    writers: list[str] = field(default_factory=lambda: [f"perf-writer-{i:02d}" for i in range(WRITERS)])
    search_user: str = "perf-search"  # 10 000 tasks, labelled as label_tasks does
    pins_user: str = "perf-pins"  # 50 pins
    pinners: list[str] = field(default_factory=lambda: [f"perf-pinner-{i:02d}" for i in range(PINNERS)])
    login_users: list[str] = field(default_factory=lambda: [f"perf-login-{i:02d}" for i in range(LOGIN_USERS)])
    task_ids: dict[str, list[int]] = field(default_factory=dict)
    subtree_root: int = 0  # the list user's task with 30 subtasks under it
    label_counts: Counter[str] = field(default_factory=Counter)  # the list user's tasks carrying each label
    pair_counts: Counter[tuple[str, str]] = field(default_factory=Counter)  # ... carrying both of two labels
    search_label_count: int = 0  # the search user's tasks carrying SEARCH_LABEL
    feed_seq: int = 0  # the search user's users.change_seq after seeding: the head of its change feed

    @property
    def list_label(self) -> str:
        """The list user's most used label (the `label` scenario)."""
        return self.label_counts.most_common(1)[0][0]

    @property
    def list_pair(self) -> tuple[str, str]:
        """The two labels the list user's tasks carry together most often (the `labels2` scenario)."""
        return self.pair_counts.most_common(1)[0][0]

    def email(self, user_id: str) -> str:
        return f"{user_id}@perf.example.com"

    def token(self, user_id: str) -> str:
        """A fresh access token for a new session of `user_id` (30 minutes, the longest allowed)."""
        session_id = self.new_sessions([user_id])[0][0]
        token, _ = create_access_token(secret=self.secret, user_id=user_id, session_id=session_id, minutes=30)
        return token

    def new_sessions(self, users: list[str]) -> list[tuple[str, str]]:
        """One live session per user: (session id, refresh token)."""
        now = datetime.now(UTC)
        rows = []
        with psycopg.connect(self.url) as conn, conn.cursor() as cur:
            for user in users:
                sid = "perfsess" + new_refresh_token()[1][:24]
                refresh, refresh_hash = new_refresh_token()
                cur.execute(
                    "INSERT INTO sessions (id, user_id, created_at, expires_at) VALUES (%s, %s, %s, %s)",
                    (sid, user, now, now + timedelta(days=1)),
                )
                cur.execute(
                    "INSERT INTO refresh_tokens (token_hash, session_id, created_at) VALUES (%s, %s, %s)",
                    (refresh_hash, sid, now),
                )
                rows.append((sid, refresh))
        return rows

    def reset_pinners(self) -> None:
        """No pinner has an active pin: every pin/unpin cycle starts with a pin."""
        with psycopg.connect(self.url) as conn:
            conn.execute("UPDATE pinned_projects SET is_active = false WHERE user_id = ANY(%s)", (self.pinners,))


def seed_main(url: str, secret: str) -> tuple[Dataset, float]:
    """The scenario data; returns it and the seconds it took."""
    started = time.perf_counter()
    data = Dataset(url=url, secret=secret)
    hashed = password_hash()
    with psycopg.connect(url) as conn:
        users = [data.list_user, data.write_user, data.search_user, data.pins_user, *data.pinners, *data.login_users]
        users += data.writers
        insert_users(conn, users, hashed)
        insert_tasks(conn, [data.list_user], 1, LIST_TASKS + len(subtree_parents()))
        data.subtree_root = shape_list_user(conn, data.list_user)[SUBTREE_ROOT]
        insert_tasks(conn, [data.write_user], 1, 1_000)
        insert_tasks(conn, data.writers, 1, 100)
        insert_tasks(conn, [data.search_user], 1, 10_000)
        insert_labels(conn, [data.search_user])
        label_tasks(conn, [data.search_user])
        data.search_label_count = int(
            conn.execute(  # type: ignore[index]
                "SELECT count(*) FROM task_labels tl JOIN labels l ON l.id = tl.label_id"
                " WHERE l.user_id = %s AND l.key = %s",
                (data.search_user, SEARCH_LABEL),
            ).fetchone()[0]
        )
        conn.execute(
            "INSERT INTO pinned_projects (user_id, github_repo_name, github_repo_url, display_name, description,"
            " position, is_active, pinned_at, last_updated)"
            " SELECT %(u)s, 'perf-owner/repo-' || g, 'https://github.com/perf-owner/repo-' || g, 'Repo ' || g,"
            " 'A pinned repository', g, true, now(), now() FROM generate_series(0, 49) g",
            {"u": data.pins_user},
        )
        for user in (data.list_user, data.write_user, *data.writers):
            rows = conn.execute("SELECT id FROM tasks WHERE user_id = %s ORDER BY id", (user,)).fetchall()
            data.task_ids[user] = [row[0] for row in rows]
        number_positions(conn, [data.list_user, data.write_user, data.search_user, *data.writers])
        carried: dict[int, list[str]] = {}
        for task_id, name in conn.execute(
            "SELECT tl.task_id, l.name FROM task_labels tl JOIN labels l ON l.id = tl.label_id"
            " WHERE l.user_id = %s ORDER BY tl.task_id, l.name",
            (data.list_user,),
        ).fetchall():
            carried.setdefault(task_id, []).append(name)
        for names in carried.values():
            data.label_counts.update(names)
            data.pair_counts.update((a, b) for i, a in enumerate(names) for b in names[i + 1 :])
        record_changes(conn, users)
        data.feed_seq = int(
            conn.execute("SELECT change_seq FROM users WHERE id = %s", (data.search_user,)).fetchone()[0]  # type: ignore[index]
        )
    # VACUUM, not only ANALYZE: the database as autovacuum keeps it (the test server runs with autovacuum off). A GIN
    # index's statistics are written when it is built (by the migration, on the empty table) and by VACUUM only;
    # left at the empty table's, the planner invents them and costs the search's trigram scans (revision 0008) above
    # a sequential scan of the whole table, which tests both ILIKEs on every row (specs/performance.md, "Search").
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    return data, time.perf_counter() - started


SCALE_USERS = 1_000


def seed_scale(url: str, secret: str, per_user_from: int, per_user_to: int) -> float:
    """Grow every scale user's tasks to `per_user_to` (1 000 users), each labelled as `label_tasks` does; returns
    seconds spent (incl. ANALYZE)."""
    started = time.perf_counter()
    users = [f"perf-scale-{i:04d}" for i in range(SCALE_USERS)]
    with psycopg.connect(url) as conn:
        if per_user_from == 0:
            insert_users(conn, users, password_hash())
            insert_labels(conn, users)
        after = max_task_id(conn)
        insert_tasks(conn, users, per_user_from + 1, per_user_to)
        label_tasks(conn, users, after)  # the new tasks only
        conn.commit()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE tasks, labels, task_labels")
    return time.perf_counter() - started
