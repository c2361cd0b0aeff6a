"""Files in chats, as a service: upload (limits, text extraction in a worker thread, bytes
kept once per content), attaching to a message, and deleting (with a chat, a project, or on
its own), where bytes no row uses any more leave the disk."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Iterable, Sequence
from pathlib import PurePath

from sqlalchemy.ext.asyncio import AsyncSession

from fireside.api.errors import APIError, bad_request
from fireside.app.blobs import sha256
from fireside.app.errors import not_found
from fireside.app.file_text import FileRefused, content_type, extract
from fireside.app.state import ChatState
from fireside.store import conversations, projects
from fireside.store import files as store
from fireside.store.models import File
from fireside.store.text import storable

log = logging.getLogger(__name__)

MAX_NAME = 255


def refused(e: FileRefused) -> APIError:
    code = {413: "file_too_large", 415: "unsupported_file_type"}.get(e.status, "unreadable_file")
    return APIError(e.message, e.status, param="file", code=code)


def clean_name(raw: str | None) -> str:
    """The file's own name, without any directories a client put in front of it."""
    name = PurePath((raw or "").replace("\\", "/")).name
    name = "".join(c for c in name if c.isprintable()).strip()  # no NUL, no line breaks
    if not name or name in (".", ".."):
        raise bad_request("the file has no name", "file")
    return name[-MAX_NAME:]


async def check_places(
    db: AsyncSession,
    user_id: uuid.UUID,
    conversation_id: uuid.UUID | None,
    project_id: uuid.UUID | None,
) -> None:
    """The chat and the project a file goes into must be the caller's (else 404)."""
    if (
        conversation_id is not None
        and await conversations.owned_conversation(db, user_id, conversation_id) is None
    ):
        raise not_found("conversation")
    if project_id is not None and await projects.owned_project(db, user_id, project_id) is None:
        raise not_found("project")


async def upload(
    db: AsyncSession,
    chat: ChatState,
    user_id: uuid.UUID,
    raw_name: str | None,
    data: bytes,
    conversation_id: uuid.UUID | None,
    project_id: uuid.UUID | None,
) -> File:
    settings = chat.settings
    name = clean_name(raw_name)
    await check_places(db, user_id, conversation_id, project_id)
    if len(data) > settings.max_file_bytes:
        raise refused(
            FileRefused(
                413, f"the file is larger than the limit of {settings.max_file_bytes} bytes"
            )
        )
    try:
        kind = content_type(name)
        if not data:
            raise FileRefused(400, "the file is empty")
        # Parsing a PDF of many pages takes seconds of CPU: never on the event loop.
        passages = await asyncio.to_thread(extract, name, data)
    except FileRefused as e:
        raise refused(e) from None
    if conversation_id is not None:
        count = len(await store.files_in_conversation(db, conversation_id))
        if count >= settings.max_files_per_chat:
            raise bad_request(
                f"this chat has {count} files, the most it may have", "conversation_id"
            )
    used = await store.user_bytes(db, user_id)
    if used + len(data) > settings.max_file_bytes_per_user:
        raise refused(
            FileRefused(
                413,
                f"your files take {used} bytes; this one would pass the limit of "
                f"{settings.max_file_bytes_per_user} bytes: delete some first",
            )
        )
    digest = sha256(data)
    texts = [(storable(p.text), p.page) for p in passages]
    async with chat.blobs.lock:
        await asyncio.to_thread(chat.blobs.write, digest, data)
        file = await store.add_file(
            db,
            user_id,
            texts,
            sha256=digest,
            name=name,
            size=len(data),
            content_type=kind,
            status="ready",
            conversation_id=conversation_id,
            project_id=project_id,
            text_chars=sum(len(t) for t, _ in texts),
        )
        await db.commit()
    return file


async def forget(chat: ChatState, digests: Iterable[str]) -> None:
    """Deletes the bytes of every content no file row uses any more (after the commit that
    deleted the rows)."""
    digests = set(digests)
    if not digests:
        return
    async with chat.blobs.lock, chat.db.session() as db:
        for digest in digests:
            if not await store.sha_in_use(db, digest):
                await asyncio.to_thread(chat.blobs.delete, digest)


async def delete_file(db: AsyncSession, chat: ChatState, file: File) -> None:
    digests = await store.delete_files(db, [file])
    await db.commit()
    await forget(chat, digests)


async def delete_with(
    db: AsyncSession,
    conversation_ids: Sequence[uuid.UUID] = (),
    project_id: uuid.UUID | None = None,
) -> set[str]:
    """In the caller's transaction: the files uploaded into these chats (or the project),
    which go with them; the contents to `forget` once it commits."""
    doomed = await store.files_where(db, conversation_ids, project_id)
    return await store.delete_files(db, doomed)


async def files_to_attach(
    db: AsyncSession,
    chat: ChatState,
    conversation_id: uuid.UUID,
    user_id: uuid.UUID,
    file_ids: Sequence[uuid.UUID],
) -> list[File]:
    """The caller's files for a new message (another's id, or an unknown one: 404), within
    the chat's file limit."""
    found = await store.owned_files(db, user_id, file_ids)
    if len(found) != len(set(file_ids)):
        raise not_found("file")
    have = set(await store.files_in_conversation(db, conversation_id))
    new = [f for f in found if f.id not in have]
    cap = chat.settings.max_files_per_chat
    if len(have) + len(new) > cap:
        raise bad_request(f"a chat may have at most {cap} files", "file_ids")
    return found


def attachment(file: File) -> dict[str, object]:
    """A user message's record of an attached file ("attachments")."""
    return {
        "id": str(file.id),
        "name": file.name,
        "size": file.size,
        "content_type": file.content_type,
    }
