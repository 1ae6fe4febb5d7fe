"""Row versions: every ORM update of a versioned row bumps its `version`, the source of its ETag."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event


def _bump(_mapper: Any, _connection: Any, target: Any) -> None:
    target.version = (target.version or 0) + 1


def install(*models: type[Any]) -> None:
    """Any flush that updates one of these rows bumps its version (a Core UPDATE statement does not)."""
    for model in models:
        if not event.contains(model, "before_update", _bump):
            event.listen(model, "before_update", _bump)
