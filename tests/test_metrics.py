"""`GET /metrics`: scraped and parsed after real traffic; token protection; one registry per app."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from backend.main import create_app
from backend.metrics import record_sync_outcome
from tests.conftest import assert_error, make_settings, make_user


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, keyed by name and sorted labels."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(scrape: dict, name: str, **labels: str) -> float:
    return scrape[(name, tuple(sorted(labels.items())))]


async def scrape(client: httpx.AsyncClient, **kwargs) -> dict:
    response = await client.get("/metrics", **kwargs)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return samples(response.text)


@pytest.mark.committing  # reads the pool gauge: a rolled-back test holds a connection of the pool
async def test_counts_requests_by_route_template_after_traffic(client, app):
    user = await make_user(client)
    for title in ("one", "two", "three"):
        created = await client.post(f"/api/{user.id}/tasks", json={"title": title}, headers=user.headers)
        assert created.status_code == 201
    assert (await client.get(f"/api/{user.id}/tasks/999999", headers=user.headers)).status_code == 404
    assert (await client.get("/no/such/route")).status_code == 404

    scraped = await scrape(client)
    total = "taskdeck_http_requests_total"
    assert value(scraped, total, route="/api/{user_id}/tasks", method="POST", status="201") == 3
    assert value(scraped, total, route="/api/{user_id}/tasks/{task_id}", method="GET", status="404") == 1
    assert value(scraped, total, route="/api/auth/register", method="POST", status="201") == 1
    assert value(scraped, total, route="<unmatched>", method="GET", status="404") == 1
    # No concrete path (a user id) ever becomes a label value.
    assert not any(user.id in str(labels) for _, labels in scraped)
    latency = "taskdeck_http_request_duration_seconds_count"
    assert value(scraped, latency, route="/api/{user_id}/tasks", method="POST") == 3
    assert value(scraped, "taskdeck_db_pool_connections_in_use") == 0
    assert value(scraped, "taskdeck_event_stream_clients") == 0
    assert value(scraped, "taskdeck_sync_runs_total", outcome="failed") == 0


async def test_sync_outcomes_are_counted(client, app):
    record_sync_outcome(app.state, "succeeded")
    record_sync_outcome(app.state, "succeeded")
    record_sync_outcome(app.state, "failed")
    scraped = await scrape(client)
    assert value(scraped, "taskdeck_sync_runs_total", outcome="succeeded") == 2
    assert value(scraped, "taskdeck_sync_runs_total", outcome="failed") == 1


@pytest.mark.parametrize("settings_overrides", [{"RATE_LIMIT_ENABLED": True, "RATE_LIMIT_DEFAULT": "2/minute"}])
async def test_rate_limit_refusals_by_policy_and_metrics_exempt(client):
    statuses = [(await client.get("/no/such/route")).status_code for _ in range(4)]
    assert statuses == [404, 404, 429, 429]
    for _ in range(3):  # the scrape itself is never limited
        scraped = await scrape(client)
    assert value(scraped, "taskdeck_rate_limit_refusals_total", policy="default") == 2
    assert value(scraped, "taskdeck_http_requests_total", route="<unmatched>", method="GET", status="429") == 2


TOKEN = "scrape-token-" + "x" * 24


@pytest.mark.parametrize("settings_overrides", [{"METRICS_TOKEN": TOKEN}])
async def test_token_protects_the_endpoint(client):
    assert_error(await client.get("/metrics"), 401, "NOT_AUTHENTICATED")
    wrong = await client.get("/metrics", headers={"Authorization": "Bearer " + "y" * len(TOKEN)})
    assert_error(wrong, 401, "INVALID_TOKEN")
    assert wrong.headers["www-authenticate"] == "Bearer"
    scraped = await scrape(client, headers={"Authorization": f"Bearer {TOKEN}"})
    assert value(scraped, "taskdeck_http_requests_total", route="/metrics", method="GET", status="401") == 2


async def test_each_app_has_its_own_registry(client, app, database_url, data_dir):
    other = create_app(make_settings(database_url, data_dir))
    transport = httpx.ASGITransport(app=other, raise_app_exceptions=False)
    async with (
        other.router.lifespan_context(other),
        httpx.AsyncClient(transport=transport, base_url="http://testserver") as other_client,
    ):
        for _ in range(2):
            assert (await other_client.get("/health/live")).status_code == 200
        mine = await scrape(client)
        theirs = await scrape(other_client)
    key = ("taskdeck_http_requests_total", (("method", "GET"), ("route", "/health/live"), ("status", "200")))
    assert theirs[key] == 2
    assert key not in mine


async def test_documented_in_openapi(client):
    operation = (await client.get("/openapi.json")).json()["paths"]["/metrics"]["get"]
    assert "text/plain" in operation["responses"]["200"]["content"]
    assert "401" in operation["responses"]
    assert operation["security"] == [{"MetricsToken": []}]
