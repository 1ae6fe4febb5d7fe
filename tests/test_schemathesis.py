"""Property-based fuzzing of every operation in the app's own OpenAPI document (Schemathesis, in process).

Each operation gets generated requests (valid and invalid) with a registered user's bearer token and
`{user_id}` pinned to that user, so most of them reach the handlers instead of stopping at 403.
Schemathesis's default checks apply: no 5xx, documented status codes, bodies and headers matching the
schema, content types, auth not ignored, 405 with `Allow`, schema-valid data accepted and invalid data
refused. Deterministic (derandomized Hypothesis) and bounded (MAX_EXAMPLES per operation and phase).
Then a stateful phase (`test_stateful`): chains of calls through the links Schemathesis infers, with the
stateful checks too (a deleted resource must answer 404, a created one must be found).
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, Phase, settings
from hypothesis.errors import Flaky
from schemathesis import Case, GenerationMode
from schemathesis.core.parameters import ParameterLocation
from schemathesis.openapi.checks import RejectedPositiveData
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import negative_data_rejection
from starlette.types import Receive, Scope, Send

from backend.main import create_app
from tests.conftest import ENDING_STREAMS, PASSWORD, empty_tables, make_settings

MAX_EXAMPLES = 25
EMAIL = "fuzz@example.com"

# Rules a JSON Schema cannot state: a schema-valid body may break them and get a 422 naming that field.
# Each rule has its own tests; only a 422 whose every failing field is listed here is accepted.
BUSINESS_RULES = {
    "password": "at most 72 bytes of UTF-8 (the schema can only count characters), not a common password",
    "email": "email-validator's rules beyond `format: email`, e.g. no special-use domains (RFC 6761: .test, …)",
    "completed": "must agree with status (completed <=> status 'completed') when both are sent",
    "project_id": "must be one of the caller's own projects",
    "project_ids": "must list each of the caller's pinned projects exactly once",
    "github_repo_name": "GitHub's length limits: owner at most 39 characters, repository at most 100",
    "github_repo_url": "must point at the same repository as github_repo_name",
    "parent_id": "must be one of the caller's tasks, at most 5 levels deep, never the task's own descendant",
    "after_id": "must be one of the caller's tasks, a sibling at the task's new place",
    "due_timezone": "must be an IANA time zone that zoneinfo knows (a schema can only give its shape)",
    "recurrence": "must be an RFC 5545 RRULE with an occurrence, on a task with a due date",
    "due_string": "must be English the phrase grammar reads (specs/recurrence.md), without the fields it sets",
    "X-Timezone": "must be an IANA time zone that zoneinfo knows",
    "cursor": "a full-sync cursor's guard (`c<seq>.<guard>`) lies above its seq",
}

# Answers to a value that is state from an earlier response, which a stateless generator can only invent: a feed
# cursor beyond (or, once tombstones are purged, before) the user's history is 410 CURSOR_EXPIRED. Tested in
# tests/routers/test_changes.py.
STATE_ANSWERS = {(410, "CURSOR_EXPIRED")}

# Documented exclusions: (method, path) -> checks not run there, and why. A literal segment that a template's
# parameter could also match (`/tasks/search`, `/projects/order`, `/api/tasks`) needs none: it answers 405 with
# its own `Allow` for the other methods (backend/routing.py).
EXCLUDED_CHECKS: dict[tuple[str, str], tuple[tuple[Any, ...], str]] = {
    ("POST", "/api/{user_id}/batch"): (
        (negative_data_rejection,),
        "a command's invalid `data` is that command's 422 inside the 200 answer, by design (specs/api/batch.md): "
        "the other commands still apply; tests/routers/test_batch.py checks those results",
    ),
}

# Headers that carry state from earlier responses (an ETag, a key already used with another body):
# a stateless generator can only invent values the API rightly refuses (412, 422
# IDEMPOTENCY_KEY_REUSED). Their behaviour is tested in tests/routers/test_etag.py and
# tests/routers/test_idempotency.py; here each case gets a fresh key and no precondition.
STATEFUL_HEADERS = ("If-Match", "If-None-Match")


class CurrentApp:
    """What Schemathesis calls: forwards each request to the app of the backend under test.

    The document is loaded once at collection (so every route, today's and tomorrow's, becomes a test),
    while each backend has its own app, whose lifespan the fixture runs.
    """

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        await self.app(scope, receive, send)


current = CurrentApp(create_app(make_settings("sqlite://", Path(tempfile.gettempdir()))))
schema = schemathesis.openapi.from_asgi("/openapi.json", current)


@schema.hook
def filter_failure(context: Any, failure: Any, case: Case, response: Any) -> bool:
    """Drop only a 422 for schema-valid data whose failing fields all break a BUSINESS_RULES rule, and the
    STATE_ANSWERS."""
    if not isinstance(failure, RejectedPositiveData):
        return True
    error = json.loads(response.content)["error"]
    if (response.status_code, error["code"]) in STATE_ANSWERS:
        return False
    if response.status_code != 422:
        return True
    fields = {item["field"] for item in error.get("details") or []} or {error["field"]}
    return not fields <= BUSINESS_RULES.keys()


def _call(method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = schema[path][method].Case(body=body).call()
    assert response.status_code in (200, 201), response.text
    data: dict[str, Any] = response.json()["data"]
    return data


def login() -> dict[str, Any]:
    return _call("POST", "/api/auth/login", {"email": EMAIL, "password": PASSWORD})


@pytest.fixture(scope="module")
def fuzz_app(database_url: str, data_dir: Path) -> Iterator[FastAPI]:
    # With a metrics token /metrics is protected as its schema says (open otherwise, by design). Event streams
    # end right after their greeting: the in-process client returns a response once its body has ended.
    app = create_app(make_settings(database_url, data_dir, METRICS_TOKEN=uuid.uuid4().hex, **ENDING_STREAMS))
    with asgi.get_client(app):  # runs the app's lifespan on Schemathesis's event loop
        current.app = app
        _call("POST", "/api/auth/register", {"email": EMAIL, "password": PASSWORD})
        yield app

    async def clean() -> None:
        # Another app on the same database: the fuzzed app's engine lives on Schemathesis's event loop.
        other = create_app(make_settings(database_url, data_dir))
        await empty_tables(other)
        await other.state.engine.dispose()

    asyncio.run(clean())


@pytest.fixture(scope="module")
def tokens(fuzz_app: FastAPI) -> dict[str, Any]:
    return login()


def is_generated_invalid(case: Case, location: ParameterLocation) -> bool:
    info = case.meta.components.get(location) if case.meta else None
    return info is not None and info.mode is GenerationMode.NEGATIVE


def authorize(case: Case, tokens: dict[str, Any]) -> dict[str, str]:
    """The caller's own id in the path and a valid token, except where the generated input is the invalid part."""
    if "user_id" in (case.path_parameters or {}) and not is_generated_invalid(case, ParameterLocation.PATH):
        case.path_parameters["user_id"] = tokens["user_id"]
    if is_generated_invalid(case, ParameterLocation.HEADER):
        return {}
    return {"Authorization": f"Bearer {tokens['access_token']}"}


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_api(case: Case, fuzz_app: FastAPI, tokens: dict[str, Any]) -> None:
    # A logout gets a session of its own, so it cannot end the one every other case relies on.
    headers = authorize(case, login() if case.operation.path == "/api/auth/logout" else tokens)
    for name in STATEFUL_HEADERS:
        (case.headers or {}).pop(name, None)
    if case.headers and "Idempotency-Key" in case.headers:
        case.headers["Idempotency-Key"] = uuid.uuid4().hex
    excluded, _reason = EXCLUDED_CHECKS.get((case.operation.method.upper(), case.operation.path), ((), ""))
    case.call_and_validate(headers=headers, excluded_checks=excluded)


# Stateful phase: sequences of calls chained through the links Schemathesis infers from the document
# (create -> read/update/delete -> read again ...), with every check, including the stateful ones:
# `use_after_free` (a deleted resource still answers) and `ensure_resource_availability` (a created one
# does not). The server's state outlives a scenario, so Hypothesis may find that a replayed prefix now
# answers differently (`Flaky`): as Schemathesis's own runner does, that attempt ends and another starts.
# Bounded: STATEFUL_SCENARIOS scenarios of at most STATEFUL_STEPS calls (about 0.4 s each), or
# STATEFUL_SECONDS, whichever comes first (checked between attempts).
STATEFUL_SCENARIOS = 15
STATEFUL_STEPS = 6
STATEFUL_SECONDS = 60.0  # an upper bound: the loop stops as soon as its goals are met


class Workflow(schema.as_state_machine()):  # type: ignore[misc]
    """The same caller and header rules as `test_api`, in scenarios; counts what it called, for the report."""

    tokens: ClassVar[dict[str, Any]] = {}
    scenarios: ClassVar[int] = 0
    calls: ClassVar[Counter[str]] = Counter()

    def get_call_kwargs(self, case: Case) -> dict[str, Any]:
        fresh = case.operation.path == "/api/auth/logout"
        headers = authorize(case, login() if fresh else self.tokens)
        for name in STATEFUL_HEADERS:
            (case.headers or {}).pop(name, None)
        if case.headers and "Idempotency-Key" in case.headers:
            case.headers["Idempotency-Key"] = uuid.uuid4().hex
        return {"headers": headers}

    def validate_response(self, response: Any, case: Case, additional_checks: Any = None, **kwargs: Any) -> None:
        type(self).calls[f"{case.operation.method.upper()} {case.operation.path} {response.status_code}"] += 1
        excluded, _reason = EXCLUDED_CHECKS.get((case.operation.method.upper(), case.operation.path), ((), ""))
        case.validate_response(
            response, excluded_checks=excluded, transport_kwargs=kwargs or None, recorder=self.recorder
        )

    def teardown(self) -> None:
        type(self).scenarios += 1


def test_stateful(fuzz_app: FastAPI, tokens: dict[str, Any]) -> None:
    Workflow.tokens, Workflow.scenarios, Workflow.calls = tokens, 0, Counter()
    deadline = time.monotonic() + STATEFUL_SECONDS
    attempts = 0
    unpins = ("DELETE /api/{user_id}/projects/{project_id} 200", "DELETE /api/projects/unpin/{project_id} 200")

    def unpinned() -> bool:
        return sum(Workflow.calls[unpin] for unpin in unpins) > 0

    # Scenarios until enough ran and one reached an unpin (with ~30 operations, a derandomized first attempt
    # may not get there: later attempts explore), within the time allowed.
    while (Workflow.scenarios < STATEFUL_SCENARIOS or not unpinned()) and time.monotonic() < deadline:
        attempts += 1
        try:
            Workflow.run(
                settings=settings(
                    max_examples=max(STATEFUL_SCENARIOS - Workflow.scenarios, 5),
                    stateful_step_count=STATEFUL_STEPS,
                    derandomize=attempts == 1,  # the first attempt is the same every run; a retry explores
                    phases=[Phase.generate],  # no shrinking: a replay against a changed server differs anyway
                    deadline=None,
                    database=None,
                    suppress_health_check=list(HealthCheck),
                )
            )
        except Flaky:
            continue  # that attempt ran clean until a replay diverged: start another
    print(
        f"stateful phase: {Workflow.scenarios} scenarios in {attempts} attempts;",
        ", ".join(f"{k}: {n}" for k, n in Workflow.calls.items()),
    )
    assert Workflow.scenarios >= STATEFUL_SCENARIOS // 2, Workflow.scenarios
    # The scenarios reached what they are for: a deleted project read again (the 404 the contract promises).
    assert unpinned(), Workflow.calls
