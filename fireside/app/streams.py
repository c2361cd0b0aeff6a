"""Following a conversation's event log: the one loop behind the POST reply, the resume
route and the WebSocket. It replays what came after the client's last event id, follows
live, and ends at the `done` of the last running generation."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator

from fireside.api.errors import bad_request
from fireside.app.generation import stream_key
from fireside.app.state import ChatState
from fireside.store import conversations as store
from fireside.store.events import Event

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
QUIET_S = 5.0  # how long a follower waits for an event before checking anything still runs
KEEPALIVE = ": keepalive\n\n"
FINAL_WAIT_S = 1.0


def check_event_id(chat: ChatState, value: str | None) -> str | None:
    if value is None or value == "":
        return None
    if not chat.events.valid_id(value):
        raise bad_request(f"{value[:40]!r} is not an event id of this server", "last_event_id")
    return value


async def start_of_current(chat: ChatState, conversation_id: uuid.UUID) -> tuple[bool, str | None]:
    """Where a client with no event id starts: the beginning of the running generation.
    (False, None) when nothing runs: there is nothing to follow."""
    async with chat.db.session() as db:
        running = await store.streaming_message(db, conversation_id)
    if running is None:
        return False, None
    return True, running.stream_after


async def _running_other_than(
    chat: ChatState, conversation_id: uuid.UUID, finished: str | None
) -> bool:
    """Whether a generation other than `finished` still runs in this conversation (one whose
    process is alive: a dead process will never write its `done`)."""
    async with chat.db.session() as db:
        running = await store.streaming_message(db, conversation_id)
    if running is None or str(running.id) == finished:
        return False
    return bool(await chat.broker.alive([running.worker or ""]))


async def conversation_events(
    chat: ChatState, conversation_id: uuid.UUID, after: str | None
) -> AsyncIterator[Event | None]:
    """Events after `after`, live, until the `done` of the last running generation; None
    after each quiet spell (for keepalives)."""
    key = stream_key(conversation_id)
    wait, last_kind = 0.0, None
    while True:
        events = await chat.events.read(key, after, wait)
        if not events:
            if not await _running_other_than(chat, conversation_id, None):
                if last_kind != "done":
                    # A generation commits its answer just before it logs `done`: wait for
                    # that last event rather than end a moment too soon.
                    for e in await chat.events.read(key, after, FINAL_WAIT_S):
                        yield e
                return
            if wait:
                yield None
            wait = QUIET_S
            continue
        for event in events:
            after, last_kind = event.id, event.event
            yield event
            if event.event == "done":
                finished = str(event.data.get("message", {}).get("id"))
                if not await _running_other_than(chat, conversation_id, finished):
                    return
        wait = QUIET_S


async def replay_then_follow(
    chat: ChatState, conversation_id: uuid.UUID, after: str | None, has_cursor: bool
) -> AsyncIterator[Event | None]:
    if has_cursor:
        async for e in conversation_events(chat, conversation_id, after):
            yield e
        return
    running, start = await start_of_current(chat, conversation_id)
    if not running:
        return
    async for e in conversation_events(chat, conversation_id, start):
        yield e


def sse_frame(event: Event) -> str:
    data = json.dumps(event.data, separators=(",", ":"), ensure_ascii=False)
    return f"id: {event.id}\nevent: {event.event}\ndata: {data}\n\n"


async def sse(events: AsyncIterator[Event | None]) -> AsyncIterator[str]:
    async for event in events:
        yield KEEPALIVE if event is None else sse_frame(event)
