"""Benchmark data, written with SQL (`generate_series`), never with thousands of HTTP calls.

Users are inserted with one bcrypt hash (cost 12) computed once, so they can log in through the
API. Access tokens are minted for sessions inserted here with the run's JWT_SECRET: exactly what
a login would have produced, without paying bcrypt for every benchmark user.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import bcrypt
import psycopg

from backend.migrations.runner import upgrade
from backend.security.tokens import create_access_token, new_refresh_token

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
PASSWORD = "Sturdy-Lantern-42"
WORDS = ("alpha", "report", "invoice", "deploy", "review", "budget", "garden", "meeting", "launch", "refactor")
SEARCH_WORD = "invoice"  # in one title in ten, and in some descriptions: about one task in six matches
PINNERS = 64  # one pin/unpin slot (own user) per load-generator connection, at most 64
LOGIN_USERS = 16


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


def password_hash() -> str:
    return bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=12)).decode()


@dataclass
class Dataset:
    url: str
    secret: str
    list_user: str = "perf-list"  # 50 tasks
    write_user: str = "perf-write"  # 1 000 tasks: create, update, complete
    search_user: str = "perf-search"  # 10 000 tasks
    pins_user: str = "perf-pins"  # 50 pins
    pinners: list[str] = field(default_factory=lambda: [f"perf-pinner-{i:02d}" for i in range(PINNERS)])
    login_users: list[str] = field(default_factory=lambda: [f"perf-login-{i:02d}" for i in range(LOGIN_USERS)])
    task_ids: dict[str, list[int]] = field(default_factory=dict)

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
        insert_users(
            conn,
            [data.list_user, data.write_user, data.search_user, data.pins_user, *data.pinners, *data.login_users],
            hashed,
        )
        insert_tasks(conn, [data.list_user], 1, 50)
        insert_tasks(conn, [data.write_user], 1, 1_000)
        insert_tasks(conn, [data.search_user], 1, 10_000)
        conn.execute(
            "INSERT INTO pinned_projects (user_id, github_repo_name, github_repo_url, display_name, description,"
            " position, is_active, pinned_at, last_updated)"
            " SELECT %(u)s, 'perf-owner/repo-' || g, 'https://github.com/perf-owner/repo-' || g, 'Repo ' || g,"
            " 'A pinned repository', g, true, now(), now() FROM generate_series(0, 49) g",
            {"u": data.pins_user},
        )
        for user in (data.list_user, data.write_user):
            rows = conn.execute("SELECT id FROM tasks WHERE user_id = %s ORDER BY id", (user,)).fetchall()
            data.task_ids[user] = [row[0] for row in rows]
        conn.execute("ANALYZE")
    return data, time.perf_counter() - started


SCALE_USERS = 1_000


def seed_scale(url: str, secret: str, per_user_from: int, per_user_to: int) -> float:
    """Grow every scale user's tasks to `per_user_to` (1 000 users); returns seconds spent (incl. ANALYZE)."""
    started = time.perf_counter()
    users = [f"perf-scale-{i:04d}" for i in range(SCALE_USERS)]
    with psycopg.connect(url) as conn:
        if per_user_from == 0:
            insert_users(conn, users, password_hash())
        insert_tasks(conn, users, per_user_from + 1, per_user_to)
        conn.commit()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE tasks")
    return time.perf_counter() - started
