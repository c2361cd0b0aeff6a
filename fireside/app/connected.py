"""The connections the app offers: those in settings (FIRESIDE_CONNECTIONS) first, then the
admin's (the database). A settings connection wins over an admin's of the same name, so what
the operator configured cannot be replaced through the API."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from fireside.app.state import ChatState
from fireside.store import connections
from fireside.store.models import Connection


def configured(chat: ChatState) -> list[Connection]:
    """Settings' connections as unsaved rows, keys sealed like stored ones, so everything
    downstream reads both kinds alike."""
    return [
        Connection(
            name=c.name,
            base_url=c.base_url.rstrip("/"),
            enabled=True,
            api_key_encrypted=(
                chat.secrets.seal(c.api_key.get_secret_value()) if c.api_key else None
            ),
        )
        for c in chat.settings.connections
    ]


async def enabled_connections(db: AsyncSession, chat: ChatState) -> list[Connection]:
    found = configured(chat)
    taken = {c.name for c in found}
    stored = await connections.all_connections(db)
    return found + [c for c in stored if c.enabled and c.name not in taken]


async def connection_named(db: AsyncSession, chat: ChatState, name: str) -> Connection | None:
    return next((c for c in await enabled_connections(db, chat) if c.name == name), None)
