"""docker-compose.yml, backend/Dockerfile and .dockerignore, checked without Docker (it cannot run here).

What is checked is what would otherwise only fail on someone else's machine: the services and
their health checks, the start order, setting names the API actually reads, a non-root image,
and no secret written into the files.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from backend.config import ConfigError, Settings, load_settings
from tests.support import free_port

ROOT = Path(__file__).resolve().parents[1]
INTERPOLATION = re.compile(r"^\$\{[A-Z_]+(:?[-?][^}]*)?\}$")
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|KEY", re.IGNORECASE)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), with continuation lines joined."""
    text = (ROOT / "backend" / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def env_names(service: dict[str, Any]) -> set[str]:
    environment = service.get("environment", {})
    if isinstance(environment, list):
        return {item.split("=", 1)[0] for item in environment}
    return set(environment)


def test_services(compose):
    assert set(compose["services"]) == {"api", "postgres", "redis"}
    assert compose["services"]["postgres"]["image"] == "postgres:16"
    assert compose["services"]["redis"]["image"] == "redis:7"
    assert any(volume.endswith(":/var/lib/postgresql/data") for volume in compose["services"]["postgres"]["volumes"])
    assert "postgres-data" in compose["volumes"]


def test_api_is_built_from_the_dockerfile_and_reads_dotenv(compose):
    api = compose["services"]["api"]
    assert api["build"] == {"context": ".", "dockerfile": "backend/Dockerfile"}
    assert (ROOT / api["build"]["context"] / api["build"]["dockerfile"]).is_file()
    assert [entry["path"] for entry in api["env_file"]] == [".env"]
    environment = api["environment"]
    assert environment["DATABASE_URL"].startswith("postgresql://")
    assert "@postgres:5432/" in environment["DATABASE_URL"]
    assert environment["REDIS_URL"] == "redis://redis:6379/0"


def test_api_waits_for_healthy_dependencies(compose):
    depends_on = compose["services"]["api"]["depends_on"]
    assert depends_on == {"postgres": {"condition": "service_healthy"}, "redis": {"condition": "service_healthy"}}


@pytest.mark.parametrize(("service", "command"), [("postgres", "pg_isready"), ("redis", "redis-cli ping")])
def test_dependencies_have_healthchecks(compose, service, command):
    check = compose["services"][service]["healthcheck"]
    assert command in " ".join(check["test"])
    assert check["test"][0] in ("CMD", "CMD-SHELL")
    assert check["interval"]
    assert check["retries"] >= 3


def test_api_environment_names_are_settings(compose, dockerfile):
    names = env_names(compose["services"]["api"])
    for instruction, arguments in dockerfile:
        if instruction == "ENV":
            names |= {item.split("=", 1)[0] for item in shlex.split(arguments) if not item.startswith("PYTHON")}
    names -= {"PIP_NO_CACHE_DIR", "PIP_DISABLE_PIP_VERSION_CHECK"}
    names -= {"PGPASSWORD"}  # libpq's own: the database password, kept out of DATABASE_URL
    assert names, "the api service sets no setting at all?"
    unknown = names - set(Settings.model_fields)
    assert not unknown, f"not settings of backend.config.Settings: {sorted(unknown)}"


def test_no_secret_is_written_into_the_compose_file(compose):
    for name, service in compose["services"].items():
        environment = service.get("environment", {})
        for key, value in environment.items():
            if SECRET_NAME.search(key):
                assert INTERPOLATION.match(str(value)), f"{name}.{key} must come from the environment, not the file"
        for key, value in environment.items():
            for password in re.findall(r"://[^:/@]+:([^@]+)@", str(value)):
                assert INTERPOLATION.match(password), f"{name}.{key} has a password written into it"


def test_dockerfile(dockerfile):
    instructions = [instruction for instruction, _ in dockerfile]
    arguments = dict(dockerfile)
    assert arguments["FROM"] == "python:3.11-slim"
    users = [args for instruction, args in dockerfile if instruction == "USER"]
    assert users, "the image must not run as root"
    assert users[-1] not in ("root", "0")
    assert instructions.index("USER") < instructions.index("CMD")
    assert "requirements.txt" in " ".join(args for instruction, args in dockerfile if instruction == "COPY")
    assert "/health/live" in arguments["HEALTHCHECK"]
    assert "urllib" in arguments["HEALTHCHECK"]
    # No port written into the command: `serve` listens on $PORT (set below, or by the platform).
    assert json.loads(arguments["CMD"]) == ["python", "-m", "backend", "serve", "--host", "0.0.0.0"]


def image_env(dockerfile: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction, arguments in dockerfile:
        if instruction == "ENV":
            for item in shlex.split(arguments):
                name, _, value = item.partition("=")
                env[name] = value
    return env


def healthcheck_argv(dockerfile: list[tuple[str, str]]) -> list[str]:
    command = dict(dockerfile)["HEALTHCHECK"].split(" CMD ", 1)[1]
    argv: list[str] = json.loads(command)
    return [sys.executable if argv[0] == "python" else argv[0], *argv[1:]]


@pytest.fixture
def no_settings(monkeypatch, tmp_path):
    """No developer's environment or `.env` takes part."""
    monkeypatch.chdir(tmp_path)
    for name in Settings.model_fields:
        monkeypatch.delenv(name, raising=False)


@pytest.mark.usefixtures("no_settings")
def test_image_runs_in_production_mode(dockerfile):
    """A development key generated into the container's disk would log everyone out at every redeploy."""
    env = image_env(dockerfile)
    assert env["ENVIRONMENT"] == "production"
    assert env["PORT"] == "8000"
    with pytest.raises(ConfigError, match="JWT_SECRET is required"):
        load_settings(**{name: value for name, value in env.items() if name in Settings.model_fields})


@pytest.mark.usefixtures("no_settings")
def test_compose_gives_the_api_what_production_needs(compose, dockerfile):
    """JWT_SECRET must be set (compose stops with a message otherwise), the rest is valid as production."""
    environment = compose["services"]["api"]["environment"]
    guard = re.fullmatch(r"\$\{JWT_SECRET:\?[^}]+\}", environment["JWT_SECRET"])
    assert guard, "compose must refuse an unset JWT_SECRET"
    values = {**image_env(dockerfile), **environment, "JWT_SECRET": "j" * 48}
    settings = load_settings(**{name: value for name, value in values.items() if name in Settings.model_fields})
    assert settings.ENVIRONMENT == "production"
    assert settings.REDIS_URL == "redis://redis:6379/0"
    published = compose["services"]["api"]["ports"]
    assert published == [f"127.0.0.1:{settings.PORT}:{settings.PORT}"], "the published port is the one served"


def test_any_postgres_password_works(compose):
    """`@ / :` in POSTGRES_PASSWORD would break a URL: the password travels as libpq's PGPASSWORD instead."""
    api, postgres = compose["services"]["api"], compose["services"]["postgres"]
    url = api["environment"]["DATABASE_URL"]
    assert "$" not in url
    assert ":" not in url.split("://", 1)[1].split("@", 1)[0], "no password in DATABASE_URL"
    assert api["environment"]["PGPASSWORD"] == postgres["environment"]["POSTGRES_PASSWORD"]
    assert api["environment"]["PGPASSWORD"].startswith("${POSTGRES_PASSWORD")
    for document in ((ROOT / "docker-compose.yml").read_text(), (ROOT / "README.md").read_text()):
        assert "%40" in document
        assert "PGPASSWORD" in document


def test_cmd_and_healthcheck_follow_port(dockerfile, tmp_path):
    """The image's CMD and HEALTHCHECK, run as they are here: both on $PORT, in production mode."""
    port = free_port()
    command = json.loads(dict(dockerfile)["CMD"])
    env = {k: v for k, v in os.environ.items() if k not in Settings.model_fields}
    env.update(image_env(dockerfile))
    env.update(
        PORT=str(port),
        DATA_DIR=str(tmp_path / "data"),
        DATABASE_URL=f"sqlite:///{tmp_path / 'image.db'}",
        JWT_SECRET="j" * 48,
        BCRYPT_ROUNDS="12",
    )
    assert env["ENVIRONMENT"] == "production"
    process = subprocess.Popen(
        [sys.executable, *command[1:]], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            check = subprocess.run(healthcheck_argv(dockerfile), env=env, capture_output=True, timeout=30)
            if check.returncode == 0:
                break
            assert process.poll() is None, process.communicate()[0]
            assert time.monotonic() < deadline, "the health check never passed"
            time.sleep(0.3)
        other = {**env, "PORT": str(free_port())}  # nothing listens there: the check must fail
        assert subprocess.run(healthcheck_argv(dockerfile), env=other, capture_output=True, timeout=30).returncode != 0
        assert not (tmp_path / "data" / "jwt_secret").exists()  # production: no key generated onto the disk
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    assert "Traceback" not in output


def test_dockerignore_keeps_secrets_and_local_state_out():
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {".env", ".git", ".venv", "data"} <= ignored
