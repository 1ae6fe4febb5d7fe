"""The GitHub REST client and the default sync stages: repository, release, commit, summary.

Every failure becomes a StageError with a message a dashboard can show. The token is only ever
sent in the Authorization header: it is never logged and never part of a message. This module
does not import the settings: backend/main.py builds the runner's client factory from
`make_client`, and every stage gets its run's client as `ctx.http`.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from backend.models.common import iso_z
from backend.sync.stages import StageError, SyncContext

if TYPE_CHECKING:
    import httpx

API_VERSION = "2022-11-28"
DEFAULT_RATE_LIMIT_WAIT = 60  # GitHub's advice when it names no time
ModelT = TypeVar("ModelT", bound=BaseModel)


def make_client(*, api_url: str, token: str | None, timeout: float, app_version: str) -> httpx.AsyncClient:
    """A client for one sync run: GITHUB_API_URL, GITHUB_TOKEN (if any), GITHUB_TIMEOUT_SECONDS."""
    import httpx  # at the first run: a served process without one never carries it (specs/performance.md, RSS)

    headers = {
        "User-Agent": f"taskdeck-api/{app_version}",
        "Accept": "application/vnd.github+json",
        "X-GitHub-Api-Version": API_VERSION,
    }
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.AsyncClient(
        base_url=api_url.rstrip("/"),
        headers=headers,
        timeout=httpx.Timeout(timeout),
        # Renamed or transferred repositories answer 301; httpx drops Authorization on a cross-origin hop.
        follow_redirects=True,
    )


def _rate_limit_wait(response: httpx.Response) -> int | None:
    """Seconds until GitHub takes requests again, or None when this is no rate-limit answer."""
    retry_after = response.headers.get("retry-after", "")
    if retry_after.strip().isdigit():
        return max(1, int(retry_after))
    if response.headers.get("x-ratelimit-remaining") != "0":
        return None
    reset = response.headers.get("x-ratelimit-reset", "")
    if reset.strip().isdigit():
        return max(1, int(reset) - int(time.time()))
    return DEFAULT_RATE_LIMIT_WAIT


def _failure(response: httpx.Response, what: str) -> StageError:
    status = response.status_code
    if status in (403, 429):
        wait = _rate_limit_wait(response)
        if wait is not None:
            return StageError(f"GitHub rate limit reached; retry after {wait} s")
    if status == 404:
        return StageError(f"{what} not found on GitHub")
    if status == 401:
        return StageError("GitHub rejected the token (401); check GITHUB_TOKEN")
    if status == 403:
        return StageError(f"GitHub refused access to {what} (403)")
    if status >= 500:
        return StageError(f"GitHub answered {status} for {what}; try again later")
    return StageError(f"GitHub answered {status} for {what}")


async def get_json(
    ctx: SyncContext, path: str, what: str, *, params: dict[str, Any] | None = None, absent: tuple[int, ...] = ()
) -> Any:
    """GET a GitHub resource as JSON; None when it answers one of the `absent` statuses."""
    import httpx  # loaded by then: ctx.http is one of its clients

    try:
        response = await ctx.http.get(path, params=params)
    except httpx.TimeoutException:
        raise StageError(f"GitHub did not answer within {ctx.settings.GITHUB_TIMEOUT_SECONDS:g} s") from None
    except httpx.HTTPError:
        raise StageError("GitHub could not be reached") from None
    if response.status_code in absent:
        return None
    if not response.is_success:
        raise _failure(response, what)
    try:
        return response.json()
    except ValueError:
        raise StageError(f"GitHub answered with invalid JSON for {what}") from None


def _parse(model: type[ModelT], data: Any, what: str) -> ModelT:
    try:
        return model.model_validate(data)
    except ValidationError:
        raise StageError(f"GitHub answered with an unexpected shape for {what}") from None


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _License(_Lenient):
    spdx_id: str | None = None


class _Repository(_Lenient):
    full_name: str
    description: str | None = None
    html_url: str | None = None
    stargazers_count: int = 0
    forks_count: int = 0
    open_issues_count: int = 0
    language: str | None = None
    default_branch: str
    pushed_at: datetime | None = None
    topics: list[str] = Field(default_factory=list)
    archived: bool = False
    license: _License | None = None


class _Release(_Lenient):
    tag_name: str
    name: str | None = None
    published_at: datetime | None = None
    html_url: str | None = None


class _Person(_Lenient):
    name: str | None = None
    date: datetime | None = None


class _CommitDetail(_Lenient):
    message: str = ""
    author: _Person | None = None
    committer: _Person | None = None


class _Commit(_Lenient):
    sha: str
    html_url: str | None = None
    commit: _CommitDetail


def _iso(moment: datetime | None) -> str | None:
    return iso_z(moment) if moment else None


async def repository(ctx: SyncContext) -> dict[str, Any]:
    """Repository metadata: stars, forks, open issues, language, default branch, pushed at, topics, licence."""
    what = f"repository {ctx.project.github_repo_name}"
    repo = _parse(_Repository, await get_json(ctx, f"/repos/{ctx.project.github_repo_name}", what), what)
    return {
        "full_name": repo.full_name,
        "description": repo.description,
        "html_url": repo.html_url,
        "stars": repo.stargazers_count,
        "forks": repo.forks_count,
        "open_issues": repo.open_issues_count,
        "language": repo.language,
        "default_branch": repo.default_branch,
        "pushed_at": _iso(repo.pushed_at),
        "topics": repo.topics,
        "archived": repo.archived,
        "license": repo.license.spdx_id if repo.license else None,
    }


async def release(ctx: SyncContext) -> dict[str, Any]:
    """The latest published release; a repository without one is not a failure."""
    what = "the latest release"
    data = await get_json(ctx, f"/repos/{ctx.project.github_repo_name}/releases/latest", what, absent=(404,))
    if data is None:
        return {"latest_release": None}
    found = _parse(_Release, data, what)
    return {
        "latest_release": {
            "tag": found.tag_name,
            "name": found.name,
            "published_at": _iso(found.published_at),
            "html_url": found.html_url,
        }
    }


async def commit(ctx: SyncContext) -> dict[str, Any]:
    """The newest commit on the default branch (an empty repository has none)."""
    branch = ctx.results.get("repository", {}).get("default_branch")
    if not branch:
        raise StageError("no default branch known: the repository stage must run before this one")
    what = f"the commits of branch {branch}"
    params = {"sha": branch, "per_page": 1}
    # 409: "Git Repository is empty".
    data = await get_json(ctx, f"/repos/{ctx.project.github_repo_name}/commits", what, params=params, absent=(409,))
    if not data:
        return {"latest_commit": None}
    if not isinstance(data, list):
        raise StageError(f"GitHub answered with an unexpected shape for {what}")
    newest = _parse(_Commit, data[0], what)
    person = newest.commit.committer or newest.commit.author
    return {
        "latest_commit": {
            "sha": newest.sha,
            "message": newest.commit.message.split("\n", 1)[0][:200],
            "author": newest.commit.author.name if newest.commit.author else None,
            "committed_at": _iso(person.date if person else None),
            "html_url": newest.html_url,
        }
    }


async def summary(ctx: SyncContext) -> dict[str, Any]:
    """What the dashboard shows at a glance, from the stages before."""
    repo = ctx.results.get("repository")
    if not repo:
        raise StageError("nothing to summarise: the repository stage must run before this one")
    latest_release = ctx.results.get("release", {}).get("latest_release")
    latest_commit = ctx.results.get("commit", {}).get("latest_commit")
    moments = [repo.get("pushed_at"), latest_commit.get("committed_at") if latest_commit else None]
    latest = max((datetime.fromisoformat(m) for m in moments if m), default=None)
    return {"latest_version": latest_release["tag"] if latest_release else None, "last_activity_at": _iso(latest)}
