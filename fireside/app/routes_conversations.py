"""/api/conversations and /api/messages: the conversation list, one conversation and its
current branch, sending, stopping, regenerating and editing. Answers stream as SSE."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Response
from fastapi.responses import StreamingResponse

from fireside.api.errors import bad_request
from fireside.app import conversations as service
from fireside.app.deps import DB, ChatStateDep, CurrentUser, OwnedConversation, OwnedMessage
from fireside.app.generation import Generation
from fireside.app.schemas import (
    BranchMessage,
    ConversationCreate,
    ConversationDetail,
    ConversationPublic,
    ConversationUpdate,
    MessageCreate,
    MessageEdit,
    MessagePublic,
    Page,
    Stopped,
)
from fireside.app.state import ChatState
from fireside.app.streams import (
    SSE_HEADERS,
    check_event_id,
    conversation_events,
    replay_then_follow,
    sse,
)
from fireside.store import conversations as store
from fireside.store import files as file_store
from fireside.store.models import Message

router = APIRouter(tags=["conversations"])

# One server-sent event per stored event: `id:`, `event:` (message, delta, tool_call,
# tool_result, done, error) and `data:` (JSON).
EVENT_STREAM_DOC: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Server-sent events: message, delta, tool_call, tool_result, error, done",
        "content": {"text/event-stream": {"schema": {"type": "string"}}},
    }
}


@router.get("/conversations", response_model=Page[ConversationPublic])
async def list_conversations(
    user: CurrentUser,
    db: DB,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 30,
    archived: bool = False,
    project_id: uuid.UUID | None = None,
) -> Page[ConversationPublic]:
    """Newest first; with `project_id`, only that project's conversations."""
    rows, next_cursor = await service.conversation_page(
        db, user.id, cursor, limit, archived, project_id
    )
    return Page(data=[ConversationPublic.model_validate(c) for c in rows], next_cursor=next_cursor)


@router.post("/conversations", response_model=ConversationPublic, status_code=201)
async def create_conversation(
    body: ConversationCreate, user: CurrentUser, db: DB
) -> ConversationPublic:
    conversation = await service.create_conversation(db, user, body.model_dump(exclude_none=True))
    return ConversationPublic.model_validate(conversation)


@router.get("/conversations/{conversation_id}", response_model=ConversationDetail)
async def get_conversation(
    conversation: OwnedConversation,
    db: DB,
    limit: Annotated[int, Query(ge=1, le=5000)] = 1000,
    before: uuid.UUID | None = None,
) -> ConversationDetail:
    """The conversation with the branch on show: its last `limit` messages, or the `limit`
    messages above `before` (a long chat opens with one page, not the whole tree)."""
    page = await service.branch_page(db, conversation, limit, before)
    return ConversationDetail(
        **ConversationPublic.model_validate(conversation).model_dump(),
        messages=[
            BranchMessage(
                **MessagePublic.model_validate(m).model_dump(),
                sibling_ids=page.siblings[m.parent_id],
            )
            for m in page.messages
        ],
        messages_before=page.before,
    )


@router.patch("/conversations/{conversation_id}", response_model=ConversationPublic)
async def update_conversation(
    body: ConversationUpdate, conversation: OwnedConversation, db: DB
) -> ConversationPublic:
    changes = body.model_dump(exclude_unset=True)
    await service.update_conversation(db, conversation, changes)
    return ConversationPublic.model_validate(conversation)


@router.delete("/conversations/{conversation_id}", status_code=204)
async def delete_conversation(
    conversation: OwnedConversation, db: DB, chat: ChatStateDep
) -> Response:
    await service.delete_conversation(db, chat, conversation)
    return Response(status_code=204)


def _stream_reply(chat: ChatState, gen: Generation) -> StreamingResponse:
    events = conversation_events(chat, gen.conversation_id, gen.stream_after)
    return StreamingResponse(sse(events), media_type="text/event-stream", headers=SSE_HEADERS)


@router.post("/conversations/{conversation_id}/messages", responses=EVENT_STREAM_DOC)
async def send_message(
    body: MessageCreate, conversation: OwnedConversation, db: DB, chat: ChatStateDep
) -> StreamingResponse:
    gen = await service.send_message(
        db, chat, conversation, body.content, body.parent_id, body.file_ids
    )
    return _stream_reply(chat, gen)


@router.get("/conversations/{conversation_id}/stream", responses=EVENT_STREAM_DOC)
async def resume_stream(
    conversation: OwnedConversation,
    chat: ChatStateDep,
    last_event_id_header: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
    last_event_id: Annotated[str | None, Query(max_length=64)] = None,
) -> StreamingResponse:
    """Replays the events after the given id, then follows live until the answer is done.
    Without an id: the running answer from its start (nothing if none runs)."""
    given = last_event_id_header if last_event_id_header is not None else last_event_id
    after = check_event_id(chat, given)
    events = replay_then_follow(chat, conversation.id, after, after is not None)
    return StreamingResponse(sse(events), media_type="text/event-stream", headers=SSE_HEADERS)


@router.post("/conversations/{conversation_id}/stop", response_model=Stopped)
async def stop(conversation: OwnedConversation, db: DB, chat: ChatStateDep) -> Stopped:
    return Stopped(stopping=await chat.generations.stop(db, conversation.id))


@router.post("/messages/{message_id}/regenerate", responses=EVENT_STREAM_DOC)
async def regenerate(owned: OwnedMessage, db: DB, chat: ChatStateDep) -> StreamingResponse:
    """A new answer beside this one (an assistant message), or under it (a user message)."""
    message, conversation = owned
    parent: Message | None = message
    if message.role == "assistant":
        if message.parent_id is None:
            raise bad_request("this answer has no question to answer again", "message_id")
        parent = await store.message_in(db, conversation.id, message.parent_id)
    elif message.role != "user":
        raise bad_request("only a user message or an answer can be regenerated", "message_id")
    gen = await chat.generations.start(db, conversation, parent, None)
    return _stream_reply(chat, gen)


@router.patch("/messages/{message_id}", responses=EVENT_STREAM_DOC)
async def edit_message(
    body: MessageEdit, owned: OwnedMessage, db: DB, chat: ChatStateDep
) -> StreamingResponse:
    """Edits a user message as ChatGPT does: a new branch beside it, answered at once."""
    message, conversation = owned
    if message.role != "user":
        raise bad_request("only user messages can be edited", "message_id")
    parent = None
    if message.parent_id is not None:
        parent = await store.message_in(db, conversation.id, message.parent_id)
    # The edited question keeps its files (those not deleted since).
    kept = [uuid.UUID(str(a["id"])) for a in message.attachments or []]
    kept = [f.id for f in await file_store.owned_files(db, conversation.user_id, kept)]
    gen = await chat.generations.start(db, conversation, parent, body.content, kept)
    return _stream_reply(chat, gen)
