"""One error envelope for everything, with the request id and security headers on every response."""

from __future__ import annotations

import json

import pytest

from backend.errors import (
    ERROR_RESPONSES,
    PayloadTooLarge,
    RateLimited,
    ServiceUnavailable,
    ValidationFailed,
    render_error,
    responses,
)
from backend.models.passwords import MIN_LENGTH
from tests.conftest import PASSWORD, assert_error, mount_test_routes

SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
}


def assert_envelope_headers(response) -> None:
    assert len(response.headers["x-request-id"]) >= 1
    for name, value in SECURITY_HEADERS.items():
        assert response.headers[name] == value
    assert "default-src 'none'" in response.headers["content-security-policy"]


class TestMalformedRequest:
    async def test_invalid_json(self, client):
        r = await client.post(
            "/api/auth/login", content=b'{"email": "a@example.com",', headers={"Content-Type": "application/json"}
        )
        error = assert_error(r, 400, "MALFORMED_REQUEST")
        assert error["details"] is None
        assert_envelope_headers(r)

    async def test_wrong_content_type(self, client):
        r = await client.post("/api/auth/login", data={"email": "a@example.com", "password": PASSWORD})
        assert_error(r, 400, "MALFORMED_REQUEST")

    async def test_json_without_content_type_header(self, client):
        r = await client.post("/api/auth/login", content=b"null", headers={"Content-Type": "text/plain"})
        assert_error(r, 400, "MALFORMED_REQUEST")

    async def test_json_that_is_not_an_object(self, client):
        r = await client.post("/api/auth/login", json=["a", "b"])
        assert_error(r, 422, "VALIDATION_ERROR")


class TestNotFoundAndMethod:
    async def test_unknown_route(self, client):
        r = await client.get("/no/such/route")
        error = assert_error(r, 404, "NOT_FOUND")
        assert error == {"code": "NOT_FOUND", "message": "Not found", "field": None, "details": None}
        assert_envelope_headers(r)

    async def test_method_not_allowed(self, client):
        r = await client.get("/api/auth/login")
        assert_error(r, 405, "METHOD_NOT_ALLOWED")
        assert "POST" in r.headers["allow"]
        assert_envelope_headers(r)


class TestPayloadTooLarge:
    async def test_announced_by_content_length(self, client):
        body = b'{"email": "' + b"a" * (1024 * 1024) + b'"}'
        r = await client.post("/api/auth/login", content=body, headers={"Content-Type": "application/json"})
        assert_error(r, 413, "PAYLOAD_TOO_LARGE")
        assert_envelope_headers(r)

    async def test_streamed_without_length(self, client):
        async def chunks():
            yield b'{"email": "'
            for _ in range(20):
                yield b"a" * 65536
            yield b'"}'

        r = await client.post("/api/auth/login", content=chunks(), headers={"Content-Type": "application/json"})
        assert "content-length" not in r.request.headers
        assert_error(r, 413, "PAYLOAD_TOO_LARGE")
        assert_envelope_headers(r)

    async def test_bad_content_length(self, client):
        r = await client.post(
            "/api/auth/login", content=b"{}", headers={"Content-Type": "application/json", "Content-Length": "-1"}
        )
        assert_error(r, 413, "PAYLOAD_TOO_LARGE")

    async def test_just_under_the_limit_is_read(self, client):
        body = b'{"email": "' + b"a" * (1024 * 1024 - 100) + b'"}'
        r = await client.post("/api/auth/login", content=body, headers={"Content-Type": "application/json"})
        assert_error(r, 422, "VALIDATION_ERROR")

    async def test_message_names_the_default_limit(self, client):
        r = await client.post("/api/auth/login", content=b"{" * 2_000_000, headers={"Content-Type": "application/json"})
        assert assert_error(r, 413, "PAYLOAD_TOO_LARGE")["message"] == "The request body is larger than 1 MiB"


class TestConfiguredBodyLimit:
    """The 413 message names MAX_BODY_BYTES as configured, announced or streamed."""

    @staticmethod
    async def streamed(size: int):
        yield b'{"email": "'
        yield b"a" * size
        yield b'"}'

    @pytest.mark.parametrize(
        ("settings_overrides", "stated"),
        [({"MAX_BODY_BYTES": 4096}, "4 KiB"), ({"MAX_BODY_BYTES": 5000}, "5000 bytes")],
    )
    async def test_message_states_the_limit(self, client, stated):
        body = b'{"email": "' + b"a" * 6000 + b'"}'
        announced = await client.post("/api/auth/login", content=body, headers={"Content-Type": "application/json"})
        streamed = await client.post(
            "/api/auth/login", content=self.streamed(6000), headers={"Content-Type": "application/json"}
        )
        for r in (announced, streamed):
            error = assert_error(r, 413, "PAYLOAD_TOO_LARGE")
            assert error["message"] == f"The request body is larger than {stated}"
            assert_envelope_headers(r)

    @pytest.mark.parametrize("settings_overrides", [{"MAX_BODY_BYTES": 4096}])
    async def test_under_the_configured_limit_is_read(self, client):
        body = b'{"email": "' + b"a" * 3000 + b'"}'
        r = await client.post("/api/auth/login", content=body, headers={"Content-Type": "application/json"})
        assert_error(r, 422, "VALIDATION_ERROR")

    @pytest.mark.parametrize(
        ("limit", "stated"),
        [(1024 * 1024, "1 MiB"), (3 * 1024 * 1024, "3 MiB"), (1536, "1536 bytes"), (512 * 1024, "512 KiB")],
    )
    def test_sizes_read_naturally(self, limit, stated):
        assert PayloadTooLarge.over(limit).message == f"The request body is larger than {stated}"


class TestRenderError:
    """errors.render_error is the one renderer: status, headers and envelope all come from the AppError."""

    def test_envelope_status_and_headers(self):
        response = render_error(RateLimited(7))
        assert response.status_code == 429
        assert response.headers["retry-after"] == "7"
        assert json.loads(response.body) == {
            "success": False,
            "error": {"code": "RATE_LIMITED", "message": "Too many requests", "field": None, "details": None},
        }

    def test_field_and_details(self):
        details = [{"field": "title", "message": "too short", "type": "string_too_short"}]
        body = json.loads(render_error(ValidationFailed("title: too short", field="title", details=details)).body)
        assert body["error"] == {
            "code": "VALIDATION_ERROR",
            "message": "title: too short",
            "field": "title",
            "details": details,
        }
        states = {"database": "down"}  # /health's component states: details need not be a list
        outage = render_error(ServiceUnavailable("database unreachable", field="database", details=states))
        assert outage.status_code == 503
        assert outage.headers["retry-after"] == "5"
        assert json.loads(outage.body) == {
            "success": False,
            "error": {
                "code": "SERVICE_UNAVAILABLE",
                "message": "database unreachable",
                "field": "database",
                "details": states,
            },
        }


class TestValidation:
    async def test_details_list_every_failing_field(self, client):
        r = await client.post(
            "/api/auth/register", json={"email": "nope", "password": "short", "full_name": 5, "user_id": "x"}
        )
        error = assert_error(r, 422, "VALIDATION_ERROR")
        fields = {d["field"] for d in error["details"]}
        assert fields == {"email", "password", "full_name", "user_id"}
        assert error["field"] in fields
        for detail in error["details"]:
            assert set(detail) == {"field", "message", "type"}
            assert detail["message"]

    @pytest.mark.parametrize(
        ("path", "body", "field", "message"),
        [
            (
                "/api/auth/register",
                {"email": "new@example.com", "password": "short"},
                "password",
                f"Password must be at least {MIN_LENGTH} characters",
            ),
            (
                "/api/{user_id}/tasks",
                {"title": "t", "due_date": 1700000000},
                "due_date",
                "must be an ISO 8601 date-time",
            ),
            (
                "/api/{user_id}/tasks",
                {"title": "t", "due_date": "0001-01-01T00:00:00+14:00"},
                "due_date",
                "out of range: must lie between 0001-01-02T00:00:00Z and 9999-12-30T23:59:59Z",
            ),
            (
                "/api/{user_id}/projects",
                {"github_repo_name": "octo/hello", "github_repo_url": "https://github.com/octo/other"},
                "github_repo_url",
                "must point at the same repository as github_repo_name",
            ),
            ("/api/{user_id}/projects", {"github_repo_name": "no-slash"}, "github_repo_name", "must be 'owner/repo'"),
            (
                "/api/{user_id}/projects",
                {"github_repo_name": "octo/hello", "github_repo_url": "https://x.example/a"},
                "github_repo_url",
                "must be https://github.com/<owner>/<repo>",
            ),
        ],
    )
    async def test_messages_of_our_validators_read_as_written(self, client, user, path, body, field, message):
        """A ValueError raised in a validator reaches the client as its own text, without Pydantic's
        `Value error, ` prefix, in `details` and in `error.message`; the type stays `value_error`."""
        r = await client.post(path.format(user_id=user.id), json=body, headers=user.headers)
        error = assert_error(r, 422, "VALIDATION_ERROR")
        assert error["field"] == field
        assert error["message"] == f"{field}: {message}"
        assert error["details"] == [{"field": field, "message": message, "type": "value_error"}]
        assert "Value error" not in r.text

    async def test_query_parameter_messages_read_as_written(self, client, user):
        r = await client.get(f"/api/{user.id}/tasks", params={"due_before": "12345"}, headers=user.headers)
        error = assert_error(r, 422, "VALIDATION_ERROR")
        assert error["message"] == "due_before: must be an ISO 8601 date-time"
        assert "Value error" not in r.text


class TestUnexpected:
    async def test_500_leaks_nothing(self, client, app):
        mount_test_routes(app)
        r = await client.get("/test/boom", headers={"X-Request-ID": "trace-me-123"})
        error = assert_error(r, 500, "INTERNAL_ERROR")
        assert error["message"] == "An unexpected error occurred"
        for leak in ("boom", "SELECT", "hunter2", "Traceback", "RuntimeError"):
            assert leak not in r.text
        assert r.headers["x-request-id"] == "trace-me-123"
        assert_envelope_headers(r)


class TestRequestId:
    async def test_well_formed_id_is_echoed(self, client):
        r = await client.get("/health/live", headers={"X-Request-ID": "abc-123_DEF.9:z"})
        assert r.headers["x-request-id"] == "abc-123_DEF.9:z"

    @pytest.mark.parametrize("incoming", ["has spaces", "x" * 129, "<script>", "ünïcode"])
    async def test_malformed_id_is_replaced(self, client, incoming):
        r = await client.get("/health/live", headers={"X-Request-ID": incoming.encode()})
        generated = r.headers["x-request-id"]
        assert generated != incoming
        assert len(generated) == 32
        int(generated, 16)

    async def test_generated_when_absent_and_unique(self, client):
        first = (await client.get("/health/live")).headers["x-request-id"]
        second = (await client.get("/health/live")).headers["x-request-id"]
        assert first != second


class TestOpenAPI:
    async def test_error_responses_documented(self, client):
        spec = (await client.get("/openapi.json")).json()
        login = spec["paths"]["/api/auth/login"]["post"]["responses"]
        assert {"200", "401", "422"} <= set(login)
        assert login["401"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorEnvelope")
        register = spec["paths"]["/api/auth/register"]["post"]["responses"]
        assert "201" in register
        assert "409" in register

    def test_responses_helper(self):
        assert responses(401, 404) == {401: ERROR_RESPONSES[401], 404: ERROR_RESPONSES[404]}
