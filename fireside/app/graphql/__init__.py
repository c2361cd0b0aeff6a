"""GraphQL at /graphql (Strawberry): the chat app's conversations, feedback and models, the
same mutations as /api, and an answer's events over WebSocket (graphql-transport-ws).

The same callers as /api: a session cookie (its Origin checked on every POST and on the
socket, as /api checks it) or a personal API key as Bearer. GraphiQL only in development
mode (FIRESIDE_DEV=1)."""

from __future__ import annotations

from fastapi import APIRouter, WebSocket
from strawberry.exceptions import ConnectionRejectionError
from strawberry.fastapi import GraphQLRouter
from strawberry.subscriptions import GRAPHQL_TRANSPORT_WS_PROTOCOL

from fireside.api.errors import APIError
from fireside.api.hosts import origin_allowed
from fireside.app import deps
from fireside.app.graphql.context import Context, get_context
from fireside.app.graphql.schema import schema
from fireside.settings import Settings

PATH = "/graphql"
MAX_SUBSCRIPTIONS = 20  # per socket: one per open conversation is plenty


class _Router(GraphQLRouter[Context, None]):
    def is_websocket_origin_allowed(self, request: WebSocket, origin: str) -> bool:
        """A cross-origin handshake, held to the rule /api/ws follows (the configured hosts
        and FIRESIDE_ALLOWED_ORIGINS), not to a list of Strawberry's own."""
        settings: Settings = request.app.state.chat.settings
        return origin_allowed(
            origin,
            settings.resolved_allowed_hosts(),
            settings.allowed_origins,
            request.headers.get("host", ""),
        )

    async def on_ws_connect(self, context: Context) -> None:
        """The socket's caller, checked at `connection_init` as /api/ws checks it: no
        credentials, a bad key or a foreign Origin close it (4403) before any operation."""
        try:
            async with context.chat.db.session() as db:
                await deps.current_user(context.conn, db, context.chat)
        except APIError as e:
            raise ConnectionRejectionError({"message": e.message}) from None


def graphql_router(settings: Settings) -> APIRouter:
    return _Router(
        schema,
        graphql_ide="graphiql" if settings.dev else None,
        context_getter=get_context,
        subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL,),
        max_subscriptions_per_connection=MAX_SUBSCRIPTIONS,
        include_in_schema=False,  # its own schema is the document; /openapi.json is REST's
    )
