"""Labels: per-user names a task carries (`labels` on a task), compared case-insensitively.

A label is stored once per user, spelt as first written (`name`), with `key` (`name.casefold()`, computed in
Python so SQLite and PostgreSQL agree) unique per user. `task_labels` links tasks to labels in the order the
client sent them (`position`)."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, ConfigDict, StringConstraints
from pydantic import Field as PydanticField
from sqlalchemy import Column, ForeignKey, Index, Integer, UniqueConstraint
from sqlmodel import Field, SQLModel

from backend.models.common import NON_BLANK, RESPONSE_CONFIG

MAX_LABELS_PER_TASK = 20
MAX_LABEL_LENGTH = 60

# Trimmed, 1-60 characters, not blank, no U+0000 (the same rules as a task's title).
LabelName = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=MAX_LABEL_LENGTH, pattern=NON_BLANK)
]


def label_key(name: str) -> str:
    """What two spellings of one label share: `Work`, `WORK` and `work` are one label."""
    return name.casefold()


def _dedupe(names: list[str]) -> list[str]:
    """Order kept as sent; a later spelling of a label already in the list is dropped."""
    seen: set[str] = set()
    kept: list[str] = []
    for name in names:
        if (key := label_key(name)) not in seen:
            seen.add(key)
            kept.append(name)
    return kept


# A task's labels as a client sends them: at most 20 names, deduplicated case-insensitively, order kept.
LabelNames = Annotated[
    list[LabelName],
    PydanticField(max_length=MAX_LABELS_PER_TASK, examples=[["work", "urgent"]]),
    AfterValidator(_dedupe),
]


class Label(SQLModel, table=True):
    __tablename__ = "labels"
    __table_args__ = (UniqueConstraint("user_id", "key", name="uq_labels_user_id_key"),)

    id: int | None = Field(default=None, primary_key=True)
    user_id: str = Field(foreign_key="users.id", ondelete="CASCADE", max_length=64)
    name: str = Field(max_length=MAX_LABEL_LENGTH)  # as first written (or as last renamed)
    key: str = Field(max_length=255)  # label_key(name): casefold() may lengthen a name (ß -> ss)


class TaskLabel(SQLModel, table=True):
    __tablename__ = "task_labels"
    __table_args__ = (
        # The `label=` filter and a label's task count: from a label to its tasks.
        Index("ix_task_labels_label_id_task_id", "label_id", "task_id"),
    )

    task_id: int = Field(
        sa_column=Column(Integer, ForeignKey("tasks.id", ondelete="CASCADE"), primary_key=True, nullable=False)
    )
    label_id: int = Field(
        sa_column=Column(Integer, ForeignKey("labels.id", ondelete="CASCADE"), primary_key=True, nullable=False)
    )
    position: int  # the order the client sent the task's labels in


class LabelPublic(SQLModel):
    model_config = RESPONSE_CONFIG  # type: ignore[assignment]

    name: str = Field(schema_extra={"examples": ["work"]})
    task_count: int = Field(schema_extra={"examples": [3]})


class LabelRename(SQLModel):
    """The label's new name (1-60 chars, trimmed). Another case of the same name changes its spelling."""

    model_config = ConfigDict(extra="forbid")  # type: ignore[assignment]

    name: LabelName = Field(schema_extra={"examples": ["Work"]})
