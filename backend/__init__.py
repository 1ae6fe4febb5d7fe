"""Taskdeck API: FastAPI + SQLModel backend."""
