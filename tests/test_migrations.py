"""The models and the migrations agree, and the migrations round-trip, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import MetaData, Table, event, inspect, select, text
from sqlalchemy.engine import Engine

import backend.models  # noqa: F401 - every table on the metadata
from backend.__main__ import main
from backend.config import Settings, load_settings
from backend.db import create_engine, metadata
from backend.migrations import MigrationRefused
from backend.migrations.runner import downgrade, include_object_for, upgrade
from backend.models.common import utcnow
from backend.models.user import User
from tests.conftest import BACKENDS, PG_ADMIN_URL, _pg_conninfo
from tests.support import free_port

pytestmark = pytest.mark.filterwarnings("ignore:.*expression-based index")

TABLES = set(metadata.tables)


@pytest.fixture(params=BACKENDS)
def fresh_url(request, tmp_path) -> Iterator[str]:
    """An empty database of its own, not the run's shared one."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
        return
    name = f"taskdeck_mig_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(_pg_conninfo(PG_ADMIN_URL), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _pg_conninfo(PG_ADMIN_URL, name)
    finally:
        with psycopg.connect(_pg_conninfo(PG_ADMIN_URL), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _inspect(url: str, fn):
    engine = create_engine(url, for_migrations=True)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(fn)
    finally:
        await engine.dispose()


def _diff(connection):
    context = MigrationContext.configure(
        connection, opts={"compare_type": True, "include_object": include_object_for(connection.dialect.name)}
    )
    return compare_metadata(context, metadata)


def _tables(connection) -> set[str]:
    return set(inspect(connection).get_table_names())


def _indexes(connection) -> dict[str, set[str]]:
    inspector = inspect(connection)
    return {table: {ix["name"] for ix in inspector.get_indexes(table)} for table in TABLES}


async def test_autogenerate_finds_nothing(fresh_url):
    upgrade(fresh_url)
    assert await _inspect(fresh_url, _diff) == []


async def test_upgrade_downgrade_upgrade(fresh_url):
    upgrade(fresh_url)
    assert await _inspect(fresh_url, _tables) == TABLES | {"alembic_version"}
    downgrade(fresh_url, "base")
    assert await _inspect(fresh_url, _tables) == {"alembic_version"}
    upgrade(fresh_url)
    assert await _inspect(fresh_url, _tables) == TABLES | {"alembic_version"}
    upgrade(fresh_url)  # nothing pending: a no-op


async def test_email_is_unique_on_the_column_itself(fresh_url):
    """The column holds the canonical form (revision 0006): a plain unique index, no database lower()."""
    upgrade(fresh_url)
    users = await _inspect(fresh_url, lambda connection: inspect(connection).get_indexes("users"))
    assert [(ix["name"], ix["column_names"], bool(ix["unique"])) for ix in users] == [
        ("uq_users_email", ["email"], True)
    ]
    indexes = await _inspect(fresh_url, _indexes)
    assert indexes["sessions"] == {"ix_sessions_user_id"}
    assert indexes["refresh_tokens"] == {"ix_refresh_tokens_session_id"}


# The users table at 0005 (and until 0011, which adds the change feed's columns): head's without them.
USERS = Table(
    "users",
    MetaData(),
    *(column._copy() for column in User.__table__.c if column.name not in {"change_seq", "changes_floor"}),
)
FULLWIDTH_EXAMPLE = "\uff25\uff38\uff21\uff2d\uff30\uff2c\uff25"  # EXAMPLE in fullwidth letters


async def _insert_users(url: str, emails: dict[str, str]) -> None:
    """Rows as revision 0005 let them be stored (a Better-Auth claim verbatim, a local part as typed)."""
    engine = create_engine(url, for_migrations=True)
    now = utcnow()
    try:
        async with engine.begin() as conn:
            for user_id, email in emails.items():
                await conn.execute(
                    USERS.insert().values(
                        id=user_id, email=email, is_active=True, auth_provider="local", created_at=now, updated_at=now
                    )
                )
    finally:
        await engine.dispose()


def _emails(connection) -> dict[str, str]:
    return dict(connection.execute(select(USERS.c.id, USERS.c.email)).all())


def _revision(connection) -> str:
    return str(connection.execute(text("SELECT version_num FROM alembic_version")).scalar_one())


async def test_0006_brings_stored_emails_to_their_canonical_form(fresh_url):
    upgrade(fresh_url, "0005")
    await _insert_users(
        fresh_url,
        {
            "u-fullwidth": f"Bob@{FULLWIDTH_EXAMPLE}.org",
            "u-dotted": "\u0130nci@Example.org",
            "u-plain": "plain@example.org",
        },
    )
    upgrade(fresh_url)
    expected = {"u-fullwidth": "bob@example.org", "u-dotted": "i\u0307nci@example.org", "u-plain": "plain@example.org"}
    assert await _inspect(fresh_url, _emails) == expected
    downgrade(fresh_url, "0005")  # the canonical forms stay: valid under the old index too
    upgrade(fresh_url)
    assert await _inspect(fresh_url, _emails) == expected


@contextmanager
def migration_log() -> Iterator[list[logging.LogRecord]]:
    """The records the migrations log while the block runs."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("taskdeck.migrations")
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


async def test_0006_refuses_a_collision_instead_of_merging_accounts(fresh_url):
    upgrade(fresh_url, "0005")
    # Distinct for the old lower(email) index (fullwidth letters), one address once canonical.
    rows = {"u-first": "carol@example.org", "u-second": f"Carol@{FULLWIDTH_EXAMPLE}.ORG", "u-other": "Dan@example.org"}
    await _insert_users(fresh_url, rows)
    with (
        migration_log() as records,
        pytest.raises(MigrationRefused, match=r"1 group\(s\).*u-first, u-second.*Nothing was changed"),
    ):
        upgrade(fresh_url)
    assert await _inspect(fresh_url, _emails) == rows
    assert await _inspect(fresh_url, _revision) == "0005"
    [record] = records
    assert record.levelno == logging.ERROR
    assert "u-first" in record.getMessage()
    assert "u-second" in record.getMessage()
    assert "carol@" not in record.getMessage().lower()  # masked: no address in the logs


OWNER_SEARCH = "ix_tasks_user_id_text_trgm"  # 0008 to 0013
WHOLE_TABLE_TRGM = {"ix_tasks_title_trgm", "ix_tasks_description_trgm"}  # 0002, and later without btree_gin
OWNER_SEARCH_TEXT = "ix_tasks_user_id_search_trgm"  # 0014


def _trigram_indexes(connection) -> set[str]:
    # Only `tasks`: at an earlier revision later tables (labels, 0009) do not exist yet.
    return {ix["name"] for ix in inspect(connection).get_indexes("tasks") if ix["name"].endswith("_trgm")}


async def test_0008_replaces_the_whole_table_trigram_indexes_by_the_owners(fresh_url):
    upgrade(fresh_url, "0008")
    postgres = fresh_url.startswith("postgresql")
    assert await _inspect(fresh_url, _trigram_indexes) == ({OWNER_SEARCH} if postgres else set())
    downgrade(fresh_url, "0007")
    assert await _inspect(fresh_url, _trigram_indexes) == (WHOLE_TABLE_TRGM if postgres else set())
    upgrade(fresh_url, "0008")
    assert await _inspect(fresh_url, _trigram_indexes) == ({OWNER_SEARCH} if postgres else set())


def _search_text(connection) -> str | None:
    """How PostgreSQL generates `tasks.search_text` (None: no such column)."""
    for column in inspect(connection).get_columns("tasks"):
        if column["name"] == "search_text":
            return str(column.get("computed", {}).get("sqltext"))
    return None


async def test_0014_searches_a_stored_lowered_text_through_the_owners_index(fresh_url):
    upgrade(fresh_url)
    postgres = fresh_url.startswith("postgresql")
    assert await _inspect(fresh_url, _trigram_indexes) == ({OWNER_SEARCH_TEXT} if postgres else set())
    generated = await _inspect(fresh_url, _search_text)
    if postgres:
        assert "lower(" in generated, generated
        assert "description" in generated, generated
    else:
        assert generated is None  # SQLite searches with its ILIKEs, as before
    downgrade(fresh_url, "0013_changes_tombstones")
    assert await _inspect(fresh_url, _search_text) is None
    assert await _inspect(fresh_url, _trigram_indexes) == ({OWNER_SEARCH} if postgres else set())
    upgrade(fresh_url)
    assert await _inspect(fresh_url, _trigram_indexes) == ({OWNER_SEARCH_TEXT} if postgres else set())


@pytest.fixture
def restricted_url() -> Iterator[str]:
    """A database the migrating role may create tables in but not extensions (no CREATE on the database):
    pg_trgm is there (installed by the administrator), btree_gin is not."""
    suffix = uuid.uuid4().hex[:10]
    name, role = f"taskdeck_mig_{suffix}", f"taskdeck_noext_{suffix}"
    with psycopg.connect(_pg_conninfo(PG_ADMIN_URL), autocommit=True) as admin:
        admin.execute(f'CREATE ROLE "{role}" LOGIN')
        admin.execute(f'CREATE DATABASE "{name}"')
    with psycopg.connect(_pg_conninfo(PG_ADMIN_URL, name), autocommit=True) as admin:
        admin.execute("CREATE EXTENSION pg_trgm")
        admin.execute(f'GRANT CREATE ON SCHEMA public TO "{role}"')
    url = _pg_conninfo(PG_ADMIN_URL, name).replace("://postgres@", f"://{role}@", 1)
    try:
        yield url
    finally:
        with psycopg.connect(_pg_conninfo(PG_ADMIN_URL), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.execute(f'DROP ROLE IF EXISTS "{role}"')


@pytest.mark.skipif("postgresql" not in BACKENDS, reason="TEST_BACKENDS leaves PostgreSQL out")
async def test_0008_without_btree_gin_keeps_the_whole_table_indexes(restricted_url):
    with migration_log() as records:
        upgrade(restricted_url, "0008")  # refused extension: the revision still applies, without its index
    assert await _inspect(restricted_url, _revision) == "0008"
    assert await _inspect(restricted_url, _trigram_indexes) == WHOLE_TABLE_TRGM
    [record] = records
    assert record.levelno == logging.WARNING
    assert "btree_gin" in record.getMessage()
    assert "permission denied" in record.getMessage()
    with psycopg.connect(restricted_url) as conn:
        assert conn.execute("SELECT count(*) FROM pg_extension WHERE extname = 'btree_gin'").fetchone() == (0,)
    upgrade(restricted_url)  # 0014 without btree_gin: one whole-table index of the stored text replaces both
    assert await _inspect(restricted_url, _trigram_indexes) == {"ix_tasks_search_trgm"}
    downgrade(restricted_url, "0013_changes_tombstones")
    assert await _inspect(restricted_url, _trigram_indexes) == WHOLE_TABLE_TRGM
    downgrade(restricted_url, "base")
    assert await _inspect(restricted_url, _tables) == {"alembic_version"}


def test_a_failing_migration_is_reported(tmp_path):
    with pytest.raises(Exception, match="nope"):
        upgrade(f"sqlite:///{tmp_path / 'x.db'}", "nope")


def test_instances_migrating_at_once_are_safe(fresh_url, tmp_path):
    """Several `serve`s starting together: one migrates, the others wait (advisory lock / write lock)."""
    root = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k not in Settings.model_fields}
    env |= {"DATABASE_URL": fresh_url, "DATA_DIR": str(tmp_path)}
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "backend", "migrate"],
            cwd=root,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(4)
    ]
    outputs = [process.communicate(timeout=120)[0] for process in processes]
    assert [process.returncode for process in processes] == [0] * 4, outputs
    assert asyncio.run(_inspect(fresh_url, _tables)) == TABLES | {"alembic_version"}


def test_an_upgrade_is_one_transaction(fresh_url):
    """Every revision in one transaction, committed once. On SQLite, Alembic (no transactional DDL) would
    commit after each revision, and a second instance waiting for the write lock would start from the
    first one's half-way version and create the same tables again ("table tasks already exists")."""
    commits: list[str] = []

    def count(conn) -> None:
        commits.append(conn.engine.url.drivername)

    event.listen(Engine, "commit", count)
    try:
        upgrade(fresh_url)
    finally:
        event.remove(Engine, "commit", count)
    assert len(commits) == 1, commits


class TestMigrationsDatabaseUrl:
    """MIGRATIONS_DATABASE_URL: migrations over a direct connection while the app's DATABASE_URL is a pooler.

    DATABASE_URL here is a port nothing listens on: migrating over it would fail.
    """

    @pytest.fixture(autouse=True)
    def environment(self, tmp_path, monkeypatch) -> Path:
        monkeypatch.chdir(tmp_path)  # no developer's `.env`
        for name in Settings.model_fields:
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("DATABASE_URL", f"postgresql://postgres@127.0.0.1:{free_port()}/nowhere")
        monkeypatch.setenv("DB_CONNECT_TIMEOUT", "1")
        monkeypatch.setenv("MIGRATIONS_DATABASE_URL", f"sqlite:///{tmp_path / 'direct.db'}")
        monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
        return tmp_path / "direct.db"

    def test_migrate_runs_over_it(self, environment):
        assert main(["migrate"]) == 0
        assert asyncio.run(_inspect(f"sqlite:///{environment}", _tables)) == TABLES | {"alembic_version"}

    def test_serve_auto_migrate_runs_over_it(self, environment, monkeypatch):
        import uvicorn

        monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: None)
        assert main(["serve"]) == 0
        assert asyncio.run(_inspect(f"sqlite:///{environment}", _tables)) == TABLES | {"alembic_version"}

    def test_alembic_by_hand_runs_over_it(self, environment):
        root = Path(__file__).resolve().parents[1]
        done = subprocess.run(
            [sys.executable, "-m", "alembic", "-c", str(root / "backend/migrations/alembic.ini"), "upgrade", "head"],
            cwd=root,
            env=dict(os.environ),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        assert asyncio.run(_inspect(f"sqlite:///{environment}", _tables)) == TABLES | {"alembic_version"}

    def test_defaults_to_database_url(self, monkeypatch):
        monkeypatch.delenv("MIGRATIONS_DATABASE_URL")
        assert load_settings().migrations_database_url == os.environ["DATABASE_URL"]
        assert load_settings(MIGRATIONS_DATABASE_URL="").migrations_database_url == os.environ["DATABASE_URL"]


async def _insert_tasks_at_0009(url: str) -> None:
    """Tasks as revision 0009 stores them: two owners' groups (no project), one labelled."""
    engine = create_engine(url, for_migrations=True)
    now = utcnow()
    columns = "user_id, title, status, priority, completed, created_at, updated_at, version"
    try:
        async with engine.begin() as conn:
            for n, (owner, title) in enumerate(
                [("u-a", "first"), ("u-b", "other"), ("u-a", "second"), ("u-a", "third")]
            ):
                await conn.execute(
                    text(
                        f"INSERT INTO tasks (id, {columns}) VALUES (:id, :owner, :title, 'pending', 'medium', "
                        "false, :at, :at, 1)"
                    ),
                    {"id": n + 1, "owner": owner, "title": title, "at": now.replace(microsecond=n)},
                )
            await conn.execute(text("INSERT INTO labels (id, user_id, name, key) VALUES (1, 'u-a', 'Work', 'work')"))
            await conn.execute(text("INSERT INTO task_labels (task_id, label_id, position) VALUES (3, 1, 0)"))
    finally:
        await engine.dispose()


def _tasks_after_0010(connection) -> dict[str, Any]:
    rows = connection.execute(text("SELECT id, user_id, title, position, parent_id FROM tasks ORDER BY id")).all()
    links = connection.execute(text("SELECT task_id, label_id FROM task_labels")).all()
    return {"rows": [tuple(row) for row in rows], "links": [tuple(link) for link in links]}


async def test_0010_numbers_existing_tasks_in_creation_order_and_keeps_their_labels(fresh_url):
    upgrade(fresh_url, "0009_labels")
    await _insert_users(fresh_url, {"u-a": "a@example.org", "u-b": "b@example.org"})
    await _insert_tasks_at_0009(fresh_url)
    upgrade(fresh_url)
    state = await _inspect(fresh_url, _tasks_after_0010)
    by_title = {title: (owner, position, parent) for _, owner, title, position, parent in state["rows"]}
    assert by_title["first"][1] < by_title["second"][1] < by_title["third"][1]
    assert by_title["other"][1]  # another owner's group is numbered on its own
    assert all(parent is None for _, _, parent in by_title.values())
    assert state["links"] == [(3, 1)]  # SQLite rebuilt `tasks`: the label links survive it
    downgrade(fresh_url, "0009_labels")
    upgrade(fresh_url)
    assert (await _inspect(fresh_url, _tasks_after_0010))["links"] == [(3, 1)]
