"""The chat application's tables (SQLAlchemy 2). Alembic migrations in `migrations/` create
them; change both together (`alembic revision --autogenerate` against this metadata).

A conversation is a tree of messages, one row each (`parent_id`), never a document
rewritten on every message; the conversation remembers the leaf of its current branch.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Uuid,
    event,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from fireside.store.text import SafeString, SafeText, storable

# Named constraints, so migrations can refer to them on every backend.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def now() -> datetime:
    return datetime.now(UTC)


class UtcDateTime(TypeDecorator[datetime]):
    """A time stored in UTC, read back with its timezone on every backend: SQLite keeps none,
    and a naive time would reach responses without one (not an RFC 3339 date-time)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if isinstance(value, datetime) and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class User(Base):
    __tablename__ = "users"
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    email: Mapped[str] = mapped_column(SafeString(320), unique=True)  # stored lower-cased
    name: Mapped[str] = mapped_column(SafeString(200))
    password_hash: Mapped[str | None] = mapped_column(SafeString(200))  # None: OIDC-only account
    role: Mapped[str] = mapped_column(SafeString(16), default="user")  # user | admin
    status: Mapped[str] = mapped_column(SafeString(16), default="active")  # active|pending|disabled
    training_consent: Mapped[bool] = mapped_column(Boolean, default=False)
    # Custom instructions, copied into each new conversation's system prompt (0009).
    about_me: Mapped[str | None] = mapped_column(SafeText)
    response_style: Mapped[str | None] = mapped_column(SafeText)
    memory_enabled: Mapped[bool] = mapped_column(Boolean, default=True, server_default=text("true"))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=now)


class Session(Base):
    """A login. The cookie holds a random token; only its SHA-256 is stored, so a leaked
    table logs nobody in. Deleting the row is revocation, seen by the next request anywhere."""

    __tablename__ = "sessions"
    token_hash: Mapped[str] = mapped_column(SafeString(64), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=now)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    __table_args__ = (Index("ix_sessions_user_id", "user_id"),)


class ApiKey(Base):
    __tablename__ = "api_keys"
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(SafeString(200))
    prefix: Mapped[str] = mapped_column(
        SafeString(16)
    )  # shown in lists, so a key can be told apart
    key_hash: Mapped[str] = mapped_column(SafeString(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=now)
    last_used_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime)  # None: never (0006)
    __table_args__ = (Index("ix_api_keys_user_id", "user_id"),)


class Project(Base):
    """A named group of conversations whose instructions go into each one's prompt."""

    __tablename__ = "projects"
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(SafeString(200))
    instructions: Mapped[str] = mapped_column(SafeText, default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=now)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=now)
    __table_args__ = (Index("ix_projects_user_updated", "user_id", "updated_at", "id"),)


class Conversation(Base):
    __tablename__ = "conversations"
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    title: Mapped[str] = mapped_column(SafeString(200), default="")
    model: Mapped[str | None] = mapped_column(SafeString(200))
    system_prompt: Mapped[str | None] = mapped_column(SafeText)
    temperature: Mapped[float | None] = mapped_column(Float)
    max_tokens: Mapped[int | None] = mapped_column(Integer)
    pinned: Mapped[bool] = mapped_column(Boolean, default=False)
    archived: Mapped[bool] = mapped_column(Boolean, default=False)
    # A temporary chat (0010): in no list, search, export or training data; deleted when its
    # page closes it, or by the sweep a day after it began.
    temporary: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    # The leaf of the branch on show; no foreign key, so that deleting a conversation's
    # messages needs no ordering dance.
    current_leaf_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    # The project it is in (None: none). No foreign key either: SQLite cannot add one to a
    # table without copying it, and deleting a project moves or deletes its chats itself (0008).
    project_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=now)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=now)
    __table_args__ = (
        Index("ix_conversations_user_updated", "user_id", "updated_at", "id"),
        Index("ix_conversations_temporary_created", "temporary", "created_at"),
        Index("ix_conversations_project_id", "project_id"),
    )


class Preset(Base):
    """A saved system prompt with a name: its owner's, or every user's once an admin shares it."""

    __tablename__ = "presets"
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(SafeString(200))
    system_prompt: Mapped[str] = mapped_column(SafeText)
    shared: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=now)
    __table_args__ = (
        Index("ix_presets_user_id", "user_id"),
        Index("ix_presets_shared", "shared"),
    )


class Message(Base):
    __tablename__ = "messages"
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    conversation_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE")
    )
    parent_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE")
    )
    role: Mapped[str] = mapped_column(SafeString(16))  # user | assistant | tool
    content: Mapped[str] = mapped_column(SafeText, default="")
    # complete | streaming | stopped | interrupted | error
    status: Mapped[str] = mapped_column(SafeString(16), default="complete")
    model: Mapped[str | None] = mapped_column(SafeString(200))
    error: Mapped[str | None] = mapped_column(SafeText)
    # Tool calls of an assistant turn, or the call a tool result answers (the tool loop's).
    tool_calls: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    # While streaming: the event-log id just before this generation's first event (where a
    # client without a Last-Event-ID starts), and the process that runs it.
    stream_after: Mapped[str | None] = mapped_column(SafeString(64))
    worker: Mapped[str | None] = mapped_column(SafeString(64))
    # Brought in by an import (ChatGPT's or ours): never training data, whatever its rating.
    imported: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    # An answer whose prompt held the user's memory facts (0009).
    memory_used: Mapped[bool] = mapped_column(Boolean, default=False, server_default=text("false"))
    # A user message's attached files as they were when sent ({"id", "name", "size",
    # "content_type"}; the chips stay after a file is deleted), and a search result's numbered
    # sources ({"n", "file_id", "file_name", "passage", "page", "text"}) (0011).
    attachments: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    sources: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=now)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=now)
    __table_args__ = (
        Index("ix_messages_conversation_id", "conversation_id"),
        Index("ix_messages_parent_id", "parent_id"),
        Index("ix_messages_status", "status"),
        Index(
            "uq_messages_one_streaming",
            "conversation_id",
            unique=True,
            sqlite_where=text("status = 'streaming'"),
            postgresql_where=text("status = 'streaming'"),
        ),
    )


class File(Base):
    """A file a user uploaded into a chat or a project (0011). Its bytes are kept once per
    content on disk (DATA/files/ab/<sha256>), shared by every row with the same sha256; its
    text is cut into `file_passages`, the search tool's index."""

    __tablename__ = "files"
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    sha256: Mapped[str] = mapped_column(SafeString(64))
    name: Mapped[str] = mapped_column(SafeString(255))
    size: Mapped[int] = mapped_column(BigInteger)
    content_type: Mapped[str] = mapped_column(SafeString(200))
    status: Mapped[str] = mapped_column(SafeString(16), default="ready")  # ready | error
    # Where it was uploaded (no foreign keys, as conversations.project_id): deleting the chat
    # or the project deletes it.
    project_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    conversation_id: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    text_chars: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(SafeText)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=now)
    __table_args__ = (
        Index("ix_files_user_created", "user_id", "created_at", "id"),
        Index("ix_files_conversation_id", "conversation_id"),
        Index("ix_files_project_id", "project_id"),
        Index("ix_files_sha256", "sha256"),
    )


class FilePassage(Base):
    """About 1,000 characters of a file's text, cut at paragraph or line ends; `page` is the
    PDF page it starts on. Full-text indexed (migration 0011: FTS5 or a GIN index)."""

    __tablename__ = "file_passages"
    file_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("files.id", ondelete="CASCADE"), primary_key=True
    )
    n: Mapped[int] = mapped_column(Integer, primary_key=True)  # 0, 1, ... in the file's order
    page: Mapped[int | None] = mapped_column(Integer)
    text: Mapped[str] = mapped_column(SafeText)


class MessageFile(Base):
    """Which user message attached which file."""

    __tablename__ = "message_files"
    message_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True
    )
    file_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("files.id", ondelete="CASCADE"), primary_key=True
    )
    __table_args__ = (Index("ix_message_files_file_id", "file_id"),)


class MemoryFact(Base):
    """A short fact the user asked Fireside to remember; added to new answers' prompts while
    the user's memory is on."""

    __tablename__ = "memory_facts"
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    content: Mapped[str] = mapped_column(SafeText)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=now)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=now)
    __table_args__ = (Index("ix_memory_facts_user_id", "user_id", "created_at"),)


class Feedback(Base):
    __tablename__ = "feedback"
    message_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    rating: Mapped[str] = mapped_column(SafeString(8))  # up | down
    reason: Mapped[str | None] = mapped_column(SafeString(200))
    comment: Mapped[str | None] = mapped_column(SafeText)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=now)


class Share(Base):
    """A read-only snapshot of one branch, at a random token. The token itself is never stored,
    only its SHA-256 (hex): the table alone opens no share."""

    __tablename__ = "shares"
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    token_hash: Mapped[str] = mapped_column(SafeString(64), unique=True)
    conversation_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("conversations.id", ondelete="CASCADE")
    )
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    title: Mapped[str] = mapped_column(SafeString(200))
    messages: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=now)
    __table_args__ = (Index("ix_shares_user_id", "user_id"),)


class Connection(Base):
    """An OpenAI-compatible endpoint an admin connected; its key is encrypted at rest."""

    __tablename__ = "connections"
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(SafeString(200), unique=True)
    base_url: Mapped[str] = mapped_column(SafeString(2000))
    api_key_encrypted: Mapped[bytes | None] = mapped_column(LargeBinary)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=now)


class OidcIdentity(Base):
    """An account at an OpenID Connect provider, linked to a user: once linked, the provider's
    subject id finds the user even if the email there changes."""

    __tablename__ = "oidc_identities"
    issuer: Mapped[str] = mapped_column(SafeString(500), primary_key=True)
    subject: Mapped[str] = mapped_column(SafeString(255), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    email: Mapped[str] = mapped_column(SafeString(320))  # as the provider verified it at linking
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=now)
    __table_args__ = (Index("ix_oidc_identities_user_id", "user_id"),)


class Usage(Base):
    """Tokens one generation used, for the admin's per-user, per-model totals."""

    __tablename__ = "usage"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    model: Mapped[str] = mapped_column(SafeString(200))
    prompt_tokens: Mapped[int] = mapped_column(Integer)
    completion_tokens: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=now)
    __table_args__ = (Index("ix_usage_user_id", "user_id"),)


class AppSetting(Base):
    """Server settings an admin changes at run time (the sign-up policy); they win over the
    FIRESIDE_* defaults once set."""

    __tablename__ = "app_settings"
    key: Mapped[str] = mapped_column(SafeString(64), primary_key=True)
    value: Mapped[str] = mapped_column(SafeString(2000))


class ModelVersion(Base):
    """A model the app can serve: the one it started with ("base"), or one an improve job
    trained from feedback (a full model directory or a LoRA adapter over its parent's weights).
    Versions are never deleted by serving another: rolling back is serving an older one."""

    __tablename__ = "model_versions"
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    name: Mapped[str] = mapped_column(SafeString(64), unique=True)  # base, v1, v2, ...
    parent_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("model_versions.id", ondelete="SET NULL")
    )
    kind: Mapped[str] = mapped_column(SafeString(8))  # base | full | lora
    path: Mapped[str] = mapped_column(SafeText)  # model directory, or the adapter's
    method: Mapped[str | None] = mapped_column(SafeString(8))  # dpo | sft; None for base
    # Which feedback trained it (counts, the newest rating's time) and its evaluation.
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=now)


class ImproveJob(Base):
    """One run of "improve the model": export, train (its own process), evaluate, register."""

    __tablename__ = "improve_jobs"
    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    # queued | training | evaluating | done | failed | cancelled
    status: Mapped[str] = mapped_column(SafeString(16), default="queued")
    options: Mapped[dict[str, Any]] = mapped_column(JSON)  # method, lora_rank, steps
    progress: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    comparison: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error: Mapped[str | None] = mapped_column(SafeText)
    version_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("model_versions.id", ondelete="SET NULL")
    )
    created_by: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("users.id", ondelete="SET NULL")
    )
    # The server process supervising it: a job whose process died is resumed by another.
    worker: Mapped[str | None] = mapped_column(SafeString(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime, default=now)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime, default=now)
    __table_args__ = (Index("ix_improve_jobs_status", "status"),)


def _store_as_stored(target: object, value: Any, oldvalue: Any, initiator: Any) -> Any:
    return storable(value) if isinstance(value, str) else value


# A NUL set on a text attribute is replaced at once, not only in the database: the object an
# event or a response is made from then shows the text as it is stored.
for _mapper in Base.registry.mappers:
    for _column in _mapper.columns:
        if isinstance(_column.type, SafeString | SafeText):
            _attr = getattr(_mapper.class_, _mapper.get_property_by_column(_column).key)
            event.listen(_attr, "set", _store_as_stored, retval=True)
