"""The chat application's request and response shapes (the web page codes against these).

One class per role: XCreate, XUpdate (all optional), XPublic; lists are {data, next_cursor}.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, EmailStr, Field, field_validator

T = TypeVar("T")

MAX_CONTENT = 200_000  # characters in one message; the body limit (8 MiB) is the other cap


def _utc(t: datetime) -> datetime:
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Page(BaseModel, Generic[T]):
    data: list[T]
    next_cursor: str | None = None


# --- accounts ---


class SignupRequest(Strict):
    email: EmailStr
    password: str = Field(min_length=8, max_length=1000)
    name: str = Field(min_length=1, max_length=200)


class LoginRequest(Strict):
    email: str = Field(max_length=320)
    password: str = Field(max_length=1000)


class PasswordChange(Strict):
    current_password: str = Field(max_length=1000)
    new_password: str = Field(min_length=8, max_length=1000)


class UserPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    email: str
    name: str
    role: Literal["user", "admin"]
    status: Literal["active", "pending", "disabled"]
    training_consent: bool
    created_at: datetime

    @field_validator("created_at")
    @classmethod
    def _tz(cls, v: datetime) -> datetime:
        return _utc(v)


# --- projects ---


class ProjectCreate(Strict):
    name: str = Field(min_length=1, max_length=200)
    instructions: str = Field(default="", max_length=MAX_CONTENT)


class ProjectUpdate(Strict):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    instructions: str | None = Field(default=None, max_length=MAX_CONTENT)


class ProjectPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    name: str
    instructions: str
    created_at: datetime
    updated_at: datetime

    @field_validator("created_at", "updated_at")
    @classmethod
    def _tz(cls, v: datetime) -> datetime:
        return _utc(v)


# --- conversations and messages ---


class ConversationCreate(Strict):
    title: str | None = Field(default=None, max_length=200)
    model: str | None = Field(default=None, max_length=200)
    system_prompt: str | None = Field(default=None, max_length=MAX_CONTENT)
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    # In no list, search or export, never training data; deleted when the page leaves it
    # (DELETE) or a day after it began.
    temporary: bool = False
    project_id: uuid.UUID | None = None  # a project of the caller's


class ConversationUpdate(Strict):
    title: str | None = Field(default=None, max_length=200)
    model: str | None = Field(default=None, max_length=200)
    system_prompt: str | None = Field(default=None, max_length=MAX_CONTENT)
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1, le=1_000_000)
    pinned: bool | None = None
    archived: bool | None = None
    # Switch the branch on show to the one ending at this message (of this conversation).
    current_leaf_id: uuid.UUID | None = None
    project_id: uuid.UUID | None = None  # a project of the caller's; null moves it out


class Attachment(BaseModel):
    """A file a user message attached, as it was when sent."""

    id: uuid.UUID
    name: str
    size: int
    content_type: str


class Source(BaseModel):
    """One numbered source of a search result: the model cites it as `[n]`."""

    n: int  # numbered on across the search steps of one answer: 1, 2, ...
    file_id: uuid.UUID
    file_name: str
    passage: int  # the passage's number in its file (0 first)
    page: int | None  # the PDF page it is on (1 first); None for other kinds
    text: str  # the passage as the model read it


class MessagePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    parent_id: uuid.UUID | None
    role: Literal["user", "assistant", "tool", "system"]
    content: str
    status: Literal["complete", "streaming", "stopped", "interrupted", "error"]
    model: str | None = None
    error: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    memory_used: bool = False  # the answer's prompt held the user's memory facts
    attachments: list[Attachment] = []  # a user message's files
    sources: list[Source] | None = None  # a search tool result's numbered file passages
    created_at: datetime

    @field_validator("created_at")
    @classmethod
    def _tz(cls, v: datetime) -> datetime:
        return _utc(v)

    @field_validator("attachments", mode="before")
    @classmethod
    def _none_is_empty(cls, v: Any) -> Any:
        return [] if v is None else v


class ConversationPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    title: str
    model: str | None
    system_prompt: str | None
    temperature: float | None
    max_tokens: int | None
    pinned: bool
    archived: bool
    temporary: bool
    current_leaf_id: uuid.UUID | None
    project_id: uuid.UUID | None = None
    created_at: datetime
    updated_at: datetime

    @field_validator("created_at", "updated_at")
    @classmethod
    def _tz(cls, v: datetime) -> datetime:
        return _utc(v)


class BranchMessage(MessagePublic):
    # Every message with the same parent (itself included), oldest first: the page shows
    # "2/3" and can switch branches after a reload, when only this branch is loaded.
    sibling_ids: list[uuid.UUID]


class ConversationDetail(ConversationPublic):
    messages: list[BranchMessage]  # the current branch, root first (its last `limit`)
    # Where the earlier part of a long branch continues: pass it as `before` (None: the
    # page starts at the root).
    messages_before: uuid.UUID | None = None


class MessageCreate(Strict):
    content: str = Field(min_length=1, max_length=MAX_CONTENT)
    # The message to answer under; default: the leaf of the branch on show.
    parent_id: uuid.UUID | None = None
    # The caller's files (POST /api/files) to attach: they become the conversation's files.
    file_ids: list[uuid.UUID] = Field(default_factory=list, max_length=100)


# --- files ---


class FilePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    name: str
    size: int  # bytes
    content_type: str  # the server's, by the file's extension
    status: Literal["ready", "error"]
    conversation_id: uuid.UUID | None = None  # the chat it was uploaded into (or attached in)
    project_id: uuid.UUID | None = None
    text_chars: int = 0  # characters of text read out of it
    created_at: datetime

    @field_validator("created_at")
    @classmethod
    def _tz(cls, v: datetime) -> datetime:
        return _utc(v)


class MessageEdit(Strict):
    content: str = Field(min_length=1, max_length=MAX_CONTENT)


# --- presets (saved system prompts) ---

MAX_PRESET_PROMPT = 20_000  # characters; a system prompt is read before every answer


class PresetCreate(Strict):
    name: str = Field(min_length=1, max_length=200)
    system_prompt: str = Field(min_length=1, max_length=MAX_PRESET_PROMPT)
    shared: bool = False  # every user sees it; only an administrator may publish one


class PresetPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: uuid.UUID
    name: str
    system_prompt: str
    shared: bool
    mine: bool  # whether the caller made it (and may delete it)
    created_at: datetime

    @field_validator("created_at")
    @classmethod
    def _tz(cls, v: datetime) -> datetime:
        return _utc(v)


# --- the event contract ---


class DeltaData(BaseModel):
    message_id: uuid.UUID
    text: str


class DoneData(BaseModel):
    message: MessagePublic


class ErrorData(BaseModel):
    message_id: uuid.UUID | None
    error: str


class EventFrame(BaseModel):
    """One event as the WebSocket carries it (SSE carries the same as id/event/data lines)."""

    id: str
    event: Literal["message", "delta", "tool_call", "tool_result", "done", "error"]
    data: dict[str, Any]


class Stopped(BaseModel):
    stopping: bool  # whether a generation was running


# --- running the code of an answer ---


class RunRequest(Strict):
    language: Literal["python"]
    code: str  # at most runs.MAX_CODE_CHARS characters (413 past them)


class RunFile(BaseModel):
    """A file the program left in its working directory (the first 8, 4 MiB in all)."""

    name: str  # a plain file name, no directories
    content_type: str  # guessed from the name; application/octet-stream when unknown
    size: int  # bytes
    data_base64: str


class RunResult(BaseModel):
    stdout: str  # the last 4,000 characters
    stderr: str  # the last 4,000 characters
    # The exit status when the program ended by itself (0 is success), else a string saying
    # what ended it: "killed (time limit of 10 s)", "killed (CPU time limit of 5 s)",
    # "killed (SIGKILL)" (as the memory cap does).
    exit_status: int | str
    files: list[RunFile]


class PreviewCreate(Strict):
    html: str  # at most runs.MAX_PREVIEW_CHARS characters (413 past them)


class PreviewCreated(BaseModel):
    id: str
    url: str  # GET it (as its owner) within 15 minutes: the page frames it
