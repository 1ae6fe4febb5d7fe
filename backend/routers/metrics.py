"""`GET /metrics`: Prometheus text format, behind `METRICS_TOKEN` when one is set."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST

from backend.deps import SettingsDep
from backend.errors import InvalidToken, NotAuthenticated, responses
from backend.metrics import Metrics

router = APIRouter(tags=["operations"])
metrics_bearer = HTTPBearer(auto_error=False, scheme_name="MetricsToken", description="The METRICS_TOKEN, when set")


async def require_metrics_token(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(metrics_bearer)],
) -> None:
    expected = settings.METRICS_TOKEN
    if expected is None:
        return
    presented = credentials.credentials if credentials is not None else ""
    if not hmac.compare_digest(presented.encode(), expected.encode()):
        raise (InvalidToken if presented else NotAuthenticated)("A valid metrics token is required")


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    operation_id="metrics",
    response_class=Response,
    dependencies=[Depends(require_metrics_token)],
    responses={
        200: {
            "description": "Prometheus text exposition format: requests by route template, method and status; "
            "latency histograms; database connections in use; rate-limit refusals by policy; sync runs by "
            "outcome; connected event-stream clients.",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        },
        **responses(401),
    },
)
async def metrics(request: Request) -> Response:
    """Open when `METRICS_TOKEN` is unset; otherwise send it as `Authorization: Bearer <METRICS_TOKEN>`."""
    registry: Metrics = request.app.state.metrics
    return Response(registry.render(), media_type=CONTENT_TYPE_LATEST)
