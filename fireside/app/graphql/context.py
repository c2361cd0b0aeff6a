"""What every GraphQL resolver stands on: the caller, checked by the same dependency functions
as /api (fireside.app.deps), a database session of its own, the app's errors as GraphQL
errors, and a row budget per operation.

Each resolver opens its own session: graphql-core runs sibling fields concurrently, and one
SQLAlchemy session must not be used by two coroutines at once (a subscription would also
hold one for as long as it streams)."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from contextvars import ContextVar
from typing import Any, TypeVar

from graphql import GraphQLError
from pydantic import BaseModel, ValidationError
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as SQLAlchemyTimeoutError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import HTTPConnection
from strawberry.dataloader import DataLoader
from strawberry.extensions import SchemaExtension
from strawberry.fastapi import BaseContext
from strawberry.types import Info

from fireside.api.errors import APIError
from fireside.api.state import AppState
from fireside.app import deps, errors
from fireside.app.state import ChatState
from fireside.store import feedback
from fireside.store.db import is_busy
from fireside.store.models import Conversation, Feedback, Message, User

# Rows one operation may ask for (the sum of the page sizes of every list it reads): nested
# lists multiply (30 conversations x 1000 messages each), so this, not depth alone, bounds work.
MAX_ROWS = 10_000
M = TypeVar("M", bound=BaseModel)


class Context(BaseContext):
    """One per HTTP request, or per WebSocket connection (then shared by its operations)."""

    def __init__(self, chat: ChatState, api: AppState) -> None:
        super().__init__()
        self.chat, self.api = chat, api
        # The ratings of a page of messages in one query, not one each. Not cached: a socket's
        # context outlives its operations, and a rating may change between them.
        self.feedback = DataLoader(self._ratings, cache=False, max_batch_size=1000)

    async def _ratings(self, message_ids: list[uuid.UUID]) -> list[Feedback | None]:
        async with self.chat.db.session() as db:
            found = await feedback.ratings_of(db, message_ids)
        return [found.get(i) for i in message_ids]

    @property
    def conn(self) -> HTTPConnection:
        assert self.request is not None  # set by strawberry before any resolver runs
        return self.request


async def get_context(conn: HTTPConnection) -> Context:
    return Context(conn.app.state.chat, conn.app.state.fireside)


ResolverInfo = Info[Context, None]


# `extensions.code` by the HTTP status the same request to /api gets (Apollo's names).
CODES = {
    400: "BAD_USER_INPUT",
    401: "UNAUTHENTICATED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    409: "CONFLICT",
    429: "RATE_LIMITED",
    503: "SERVICE_UNAVAILABLE",
}


def graphql_error(e: APIError) -> GraphQLError:
    """The app's error as GraphQL's: the same message, with a code and /api's status."""
    return GraphQLError(
        e.message, extensions={"code": CODES.get(e.status, "ERROR"), "status": e.status}
    )


def bad_input(e: ValidationError) -> GraphQLError:
    first = e.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    return GraphQLError(
        f"{where}: {first['msg']}" if where else first["msg"],
        extensions={"code": CODES[400], "status": 400},
    )


@contextlib.contextmanager
def as_graphql() -> Iterator[None]:
    try:
        yield
    except APIError as e:
        raise graphql_error(e) from None
    except ValidationError as e:
        raise bad_input(e) from None
    except (OperationalError, SQLAlchemyTimeoutError) as e:
        if is_busy(e):  # as /api's 503: the client may retry
            raise graphql_error(errors.busy()) from None
        raise


@contextlib.asynccontextmanager
async def session(info: ResolverInfo) -> AsyncIterator[AsyncSession]:
    """A session of this resolver's, with the app's errors turned into GraphQL's."""
    with as_graphql():
        async with info.context.chat.db.session() as db:
            yield db


async def caller(info: ResolverInfo, db: AsyncSession) -> User:
    """The signed-in user (session cookie, its Origin check, or a personal key), as /api's
    CurrentUser: anonymous is an error."""
    with as_graphql():
        return await deps.current_user(info.context.conn, db, info.context.chat)


async def owned_conversation(
    db: AsyncSession, user: User, conversation_id: uuid.UUID
) -> Conversation | None:
    """The caller's conversation, or None: another user's is not found, as /api's 404."""
    try:
        return await deps.owned_conversation(conversation_id, user, db)
    except APIError as e:
        if e.status == 404:
            return None
        raise graphql_error(e) from None


async def owned_message(
    db: AsyncSession, user: User, message_id: uuid.UUID
) -> tuple[Message, Conversation] | None:
    try:
        return await deps.owned_message(message_id, user, db)
    except APIError as e:
        if e.status == 404:
            return None
        raise graphql_error(e) from None


def not_found(what: str) -> GraphQLError:
    """A mutation on an id that is not the caller's: the error /api's 404 carries."""
    return graphql_error(errors.not_found(what))


def checked(model: type[M], /, **fields: Any) -> M:
    """Arguments held to /api's request model (lengths, ranges), unset ones left out."""
    with as_graphql():
        return model.model_validate({k: v for k, v in fields.items() if v is not None})


_rows_left: ContextVar[list[int] | None] = ContextVar("graphql_rows_left", default=None)


class RowBudget(SchemaExtension):
    """Gives each operation MAX_ROWS to spend; list resolvers `charge` their page size before
    reading it (a context variable: the resolvers run in tasks copied from this one's)."""

    def on_execute(self) -> Iterator[None]:
        token = _rows_left.set([MAX_ROWS])
        yield
        _rows_left.reset(token)


def charge(rows: int) -> None:
    left = _rows_left.get()
    if left is None:
        return
    left[0] -= rows
    if left[0] < 0:
        raise GraphQLError(
            f"this query asks for more than {MAX_ROWS} rows in all; ask for smaller pages",
            extensions={"code": "QUERY_TOO_COSTLY", "status": 400},
        )
