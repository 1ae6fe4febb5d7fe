"""/openapi.json is worth reading: every operation says what it does, who may call it, and how it fails.

Clients generate SDKs from this document, so a new route that forgets its summary, its error
responses or its operationId fails here rather than in someone else's code generator.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from fastapi.routing import APIRoute

from backend.__main__ import main
from backend.docs import OAUTH2_SCHEME, openapi_text
from backend.errors import error_classes

ROOT = Path(__file__).resolve().parents[1]
COMMITTED = ROOT / "specs" / "openapi.json"

ERROR_REF = "#/components/schemas/ErrorEnvelope"
# Operations that touch no database (nor anything else that can be down).
NO_DATABASE = {"health_live", "metrics"}
# Neither rate limited nor authenticated: probes must always answer.
PROBES = {"health", "health_live", "metrics"}  # operations endpoints: never rate limited


@pytest.fixture
async def schema(client) -> dict[str, Any]:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    return dict(response.json())


def operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method.upper(), path, op) for path, ops in schema["paths"].items() for method, op in ops.items()]


def documented_errors(operation: dict[str, Any]) -> set[int]:
    return {int(status) for status in operation["responses"] if status.isdigit() and int(status) >= 400}


def test_info(schema):
    info = schema["info"]
    assert info["title"] == "Taskdeck API"
    assert info["version"]
    for topic in ("Authorization: Bearer", "/api/auth/login", "Better-Auth", "403", "Retry-After", "error"):
        assert topic in info["description"], topic


def test_tags_are_declared_and_described(schema):
    declared = {tag["name"]: tag.get("description") for tag in schema["tags"]}
    assert all(declared.values()), declared
    used = {tag for _, _, op in operations(schema) for tag in op.get("tags", [])}
    assert used <= set(declared), f"declare these tags in backend/docs.py OPENAPI_TAGS: {used - set(declared)}"


def test_every_operation_is_described(schema):
    ids = []
    for method, path, op in operations(schema):
        where = f"{method} {path}"
        assert op.get("summary"), f"{where}: no summary"
        assert len(op["summary"]) <= 80, f"{where}: the summary should fit on one line"
        assert op.get("description"), f"{where}: no description (the route's docstring)"
        assert op.get("tags"), f"{where}: no tags"
        assert op.get("operationId"), f"{where}: no operationId"
        assert documented_errors(op) or op["operationId"] in PROBES - {"health"}, f"{where}: no error responses"
        ids.append(op["operationId"])
    assert len(ids) == len(set(ids)), "operationIds must be unique"


def test_error_responses_match_what_the_operation_can_do(schema):
    problems = []
    for method, path, op in operations(schema):
        where = f"{method} {path}"
        errors = documented_errors(op)
        required: set[int] = {500}
        if op.get("security"):
            required.add(401)
        if {"HTTPBearer": []} in op.get("security", []):
            required.add(403)  # an inactive account
        if "{user_id}" in path:
            required |= {403, 422}
        if op["operationId"] not in PROBES:
            required.add(429)
        if op["operationId"] not in NO_DATABASE:
            required.add(503)
        body = op.get("requestBody", {}).get("content", {})
        if body:
            required |= {413, 422}
        if "application/json" in body:
            required.add(400)
        if "{task_id}" in path or "{project_id}" in path:
            required.add(404)
        if required - errors:
            problems.append(f"{where} ({op['operationId']}) misses {sorted(required - errors)}")
    assert not problems, "\n".join(problems)


def test_error_responses_use_the_error_envelope(schema):
    for method, path, op in operations(schema):
        for status, response in op["responses"].items():
            if int(status) < 400 or op["operationId"] == "health":
                continue
            content = response["content"]["application/json"]
            assert content["schema"] == {"$ref": ERROR_REF}, f"{method} {path} {status}"
            assert content["example"]["success"] is False, f"{method} {path} {status}: no example"


def test_every_error_code_of_a_documented_status_is_documented(schema):
    """A new AppError class documents itself: its code is in the description of its status."""
    documented: dict[int, str] = {}
    for _, _, op in operations(schema):
        for status, response in op["responses"].items():
            if status.isdigit() and int(status) >= 400 and op["operationId"] != "health":
                example = response["content"]["application/json"]["example"]["error"]["code"]
                documented[int(status)] = documented.get(int(status), "") + response["description"] + example
    checked = [cls for cls in error_classes() if cls.status_code in documented]
    assert {cls.status_code for cls in checked} == set(documented), "a documented status without an AppError class"
    missing = [
        f"{cls.__name__} {cls.status_code} {cls.code}"
        for cls in checked
        if f"`{cls.code}`" not in documented[cls.status_code]
    ]
    assert not missing, f"error codes missing from their status's OpenAPI description: {missing}"


def test_body_limit_is_documented_as_configurable(schema):
    response = schema["paths"]["/api/auth/register"]["post"]["responses"]["413"]
    assert "MAX_BODY_BYTES" in response["description"]


def test_limits_and_auth_failures_document_their_headers(schema):
    op = schema["paths"]["/api/{user_id}/tasks"]["get"]
    assert "Retry-After" in op["responses"]["429"]["headers"]
    assert "WWW-Authenticate" in op["responses"]["401"]["headers"]


def test_health_outage_is_documented_as_it_is_sent(schema):
    response = schema["paths"]["/health"]["get"]["responses"]["503"]
    ref = response["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    properties = schema["components"]["schemas"][ref]["properties"]
    assert set(properties) == {"success", "error"}  # the error envelope: no `data` (§9)


def test_security_schemes_let_authorize_work(schema):
    schemes = schema["components"]["securitySchemes"]
    assert schemes["HTTPBearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "An access token from /api/auth/login or Better-Auth",
    }
    assert schemes[OAUTH2_SCHEME]["flows"]["password"]["tokenUrl"] == "/api/auth/token"
    me = schema["paths"]["/api/auth/me"]["get"]
    assert me["security"] == [{"HTTPBearer": []}, {OAUTH2_SCHEME: []}]
    assert "security" not in schema["paths"]["/api/auth/login"]["post"]


@pytest.mark.parametrize(
    ("path", "method", "names"),
    [
        ("/api/auth/register", "post", {"minimal", "with_name"}),
        ("/api/auth/login", "post", {"login"}),
        ("/api/{user_id}/tasks", "post", {"minimal", "full"}),
        ("/api/{user_id}/tasks/{task_id}", "patch", {"retitle", "start", "move"}),
        ("/api/{user_id}/projects", "post", {"by_name", "with_details"}),
    ],
)
def test_main_bodies_have_examples(schema, path, method, names):
    body = schema["paths"][path][method]["requestBody"]["content"]["application/json"]
    assert names <= set(body["examples"])
    for example in body["examples"].values():
        assert example["summary"]
        assert isinstance(example["value"], dict)


@pytest.mark.parametrize(
    ("path", "method", "status"),
    [
        ("/api/auth/register", "post", "201"),
        ("/api/auth/login", "post", "200"),
        ("/api/{user_id}/tasks", "get", "200"),
        ("/api/{user_id}/tasks", "post", "201"),
        ("/api/{user_id}/projects", "post", "201"),
    ],
)
def test_main_responses_have_examples(schema, path, method, status):
    example = schema["paths"][path][method]["responses"][status]["content"]["application/json"]["example"]
    assert example["success"] is True
    assert example["data"]


def test_operation_ids_are_stable(schema):
    """SDKs are generated from these: renaming one breaks every client. Add to the list, never rename."""
    ids = {op["operationId"] for _, _, op in operations(schema)}
    assert {
        "register",
        "login",
        "oauth2_token",
        "refresh",
        "logout",
        "me",
        "list_tasks",
        "create_task",
        "search_tasks",
        "get_task",
        "replace_task",
        "update_task",
        "complete_task",
        "delete_task",
        "list_projects",
        "pin_project",
        "reorder_projects",
        "get_project",
        "update_project",
        "unpin_project",
        "export_project",
        "health",
        "health_live",
    } <= ids


def test_every_route_is_in_the_schema(app, schema):
    documented = {(method, path) for method, path, _ in operations(schema)}
    for route in app.routes:
        if isinstance(route, APIRoute) and route.include_in_schema:
            for method in route.methods:
                assert (method, route.path) in documented, f"{method} {route.path} is missing from /openapi.json"
    hidden = {route.path for route in app.routes if isinstance(route, APIRoute) and not route.include_in_schema}
    assert hidden == {"/docs", "/redoc", "/docs/oauth2-redirect"}, "only the docs pages stay out of the schema"


async def test_docs_pages_and_assets(client):
    for path in ("/docs", "/redoc", "/docs/oauth2-redirect", "/static/redoc/redoc.standalone.js"):
        assert (await client.get(path)).status_code == 200, path
    missing = await client.get("/static/nope.js")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "NOT_FOUND"


def test_the_api_spec_lists_every_route_with_its_errors(schema):
    """specs/api/v1_backend.spec.md §0 and /openapi.json must not drift apart."""
    spec = (Path(__file__).resolve().parents[1] / "specs" / "api" / "v1_backend.spec.md").read_text()
    rows = re.findall(r"^\| `(GET|POST|PUT|PATCH|DELETE) (/[^`]*)` \| `(\w+)` \| (\d{3}) \| ([^|]*) \|$", spec, re.M)
    listed = {(method, path): (op_id, success, errors.strip()) for method, path, op_id, success, errors in rows}
    for method, path, op in operations(schema):
        assert (method, path) in listed, f"{method} {path} is missing from the spec's route table"
        op_id, success, errors = listed[(method, path)]
        assert op_id == op["operationId"], f"{method} {path}"
        assert success in op["responses"], f"{method} {path}"
        if re.fullmatch(r"[\d, ]+", errors):  # 500 is said once, for every route, above the table
            listed_errors = sorted(int(e) for e in errors.split(", "))
            assert listed_errors == sorted(documented_errors(op) - {500}), f"{method} {path}"
    assert len(listed) == len(operations(schema)), "the spec lists routes the API does not have"


def test_the_api_spec_explains_every_error_code_and_stays_in_the_repository():
    """specs/api/ is the contract a client reads in a clone: every code the API can answer is explained there,
    and nothing in specs/ or the README points outside the repository."""
    from backend.errors import error_codes

    spec = "".join(path.read_text(encoding="utf-8") for path in sorted((ROOT / "specs" / "api").glob("*.md")))
    assert [code for code in error_codes() if f"`{code}`" not in spec] == []
    for path in [ROOT / "README.md", *sorted((ROOT / "specs").rglob("*.md"))]:
        for target in re.findall(r"\]\(([^)#\s]+)", path.read_text(encoding="utf-8")):
            if "://" not in target and not target.startswith("mailto:"):
                assert (path.parent / target).resolve().is_relative_to(ROOT), f"{path.name} links to {target}"


def test_the_committed_schema_is_the_served_one(schema):
    """specs/openapi.json is what clients generate from without running the API: it must not drift."""
    served = openapi_text(schema)
    committed = COMMITTED.read_text(encoding="utf-8") if COMMITTED.exists() else ""
    assert committed == served, (
        "specs/openapi.json differs from the served /openapi.json: run `make openapi` and commit the result"
    )


def test_make_openapi_writes_the_served_schema(schema, tmp_path, monkeypatch):
    """`make openapi` runs `python -m backend openapi --output specs/openapi.json`: it writes what is served."""
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'unused.db'}")
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    assert main(["openapi", "--output", str(tmp_path / "openapi.json")]) == 0
    assert (tmp_path / "openapi.json").read_text(encoding="utf-8") == openapi_text(schema)
    assert "-m backend openapi --output specs/openapi.json" in (ROOT / "Makefile").read_text()


def schema_refs(node: Any) -> set[str]:
    """The names of the component schemas `node` refers to, directly or through other schemas."""
    found: set[str] = set()
    pending = [node]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            ref = item.get("$ref", "")
            if ref.startswith("#/components/schemas/") and ref.rsplit("/", 1)[-1] not in found:
                found.add(ref.rsplit("/", 1)[-1])
                pending.append(COMPONENTS[ref.rsplit("/", 1)[-1]])
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return found


COMPONENTS: dict[str, Any] = {}


def response_and_request_schemas(schema: dict[str, Any]) -> tuple[set[str], set[str]]:
    COMPONENTS.clear()
    COMPONENTS.update(schema["components"]["schemas"])
    responses = [op["responses"] for _, _, op in operations(schema)]
    requests = [[op.get("requestBody"), op.get("parameters")] for _, _, op in operations(schema)]
    return schema_refs(responses), schema_refs(requests)


def test_every_response_field_is_required(schema):
    """The server sends every field of every response (null where it may be): a generated client must not
    see any of them as optional. A model used in both directions would split into -Input/-Output schemas."""
    sent, received = response_and_request_schemas(schema)
    shared = sorted(name for name in sent & received if "properties" in COMPONENTS[name])  # enums may be shared
    assert not shared, f"objects used in requests and responses alike: {shared}"
    optional = {
        name: sorted(set(spec["properties"]) - set(spec.get("required", [])))
        for name in sent
        if "properties" in (spec := COMPONENTS[name])
    }
    assert not {name: fields for name, fields in optional.items() if fields}, optional
    task = COMPONENTS["TaskPublic"]["properties"]
    assert {"type": "null"} in task["description"]["anyOf"], "a field that can be null says so"
    assert task["title"]["type"] == "string", "a field that cannot be null does not offer null"


def test_success_is_a_required_constant(schema):
    for method, path, op in operations(schema):
        for status, response in op["responses"].items():
            content = response.get("content", {}).get("application/json", {})
            ref = content.get("schema", {}).get("$ref")
            if ref is None:
                continue
            envelope = schema["components"]["schemas"][ref.rsplit("/", 1)[-1]]
            if "success" not in envelope["properties"]:
                assert path == "/api/auth/token", f"{method} {path} {status}: not an envelope"
                continue
            success = envelope["properties"]["success"]
            assert "success" in envelope["required"], f"{method} {path} {status}"
            assert success["type"] == "boolean", f"{method} {path} {status}"
            assert success["const"] is (int(status) < 400), f"{method} {path} {status}"


def test_error_code_is_the_enum_of_every_code(schema):
    schemas = schema["components"]["schemas"]
    assert schemas["ErrorBody"]["properties"]["code"] == {"$ref": "#/components/schemas/ErrorCode"}
    assert "code" in schemas["ErrorBody"]["required"]
    codes = schemas["ErrorCode"]["enum"]
    assert len(codes) == len(set(codes))
    assert set(codes) == {cls.code for cls in error_classes()}
    assert {"VALIDATION_ERROR", "NOT_FOUND", "RATE_LIMITED", "INTERNAL_ERROR", "SERVICE_UNAVAILABLE"} <= set(codes)


def test_schema_names_read_as_a_person_would_name_them(schema):
    names = set(schema["components"]["schemas"])
    odd = sorted(name for name in names if not re.fullmatch(r"[A-Z][A-Za-z0-9]*", name))
    assert not odd, f"schema names a generated client would show as is: {odd} (name the envelope class)"
    expected = {"TaskEnvelope", "TaskListEnvelope", "ProjectEnvelope", "ProjectListEnvelope", "MessageEnvelope"}
    assert expected | {"ErrorEnvelope", "ErrorCode", "TaskCreate", "TaskPublic"} <= names
    for name in names:
        assert schema["components"]["schemas"][name].get("title", name) == name, name


# Every character pydantic's strip_whitespace removes (Unicode White_Space), and two that it keeps.
STRIPPED = "\t\n\u000b\f\r \u0085\u00a0\u1680\u2000\u2005\u200a\u2028\u2029\u202f\u205f\u3000"


async def test_a_title_the_schema_accepts_is_one_the_api_accepts(client, user, schema):
    """A blank title (whitespace only) is a 422: the schema's pattern says so, so a generated client or a
    fuzzer never builds one that the API refuses (Schemathesis once sent "\\u000b\\n")."""
    for name in ("TaskCreate", "TaskUpdate"):
        title = schema["components"]["schemas"][name]["properties"]["title"]
        pattern = re.compile(title.get("pattern") or title["anyOf"][0]["pattern"])
        for blank in [c * 2 for c in STRIPPED] + [STRIPPED]:
            assert pattern.search(blank) is None, (name, blank)
        for kept in ("x", " x ", "\u001c", "\u200b", "\ufeff", "a\u3000b"):
            assert pattern.search(kept), (name, kept)
    for blank in ("\u000b\n", "\u3000", STRIPPED):
        response = await client.post(f"/api/{user.id}/tasks", json={"title": blank}, headers=user.headers)
        assert (response.status_code, response.json()["error"]["details"][0]["field"]) == (422, "title")
    for kept in ("\u001c", "\u200b"):  # not White_Space: a title, however odd
        response = await client.post(f"/api/{user.id}/tasks", json={"title": kept}, headers=user.headers)
        assert response.status_code == 201, response.text
    response = await client.post(f"/api/{user.id}/tasks", json={"title": "a\u0000b"}, headers=user.headers)
    assert (
        response.json()["error"]["message"] == "title: must contain a character other than white space, and no U+0000"
    )
    response = await client.post(
        f"/api/{user.id}/tasks", json={"title": "a", "description": "\u0000"}, headers=user.headers
    )
    assert response.json()["error"]["message"] == "description: must not contain the character U+0000"
