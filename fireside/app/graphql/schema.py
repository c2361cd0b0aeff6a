"""The GraphQL schema: the signed-in user's conversations, feedback and models; sending,
renaming, deleting and rating; an answer's events as a subscription.

Resolvers parse, authorize and call what the /api routes call (fireside.app.conversations,
the stores, the event log): no rule lives here. Another user's id reads as null in a query
and as /api's "no such ..." error in a mutation or subscription, never as their data."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncGenerator
from functools import partial

import strawberry
from graphql import GraphQLError
from strawberry.extensions import (
    MaskErrors,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    QueryDepthLimiter,
)
from strawberry.types import ExecutionContext

from fireside.api.errors import APIError
from fireside.app import conversations as service
from fireside.app import deps
from fireside.app.errors import unauthorized
from fireside.app.graphql.context import (
    ResolverInfo,
    RowBudget,
    as_graphql,
    caller,
    charge,
    checked,
    graphql_error,
    not_found,
    owned_conversation,
    owned_message,
    session,
)
from fireside.app.graphql.types import (
    AnswerEvent,
    Conversation,
    ConversationPage,
    Feedback,
    FeedbackPage,
    Message,
    Models,
    Rating,
    SentMessage,
    as_json,
    check_page,
)
from fireside.app.routes_data import available_models
from fireside.app.routes_feedback import FeedbackCreate
from fireside.app.routes_ws import RECHECK_S, REVOKED
from fireside.app.schemas import ConversationCreate, ConversationUpdate, MessageCreate
from fireside.app.streams import check_event_id, replay_then_follow
from fireside.store.models import User

MAX_DEPTH = 8  # useful queries nest 6 deep at most (conversation > branch > messages > ...)
MAX_TOKENS = 2000  # a query's size in GraphQL tokens, checked before it is parsed further
MAX_ALIASES = 20  # aliases repeat a field; each one runs it again
MAX_CONVERSATIONS = 100  # one page of the conversation list, as /api's `limit`


@strawberry.type
class Query:
    @strawberry.field(description="The caller's conversations, newest first.")
    async def conversations(
        self,
        info: ResolverInfo,
        limit: int = 30,
        cursor: str | None = None,
        archived: bool = False,
        project_id: uuid.UUID | None = None,
    ) -> ConversationPage:
        check_page(limit, MAX_CONVERSATIONS)
        charge(limit)
        async with session(info) as db:
            user = await caller(info, db)
            rows, next_cursor = await service.conversation_page(
                db, user.id, cursor, limit, archived, project_id
            )
        return ConversationPage(data=[Conversation.of(c) for c in rows], next_cursor=next_cursor)

    @strawberry.field(description="One of the caller's conversations (null: none such).")
    async def conversation(self, info: ResolverInfo, id: uuid.UUID) -> Conversation | None:
        async with session(info) as db:
            found = await owned_conversation(db, await caller(info, db), id)
        return None if found is None else Conversation.of(found)

    @strawberry.field(description="The caller's ratings of answers, newest first.")
    async def feedback(
        self, info: ResolverInfo, limit: int = 30, cursor: str | None = None
    ) -> FeedbackPage:
        check_page(limit, MAX_CONVERSATIONS)
        charge(limit)
        async with session(info) as db:
            user = await caller(info, db)
            rows, next_cursor = await service.feedback_page(db, user.id, cursor, limit)
        return FeedbackPage(data=[Feedback.of(f) for f in rows], next_cursor=next_cursor)

    @strawberry.field(description="The models a conversation may use, as GET /api/models.")
    async def models(self, info: ResolverInfo) -> Models:
        async with session(info) as db:
            await caller(info, db)
            found = await available_models(info.context.api, info.context.chat, db)
        return Models.of(found)


@strawberry.type
class Mutation:
    @strawberry.mutation
    async def create_conversation(
        self,
        info: ResolverInfo,
        title: str | None = None,
        model: str | None = None,
        system_prompt: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        temporary: bool | None = None,
        project_id: uuid.UUID | None = None,
    ) -> Conversation:
        body = checked(
            ConversationCreate,
            title=title,
            model=model,
            system_prompt=system_prompt,
            temperature=temperature,
            max_tokens=max_tokens,
            temporary=temporary,
            project_id=project_id,
        )
        async with session(info) as db:
            user = await caller(info, db)
            made = await service.create_conversation(db, user, body.model_dump(exclude_none=True))
        return Conversation.of(made)

    @strawberry.mutation(description="Asks a question and starts its answer, as POST "
                         "/api/conversations/{id}/messages; subscribe to answerEvents for it.")  # fmt: skip
    async def send_message(
        self,
        info: ResolverInfo,
        conversation_id: uuid.UUID,
        content: str,
        parent_id: uuid.UUID | None = None,
        file_ids: list[uuid.UUID] | None = None,
    ) -> SentMessage:
        body = checked(MessageCreate, content=content, parent_id=parent_id, file_ids=file_ids)
        async with session(info) as db:
            conversation = await owned_conversation(db, await caller(info, db), conversation_id)
            if conversation is None:
                raise not_found("conversation")
            gen = await service.send_message(
                db, info.context.chat, conversation, body.content, body.parent_id, body.file_ids
            )
            # Read now, before the answer's task writes into it.
            answer = Message.of(gen.message)
        return SentMessage(
            conversation_id=conversation_id,
            question_id=gen.message.parent_id,
            answer=answer,
            stream_after=gen.stream_after or "",
        )

    @strawberry.mutation
    async def rename_conversation(
        self, info: ResolverInfo, id: uuid.UUID, title: str
    ) -> Conversation:
        body = checked(ConversationUpdate, title=title)
        async with session(info) as db:
            conversation = await owned_conversation(db, await caller(info, db), id)
            if conversation is None:
                raise not_found("conversation")
            await service.update_conversation(db, conversation, {"title": body.title})
        return Conversation.of(conversation)

    @strawberry.mutation(description="Deletes the conversation (stopping its answer); its id.")
    async def delete_conversation(self, info: ResolverInfo, id: uuid.UUID) -> uuid.UUID:
        async with session(info) as db:
            conversation = await owned_conversation(db, await caller(info, db), id)
            if conversation is None:
                raise not_found("conversation")
            await service.delete_conversation(db, info.context.chat, conversation)
        return id

    @strawberry.mutation(description="Rates an answer (again: replaces the rating).")
    async def rate_answer(
        self,
        info: ResolverInfo,
        message_id: uuid.UUID,
        rating: Rating,
        reason: str | None = None,
        comment: str | None = None,
    ) -> Feedback:
        body = checked(FeedbackCreate, rating=rating.value, reason=reason, comment=comment)
        async with session(info) as db:
            user = await caller(info, db)
            owned = await owned_message(db, user, message_id)
            if owned is None:
                raise not_found("message")
            rated = await service.rate_answer(
                db, user.id, owned[0], body.rating, body.reason, body.comment
            )
        return Feedback.of(rated)

    @strawberry.mutation(description="Stops the answer being written; whether one was.")
    async def stop_answer(self, info: ResolverInfo, conversation_id: uuid.UUID) -> bool:
        async with session(info) as db:
            conversation = await owned_conversation(db, await caller(info, db), conversation_id)
            if conversation is None:
                raise not_found("conversation")
            return await info.context.chat.generations.stop(db, conversation.id)


@strawberry.type
class Subscription:
    @strawberry.subscription(description="The conversation's events after the event id `after` "
                             "(\"\": from its first event; null: from the start of the running "
                             "answer), live until the answer's `done`; as GET "
                             "/api/conversations/{id}/stream.")  # fmt: skip
    async def answer_events(
        self, info: ResolverInfo, conversation_id: uuid.UUID, after: str | None = None
    ) -> AsyncGenerator[AnswerEvent, None]:
        async with session(info) as db:
            user = await caller(info, db)
            if await owned_conversation(db, user, conversation_id) is None:
                raise not_found("conversation")
        chat = info.context.chat
        has_cursor = after is not None  # "" too: before the conversation's first event
        with as_graphql():
            after = check_event_id(chat, after)
        checked_at = time.monotonic()
        async for event in replay_then_follow(chat, conversation_id, after, has_cursor):
            # As /api/ws: a stream outlives neither a logout nor a revoked key for long (the
            # log yields None after each quiet spell, so a silent stream is checked too).
            if time.monotonic() - checked_at >= RECHECK_S:
                if not await _still_allowed(info, user):
                    raise graphql_error(unauthorized(REVOKED))
                checked_at = time.monotonic()
            if event is not None:
                yield AnswerEvent(id=event.id, event=event.event, data=as_json(event.data))


async def _still_allowed(info: ResolverInfo, user: User) -> bool:
    try:
        async with info.context.chat.db.session() as db:
            again = await deps.current_user(info.context.conn, db, info.context.chat)
    except APIError:
        return False
    return again.id == user.id


def _unexpected(error: GraphQLError) -> bool:
    """Masked: a failure no rule of ours raised (its text may name internals). Validation
    errors and the app's own (GraphQLError) keep their message."""
    original = error.original_error
    return original is not None and not isinstance(original, GraphQLError)


class _MaskUnexpected(MaskErrors):
    """Strawberry's mask, labelled as Apollo labels a server failure (clients and fuzzers
    tell it from a refusal of theirs by the code)."""

    def __init__(self) -> None:
        super().__init__(should_mask_error=_unexpected, error_message="internal server error")

    def anonymise_error(self, error: GraphQLError) -> GraphQLError:
        masked = super().anonymise_error(error)
        masked.extensions = {"code": "INTERNAL_SERVER_ERROR", "status": 500}
        return masked


class FiresideSchema(strawberry.Schema):
    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        # A not-found or a bad argument is the client's business; only failures are logged.
        super().process_errors([e for e in errors if _unexpected(e)], execution_context)


schema = FiresideSchema(
    query=Query,
    mutation=Mutation,
    subscription=Subscription,
    extensions=[
        partial(QueryDepthLimiter, max_depth=MAX_DEPTH),
        partial(MaxTokensLimiter, max_token_count=MAX_TOKENS),
        partial(MaxAliasesLimiter, max_alias_count=MAX_ALIASES),
        RowBudget,
        _MaskUnexpected,
    ],
)
