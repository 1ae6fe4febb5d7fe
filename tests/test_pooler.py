"""Behind a transaction-mode pooler (PgBouncer `pool_mode = transaction`, as Neon's `-pooler` host).

A real PgBouncer on its own port in front of the run's PostgreSQL database, an app whose DATABASE_URL
is the pooler and whose MIGRATIONS_DATABASE_URL is the direct connection, and 20 concurrent clients
(5 users) creating, listing and reading tasks: no 5xx, and every read is the caller's own data.
With psycopg's prepared statements on (its default `prepare_threshold`), this gets 500s
(`prepared statement "_pg3_0" already exists` / `does not exist`): the pooler hands the next
transaction another server connection.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import re
import shutil
import subprocess
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from backend.main import create_app
from backend.migrations.runner import upgrade
from tests.conftest import UserCtx, make_settings, make_user
from tests.support import client_for, empty_database, free_port, wait_until

pytestmark = pytest.mark.committing  # concurrent requests on one app, over connections of a pooler

CLIENTS = 20
USERS = 5
ROUNDS = 25  # per client: a create, a get and a list each -> 75 requests, 1 500 in all
TASK_FIELDS = {
    "id",
    "user_id",
    "title",
    "description",
    "status",
    "priority",
    "completed",
    "due_date",
    "project_id",
    "created_at",
    "updated_at",
    "completed_at",
    "parent_id",
    "position",
    "due_timezone",
    "recurrence",
    "version",
    "labels",
}


def pgbouncer_version(binary: str) -> tuple[int, ...]:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10).stdout
    found = re.search(r"PgBouncer (\d+)\.(\d+)", out)
    return tuple(int(part) for part in found.groups()) if found else (0, 0)


@pytest.fixture
def pooler_url(pg_database: str) -> Iterator[str]:
    """A PgBouncer in transaction mode on a free port of 127.0.0.1, in front of the run's database."""
    binary = shutil.which("pgbouncer")
    if binary is None:
        pytest.fail("pgbouncer is not installed: `make test` installs it (apt-get install pgbouncer)", pytrace=False)
    target = conninfo_to_dict(pg_database)
    database, user = str(target["dbname"]), str(target.get("user") or "postgres")
    port = free_port()
    root = Path(tempfile.mkdtemp(prefix="taskdeck-pgbouncer-"))
    # Fewer server connections than the app's pool: every transaction may land on another one.
    settings = [
        f"listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =",
        f"auth_type = trust\nauth_file = {root / 'users.txt'}",
        "pool_mode = transaction\ndefault_pool_size = 4\nmax_client_conn = 200",
        "ignore_startup_parameters = extra_float_digits,options",
        f"logfile = {root / 'pgbouncer.log'}\npidfile = {root / 'pgbouncer.pid'}",
    ]
    if pgbouncer_version(binary) >= (1, 21):
        settings.append("max_prepared_statements = 0")  # the pooler does not track prepared statements
    (root / "users.txt").write_text(f'"{user}" ""\n')
    (root / "pgbouncer.ini").write_text(
        f"[databases]\n{database} = host={target.get('host', '127.0.0.1')} port={target.get('port', 5432)} "
        f"dbname={database} user={user}\n\n[pgbouncer]\n" + "\n".join(settings) + "\n"
    )
    as_postgres: dict[str, Any] = {}
    if os.geteuid() == 0:  # PgBouncer refuses to run as root
        account = pwd.getpwnam("postgres")
        for path in [root, *root.iterdir()]:
            os.chown(path, account.pw_uid, account.pw_gid)
        as_postgres = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
    process = subprocess.Popen(
        [binary, str(root / "pgbouncer.ini")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        **as_postgres,
    )
    url = f"postgresql://{user}@127.0.0.1:{port}/{database}"

    def answers() -> bool:
        if process.poll() is not None:
            return True  # exited: reported below
        with psycopg.connect(url, connect_timeout=2, prepare_threshold=None) as conn:
            return conn.execute("SELECT 1").fetchone() == (1,)

    try:
        wait_until(answers, timeout=20)
        log = root / "pgbouncer.log"
        assert process.poll() is None, f"pgbouncer exited: {log.read_text() if log.exists() else ''}"
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(root, ignore_errors=True)


async def traffic(client: Any, user: UserCtx, tag: str) -> list[str]:
    """ROUNDS of create, get, list; the problems seen (a 5xx, someone else's data, a wrong count)."""
    problems: list[str] = []
    mine: set[int] = set()
    for number in range(ROUNDS):
        title = f"{tag}x{number}"
        created = await client.post(f"/api/{user.id}/tasks", json={"title": title}, headers=user.headers)
        if created.status_code != 201:
            problems.append(f"POST {created.status_code} {created.text[:200]}")
            continue
        task = created.json()["data"]
        mine.add(task["id"])
        got = await client.get(f"/api/{user.id}/tasks/{task['id']}", headers=user.headers)
        if got.status_code != 200:
            problems.append(f"GET {got.status_code} {got.text[:200]}")
        elif got.json()["data"] != task or set(task) != TASK_FIELDS or task["user_id"] != user.id:
            problems.append(f"GET answered {got.text[:200]} for {task}")
        listed = await client.get(f"/api/{user.id}/tasks", params={"q": f"{tag}x", "limit": 100}, headers=user.headers)
        if listed.status_code != 200:
            problems.append(f"LIST {listed.status_code} {listed.text[:200]}")
            continue
        body = listed.json()
        ids = {item["id"] for item in body["data"]}
        if body["meta"]["total"] != len(mine) or ids != mine:
            problems.append(f"LIST answered {sorted(ids)} (total {body['meta']['total']}), wrote {sorted(mine)}")
    return problems


async def test_concurrent_clients_behind_a_transaction_mode_pooler(pooler_url, pg_database, data_dir):
    # A generous pool timeout: a starved CI machine's queue is not what this test is about (a 503 would fail it).
    settings = make_settings(
        pooler_url, data_dir, MIGRATIONS_DATABASE_URL=pg_database, DB_POOL_TIMEOUT=60, LOG_LEVEL="warning"
    )
    assert settings.migrations_database_url == pg_database
    upgrade(settings.migrations_database_url)
    app = create_app(settings)
    try:
        async with app.router.lifespan_context(app), client_for(app) as client:
            users = [await make_user(client) for _ in range(USERS)]
            results = await asyncio.gather(
                *(traffic(client, users[number % USERS], f"c{number:02d}") for number in range(CLIENTS))
            )
    finally:
        empty_database(pg_database)
    problems = [problem for result in results for problem in result]
    kinds = Counter(problem.split(" ", 2)[0] + " " + problem.split(" ", 2)[1] for problem in problems)
    assert not problems, f"{len(problems)} problems in {CLIENTS * ROUNDS * 3} requests {dict(kinds)}: {problems[:5]}"
