"""Which methods a path has, read from the app's route table: the `Allow` of every 405.

Two templates can match one path: `/api/{user_id}/tasks/search` and `/api/{user_id}/tasks/{task_id}` both
match `/api/u1/tasks/search`. The path belongs to the more specific one, the template whose first differing
segment is literal where the other's is a parameter: `search` is never a task id, so `PUT .../tasks/search`
is `405 Allow: GET`, not a `PUT .../tasks/{task_id}` with a task id that fails validation (422).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from starlette.routing import compile_path
from starlette.types import Scope


@dataclass(frozen=True)
class Template:
    path: str
    regex: re.Pattern[str]
    methods: frozenset[str]

    @property
    def segments(self) -> list[str]:
        return self.path.strip("/").split("/")

    @property
    def specificity(self) -> tuple[int, ...]:
        """Literal segments 1, parameters 0: of two templates matching a path, the greater one owns it."""
        return tuple(0 if segment.startswith("{") else 1 for segment in self.segments)

    def overlaps(self, other: Template) -> bool:
        """Some path matches both: segment by segment, equal, or a parameter on either side."""
        mine, theirs = self.segments, other.segments
        if len(mine) != len(theirs):
            return False
        return all(a == b or a.startswith("{") or b.startswith("{") for a, b in zip(mine, theirs, strict=True))


class RouteTable:
    """The app's path templates with their methods, and those that take paths a less specific one also matches."""

    def __init__(self, routes: Iterable[tuple[str, Iterable[str]]]) -> None:
        methods: dict[str, set[str]] = {}
        for path, route_methods in routes:
            methods.setdefault(path, set()).update(route_methods)
        self.templates = [Template(path, compile_path(path)[0], frozenset(m)) for path, m in methods.items()]
        self.shadowing = [
            template
            for template in self.templates
            if any(
                other.overlaps(template) and other.specificity < template.specificity
                for other in self.templates
                if other is not template
            )
        ]

    @classmethod
    def of(cls, app: FastAPI) -> RouteTable:
        """The app's table, built on first use (once every route is included) and kept on `app.state`."""
        table: RouteTable | None = getattr(app.state, "route_table", None)
        if table is None:
            routes = iter_route_contexts(app.routes)
            table = cls((route.path, route.methods) for route in routes if route.path and route.methods)
            app.state.route_table = table
        return table

    def allowed(self, path: str) -> frozenset[str]:
        """The methods of the most specific templates matching `path` (none: no route has it)."""
        matching = [template for template in self.templates if template.regex.match(path)]
        if not matching:
            return frozenset()
        best = max(template.specificity for template in matching)
        return frozenset().union(*(t.methods for t in matching if t.specificity == best))

    def refused(self, method: str, path: str) -> frozenset[str] | None:
        """For a path a more specific template takes from a less specific one: its methods, if `method` is
        not one of them (the request is a 405). None otherwise: routing decides as usual."""
        if not any(template.regex.match(path) for template in self.shadowing):
            return None
        allowed = self.allowed(path)
        return None if method in allowed else allowed


def route_path(scope: Scope) -> str:
    """The path routing matches: the request's path below the app's `root_path`."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path
