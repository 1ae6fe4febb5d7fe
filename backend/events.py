"""Live change events (placeholder until the event bus lands)."""

from __future__ import annotations

from typing import Any


async def publish(state: Any, user_id: str, event_type: str, data: Any) -> None:
    """Send `event_type` with `data` to the user's live event streams (on every instance)."""
    bus = getattr(state, "events", None)
    if bus is not None:
        await bus.publish(user_id, event_type, data)
