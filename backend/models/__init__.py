"""SQLModel families: one module per entity. Importing this package registers every table."""

from backend.models.session import AuthSession, RefreshToken
from backend.models.task import Task
from backend.models.user import User

__all__ = ["AuthSession", "RefreshToken", "Task", "User"]
