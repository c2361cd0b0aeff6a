"""GraphQL's object types, each made from /api's response model (fireside.app.schemas), so a
field means the same on both doors. A type is only ever built from a row the caller owns:
its nested fields (a conversation's messages, a message's parent) read below it freely."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import cast

import strawberry
from strawberry.scalars import JSON

from fireside.api.errors import bad_request
from fireside.app import conversations as service
from fireside.app.graphql.context import ResolverInfo, as_graphql, charge, graphql_error, session
from fireside.app.routes_data import ModelList
from fireside.app.schemas import ConversationPublic, MessagePublic
from fireside.store import conversations as store
from fireside.store.models import Conversation as ConversationRow
from fireside.store.models import Feedback as FeedbackRow
from fireside.store.models import Message as MessageRow

MAX_PAGE = 5000  # messages in one page of a branch or of a tree, as /api's `limit`


@strawberry.enum
class Rating(enum.Enum):
    UP = "up"
    DOWN = "down"


@strawberry.type
class Attachment:
    id: uuid.UUID
    name: str
    size: int
    content_type: str


@strawberry.type
class Message:
    id: uuid.UUID
    parent_id: uuid.UUID | None
    role: str  # user | assistant | tool | system
    content: str
    status: str  # complete | streaming | stopped | interrupted | error
    model: str | None
    error: str | None
    tool_calls: JSON | None
    memory_used: bool
    attachments: list[Attachment]
    sources: JSON | None  # a search tool result's numbered file passages
    created_at: datetime
    # Every message under the same parent (itself included), oldest first: set on a branch.
    sibling_ids: list[uuid.UUID] | None = None
    conversation_id: strawberry.Private[uuid.UUID]

    @classmethod
    def of(cls, row: MessageRow, sibling_ids: list[uuid.UUID] | None = None) -> Message:
        m = MessagePublic.model_validate(row)
        return cls(
            id=m.id,
            parent_id=m.parent_id,
            role=m.role,
            content=m.content,
            status=m.status,
            model=m.model,
            error=m.error,
            tool_calls=as_json(m.tool_calls),
            memory_used=m.memory_used,
            attachments=[Attachment(**a.model_dump()) for a in m.attachments],
            sources=as_json(m.sources and [s.model_dump(mode="json") for s in m.sources]),
            created_at=m.created_at,
            sibling_ids=sibling_ids,
            conversation_id=row.conversation_id,
        )

    @strawberry.field
    async def parent(self, info: ResolverInfo) -> Message | None:
        if self.parent_id is None:
            return None
        charge(1)
        async with session(info) as db:
            found = await store.message_in(db, self.conversation_id, self.parent_id)
        return None if found is None else Message.of(found)

    @strawberry.field(description="The caller's rating of this answer, if any.")
    async def feedback(self, info: ResolverInfo) -> Feedback | None:
        charge(1)
        with as_graphql():
            found = await info.context.feedback.load(self.id)
        return None if found is None else Feedback.of(found)


@strawberry.type
class Branch:
    messages: list[Message]  # the branch on show, root first (its last `limit`)
    # Where the earlier part continues: pass it as `before` (null: this page starts at the root).
    messages_before: uuid.UUID | None


@strawberry.type
class Conversation:
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
    project_id: uuid.UUID | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, row: ConversationRow) -> Conversation:
        return cls(**ConversationPublic.model_validate(row).model_dump())

    @strawberry.field(description="The branch on show, as GET /api/conversations/{id}.")
    async def branch(
        self, info: ResolverInfo, limit: int = 1000, before: uuid.UUID | None = None
    ) -> Branch:
        check_page(limit, MAX_PAGE)
        charge(limit)
        async with session(info) as db:
            row = await db.get(ConversationRow, self.id)
            if row is None:  # deleted since
                return Branch(messages=[], messages_before=None)
            page = await service.branch_page(db, row, limit, before)
        return Branch(
            messages=[Message.of(m, page.siblings[m.parent_id]) for m in page.messages],
            messages_before=page.before,
        )

    @strawberry.field(description="Every message (the first `limit`), oldest first: a parent "
                      "always comes before its children.")  # fmt: skip
    async def tree(self, info: ResolverInfo, limit: int = 1000) -> list[Message]:
        check_page(limit, MAX_PAGE)
        charge(limit)
        async with session(info) as db:
            rows = await store.tree(db, self.id, limit)
        return [Message.of(m) for m in rows]


@strawberry.type
class ConversationPage:
    data: list[Conversation]
    next_cursor: str | None  # pass as `cursor` for the next page (null: this was the last)


@strawberry.type
class Feedback:
    message_id: uuid.UUID
    rating: Rating
    reason: str | None
    comment: str | None
    created_at: datetime

    @classmethod
    def of(cls, row: FeedbackRow) -> Feedback:
        return cls(
            message_id=row.message_id,
            rating=Rating(row.rating),
            reason=row.reason,
            comment=row.comment,
            created_at=store.aware(row.created_at),
        )

    @strawberry.field(description="The rated answer.")
    async def message(self, info: ResolverInfo) -> Message | None:
        charge(1)
        async with session(info) as db:
            found = await db.get(MessageRow, self.message_id)
        return None if found is None else Message.of(found)


@strawberry.type
class FeedbackPage:
    data: list[Feedback]
    next_cursor: str | None


@strawberry.type
class Model:
    id: str  # what a conversation's `model` takes
    source: str  # "local" (this server's model) or the connection's name
    ready: bool


@strawberry.type
class ConnectionProblem:
    connection: str
    error: str


@strawberry.type
class Models:
    data: list[Model]
    errors: list[ConnectionProblem]  # why a connection lists none

    @classmethod
    def of(cls, found: ModelList) -> Models:
        return cls(
            data=[Model(**m.model_dump()) for m in found.data],
            errors=[ConnectionProblem(**e.model_dump()) for e in found.errors],
        )


@strawberry.type
class SentMessage:
    """A question stored and its answer started: follow `answerEvents(conversationId,
    after: streamAfter)` for the answer as it is written."""

    conversation_id: uuid.UUID
    question_id: uuid.UUID | None
    answer: Message  # as it starts (status streaming)
    # The event id the answer's events come after ("": they are the conversation's first).
    stream_after: str


@strawberry.type
class AnswerEvent:
    """One event of the conversation's log, as /api's SSE sends it (`id:`, `event:`, `data:`):
    message, delta, tool_call, tool_result, error, done."""

    id: str  # pass as `after` to resume after this event
    event: str
    data: JSON


def as_json(value: object) -> JSON:
    return cast(JSON, value)


def check_page(limit: int, most: int) -> None:
    if not 1 <= limit <= most:
        raise graphql_error(bad_request(f"limit must be between 1 and {most}", "limit"))
