"""SQLModel families: one module per entity. Importing this package registers every table."""

from backend.models.batch import BatchCommand
from backend.models.change import Change
from backend.models.idempotency import IdempotencyKey
from backend.models.label import Label, TaskLabel
from backend.models.project import Project
from backend.models.session import AuthSession, RefreshToken
from backend.models.sync_run import SyncRun
from backend.models.task import Task
from backend.models.user import User
from backend.models.versioning import install as _install_versioning

_install_versioning(Task, Project)

__all__ = [
    "AuthSession",
    "BatchCommand",
    "Change",
    "IdempotencyKey",
    "Label",
    "Project",
    "RefreshToken",
    "SyncRun",
    "Task",
    "TaskLabel",
    "User",
]
