"""docker-compose.yml, backend/Dockerfile and .dockerignore, checked without Docker (it cannot run here).

What is checked is what would otherwise only fail on someone else's machine: the services and
their health checks, the start order, setting names the API actually reads, a non-root image,
and no secret written into the files.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from backend.config import Settings

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
    assert json.loads(arguments["CMD"]) == [
        "python",
        "-m",
        "backend",
        "serve",
        "--host",
        "0.0.0.0",
        "--port",
        "8000",
    ]


def test_dockerignore_keeps_secrets_and_local_state_out():
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {".env", ".git", ".venv", "data"} <= ignored
