"""WS /api/ws: the same events as the SSE routes, as JSON frames {"id", "event", "data"}.

One socket carries any number of subscriptions, one per conversation (the page follows every
conversation it has open over one socket). The client sends
{"type": "subscribe", "conversation_id", "last_event_id"?}, {"type": "unsubscribe",
"conversation_id"} and {"type": "stop", "conversation_id"}. Every frame names its
conversation ("conversation_id"): event ids are numbered per conversation, so they alone would
not tell two subscriptions apart. A subscription ends after the answer's `done` (or at once
when nothing runs) with an `end` frame, as an SSE body ends; a new subscribe to the same
conversation replaces the old one. Frames about the socket itself (a bad frame, a conversation
not found: `error`, with the HTTP status the same request would get) and `end` have `id` null.

The caller's credentials (session cookie or personal key) are checked again before every
command and every RECHECK_S seconds: a socket outlives neither a logout, nor a disabled
account, nor a password change (which ends the sessions), nor a deleted key; it is closed
with code 4401.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from pydantic import BaseModel, ValidationError

from fireside.api.errors import APIError
from fireside.app.deps import current_user
from fireside.app.state import ChatState
from fireside.app.streams import check_event_id, replay_then_follow
from fireside.store import conversations as store
from fireside.store.models import User

router = APIRouter(tags=["conversations"])

RECHECK_S = 5.0  # how long a revoked session's open socket may still stream, at most
REVOKED = "the session has ended; log in again"


class WsCommand(BaseModel):
    type: str
    conversation_id: uuid.UUID
    last_event_id: str | None = None


@router.websocket("/ws")
async def websocket(ws: WebSocket) -> None:
    chat: ChatState = ws.app.state.chat
    try:
        async with chat.db.session() as db:
            user = await current_user(ws, db, chat)
    except APIError as e:
        # Before accept: the handshake is refused with HTTP 403 (browsers see only that).
        await ws.close(code=4401 if e.status == 401 else 4403, reason=e.message[:120])
        return
    await ws.accept()
    session = _Session(ws, chat, user)
    reader = asyncio.create_task(session.run())
    watcher = asyncio.create_task(session.watch())
    try:
        await asyncio.wait({reader, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (reader, watcher):
            task.cancel()
        await asyncio.gather(reader, watcher, return_exceptions=True)
        await session.close()
    if session.revoked:
        with contextlib.suppress(RuntimeError, WebSocketDisconnect):
            await ws.close(code=4401, reason=REVOKED)


def _frame(
    event_id: str | None, event: str, data: dict[str, Any], conversation_id: str | None
) -> dict[str, Any]:
    return {"id": event_id, "event": event, "data": data, "conversation_id": conversation_id}


class _Session:
    def __init__(self, ws: WebSocket, chat: ChatState, user: User) -> None:
        self.ws, self.chat, self.user = ws, chat, user
        self.subscriptions: dict[uuid.UUID, asyncio.Task[None]] = {}
        self.send_lock = asyncio.Lock()
        self.revoked = False

    async def send(self, frame: dict[str, Any]) -> None:
        async with self.send_lock:
            await self.ws.send_json(frame)

    async def problem(
        self, message: str, conversation_id: uuid.UUID | None = None, status: int = 400
    ) -> None:
        data: dict[str, Any] = {"error": message, "status": status}
        cid = None if conversation_id is None else str(conversation_id)
        if cid is not None:
            data["conversation_id"] = cid
        await self.send(_frame(None, "error", data, cid))

    async def still_allowed(self) -> bool:
        """The socket's credentials, checked as a new request's would be (same user)."""
        try:
            async with self.chat.db.session() as db:
                user = await current_user(self.ws, db, self.chat)
        except APIError:
            return False
        return user.id == self.user.id

    async def watch(self) -> None:
        """Returns (and so ends the socket) once the credentials no longer hold."""
        while True:
            await asyncio.sleep(RECHECK_S)
            if not await self.still_allowed():
                self.revoked = True
                return

    async def run(self) -> None:
        while True:
            try:
                raw = await self.ws.receive_json()
            except WebSocketDisconnect:
                return
            except (ValueError, KeyError):  # not JSON, or a binary frame
                await self.problem("frames must be JSON objects")
                continue
            try:
                command = WsCommand.model_validate(raw)
            except ValidationError as e:
                await self.problem(f"bad frame: {e.errors()[0]['msg']}")
                continue
            if not await self.still_allowed():
                self.revoked = True
                await self.problem(REVOKED, command.conversation_id, 401)
                return
            await self.handle(command)

    async def handle(self, command: WsCommand) -> None:
        cid = command.conversation_id
        if command.type == "unsubscribe":
            # Only this socket's own subscriptions (owned when made): no look-up, so leaving
            # a chat that was just deleted (a temporary one) still ends its subscription.
            self.unsubscribe(cid)
            return
        async with self.chat.db.session() as db:
            owned = await store.owned_conversation(db, self.user.id, cid)
            if owned is None:
                await self.problem("no such conversation", cid, 404)
                return
            if command.type == "stop":
                await self.chat.generations.stop(db, cid)
                return
        if command.type != "subscribe":
            await self.problem(f"unknown frame type {command.type[:40]!r}", cid)
            return
        try:
            after = check_event_id(self.chat, command.last_event_id)
        except APIError as e:
            await self.problem(e.message, cid, e.status)
            return
        self.unsubscribe(cid)
        self.subscriptions[cid] = asyncio.create_task(self.follow(cid, after))

    def unsubscribe(self, cid: uuid.UUID) -> None:
        task = self.subscriptions.pop(cid, None)
        if task is not None:
            task.cancel()

    async def follow(self, cid: uuid.UUID, after: str | None) -> None:
        conversation = str(cid)
        with contextlib.suppress(WebSocketDisconnect, RuntimeError):
            async for e in replay_then_follow(self.chat, cid, after, after is not None):
                if e is not None:
                    await self.send(_frame(e.id, e.event, e.data, conversation))
            # Ended, not replaced: forget the task before saying so, so that a subscribe the
            # client sends on reading `end` is never cancelled as this one's leftover.
            if self.subscriptions.get(cid) is asyncio.current_task():
                del self.subscriptions[cid]
            await self.send(_frame(None, "end", {}, conversation))

    async def close(self) -> None:
        for task in self.subscriptions.values():
            task.cancel()
        await asyncio.gather(*self.subscriptions.values(), return_exceptions=True)
