"""Swagger UI and ReDoc from the API itself (backend/static/), so the docs work with no internet.

The pages are FastAPI's own HTML pointed at the vendored assets. They are built once, so the
hashes of their inline scripts are known up front and the docs CSP allows exactly those.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.openapi.utils import get_openapi
from fastapi.staticfiles import StaticFiles
from starlette.responses import HTMLResponse

from backend.errors import error_codes

STATIC_DIR = Path(__file__).resolve().parent / "static"
OPENAPI_URL = "/openapi.json"
OAUTH2_REDIRECT_URL = "/docs/oauth2-redirect"
TITLE = "Taskdeck API"

OPENAPI_TAGS: list[dict[str, Any]] = [
    {
        "name": "auth",
        "description": "Register, sign in (JSON or the OAuth2 password form), rotate refresh tokens, "
        "sign out. Access tokens last 15 minutes; refresh tokens are single-use.",
    },
    {
        "name": "tasks",
        "description": "Your tasks under `/api/{user_id}/tasks`: filter, search, sort, paginate, "
        "complete. `{user_id}` must be the token's subject (else 403).",
    },
    {
        "name": "labels",
        "description": "Your labels under `/api/{user_id}/labels`, with the number of tasks carrying each: "
        "rename or delete one on every task. A task's labels are set on the task (`labels`).",
    },
    {
        "name": "projects",
        "description": "GitHub repositories pinned to your dashboard (at most 50): pin, reorder, "
        "update, unpin, export as JSON.",
    },
    {
        "name": "batch",
        "description": "Up to 100 task and project commands in one request, applied in order, each on its own, "
        "each command id at most once (a batch can be sent again after a timeout). See specs/api/batch.md.",
    },
    {
        "name": "sync runs",
        "description": "Refresh a pinned repository's metadata from GitHub in the background: start a run "
        "(202), poll its stages and progress, list the project's history. One active run per project.",
    },
    {
        "name": "tasks (earlier drafts)",
        "description": "Deprecated paths without `{user_id}` (they act on the token's user). Same "
        "handlers and envelopes as **tasks**; new clients should not use them.",
    },
    {
        "name": "projects (earlier drafts)",
        "description": "Deprecated `/api/projects/...` paths acting on the token's user. Same handlers "
        "and envelopes as **projects**.",
    },
    {
        "name": "account",
        "description": "Your whole account as one JSON download, and erasure of the account with everything "
        "it owns (password, or a fresh Better-Auth token, required).",
    },
    {
        "name": "changes",
        "description": "The change feed: every change of your tasks and pinned projects after a cursor, in commit "
        "order (full sync without a cursor, then incremental); a live event's `id` is a cursor too.",
    },
    {
        "name": "events",
        "description": "A live Server-Sent Events stream of your changes (`task.*`, `project.*`, `sync.*`), "
        "with `Last-Event-ID` resume; browsers get a single-use ticket instead of sending a header.",
    },
    {
        "name": "operations",
        "description": "Prometheus metrics (`/metrics`), protected by `METRICS_TOKEN` when it is set.",
    },
    {"name": "health", "description": "Readiness (`/health`, checks the database) and liveness (`/health/live`)."},
]

OAUTH2_SCHEME = "OAuth2Password"

_swagger = get_swagger_ui_html(
    openapi_url=OPENAPI_URL,
    title=f"{TITLE} - Swagger UI",
    swagger_js_url="/static/swagger-ui/swagger-ui-bundle.js",
    swagger_css_url="/static/swagger-ui/swagger-ui.css",
    swagger_favicon_url="/static/swagger-ui/favicon-32x32.png",
    oauth2_redirect_url=OAUTH2_REDIRECT_URL,
    # No online validator badge: nothing on the page may leave the machine.
    swagger_ui_parameters={"validatorUrl": None, "displayRequestDuration": True},
)
_redoc = get_redoc_html(
    openapi_url=OPENAPI_URL,
    title=f"{TITLE} - ReDoc",
    redoc_js_url="/static/redoc/redoc.standalone.js",
    redoc_favicon_url="/static/swagger-ui/favicon-32x32.png",
    with_google_fonts=False,
)
_oauth2_redirect = get_swagger_ui_oauth2_redirect_html()
PAGES: dict[str, bytes] = {
    "/docs": bytes(_swagger.body),
    "/redoc": bytes(_redoc.body),
    OAUTH2_REDIRECT_URL: bytes(_oauth2_redirect.body),
}

_INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.DOTALL)


def _script_hashes(pages: dict[str, bytes]) -> list[str]:
    digests = {
        "'sha256-" + base64.b64encode(hashlib.sha256(script).digest()).decode() + "'"
        for body in pages.values()
        for script in _INLINE_SCRIPT.findall(body)
    }
    return sorted(digests)


# Scripts: our files and the pages' own inline scripts (by hash), nothing else. Styles stay
# 'unsafe-inline': Swagger UI sets style attributes and ReDoc injects <style> elements at runtime.
# ReDoc runs its search index in a worker created from a blob: URL.
DOCS_CSP = (
    f"default-src 'none'; script-src 'self' {' '.join(_script_hashes(PAGES))}; "
    "style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; connect-src 'self'; "
    "worker-src 'self' blob:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


def install_docs(app: FastAPI) -> None:
    """Mount /static and serve /docs, /redoc and the OAuth2 redirect page (none of them in the schema)."""
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    def page(path: str) -> None:
        body = PAGES[path]

        async def serve() -> HTMLResponse:
            return HTMLResponse(body)

        app.add_api_route(path, serve, methods=["GET"], include_in_schema=False, name=f"docs:{path}")

    for path in PAGES:
        page(path)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
                tags=app.openapi_tags,
            )
            app.openapi_schema = with_error_codes(with_schema_names(with_password_flow(schema)))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def with_password_flow(schema: dict[str, Any]) -> dict[str, Any]:
    """Offer the OAuth2 password flow beside the plain bearer token, so *Authorize* can sign in
    with an email and password (`POST /api/auth/token`). Both end up as the same bearer header."""
    schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
    schemes[OAUTH2_SCHEME] = {
        "type": "oauth2",
        "description": "Email as `username`, and password. Swagger UI then sends the access token as a bearer token.",
        "flows": {"password": {"tokenUrl": "/api/auth/token", "scopes": {}}},
    }
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            security = operation.get("security")
            # Only where a user's bearer token is accepted (not, e.g., the metrics token).
            if security and {"HTTPBearer": []} in security and {OAUTH2_SCHEME: []} not in security:
                security.append({OAUTH2_SCHEME: []})
    return schema


# Schemas FastAPI names itself, under the names a client author would choose.
SCHEMA_NAMES = {"Body_oauth2_token": "OAuth2PasswordForm"}
ERROR_CODE_SCHEMA = "ErrorCode"


def with_schema_names(schema: dict[str, Any]) -> dict[str, Any]:
    """Rename the schemas of SCHEMA_NAMES, and every reference to them."""
    schemas = schema.get("components", {}).get("schemas", {})
    renamed = {old: new for old, new in SCHEMA_NAMES.items() if old in schemas}
    for old, new in renamed.items():
        schemas[new] = {**schemas.pop(old), "title": new}
    refs = {f"#/components/schemas/{old}": f"#/components/schemas/{new}" for old, new in renamed.items()}

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("$ref") in refs:
                node["$ref"] = refs[node["$ref"]]
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(schema)
    return schema


def with_error_codes(schema: dict[str, Any]) -> dict[str, Any]:
    """`ErrorBody.code` as the enum of every code the API answers (from the AppError classes), so a client
    can switch over it exhaustively. A new error class adds its code here by itself."""
    schemas = schema["components"]["schemas"]
    schemas[ERROR_CODE_SCHEMA] = {
        "title": ERROR_CODE_SCHEMA,
        "type": "string",
        "enum": error_codes(),
        "description": "Every `error.code` the API answers; each error status's description says which it carries.",
    }
    schemas["ErrorBody"]["properties"]["code"] = {"$ref": f"#/components/schemas/{ERROR_CODE_SCHEMA}"}
    return schema


def openapi_text(schema: dict[str, Any]) -> str:
    """The document as committed in specs/openapi.json: keys sorted, two-space indents, a final newline."""
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
