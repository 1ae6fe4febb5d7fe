"""SQLModel families: one module per entity. Importing this package registers every table."""

from backend.models.project import Project
from backend.models.session import AuthSession, RefreshToken
from backend.models.sync_run import SyncRun
from backend.models.task import Task
from backend.models.user import User

__all__ = ["AuthSession", "Project", "RefreshToken", "SyncRun", "Task", "User"]
