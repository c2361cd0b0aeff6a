"""/api/files: upload a file into a chat or a project, list, read, download, delete."""

from __future__ import annotations

import asyncio
import urllib.parse
import uuid
from typing import Annotated

from fastapi import APIRouter, Form, Query, Response, UploadFile
from fastapi import File as FormFile

from fireside.app import files
from fireside.app.cursors import decode_cursor, encode_cursor
from fireside.app.deps import DB, ChatStateDep, CurrentUser, OwnedFile
from fireside.app.errors import not_found
from fireside.app.schemas import FilePublic, Page
from fireside.store import files as store

router = APIRouter(tags=["files"])

# The multipart framing around a file (boundaries, part headers, the form's other fields):
# what the body limit of POST /api/files allows beyond the file itself.
MULTIPART_SLACK = 64 << 10
# Types the browser may show in place: neither runs script on the app's origin. Anything
# else (HTML above all) is a download.
INLINE_TYPES = frozenset({"text/plain", "application/pdf"})


@router.post("/files", response_model=FilePublic, status_code=201)
async def upload_file(
    file: Annotated[UploadFile, FormFile()],
    user: CurrentUser,
    db: DB,
    chat: ChatStateDep,
    conversation_id: Annotated[uuid.UUID | None, Form()] = None,
    project_id: Annotated[uuid.UUID | None, Form()] = None,
) -> FilePublic:
    """A file (multipart field `file`) into the caller's chat or project, or into neither
    until a message attaches it. Its text is read at once: 415 for a kind that is not read,
    413 past the size limits, 400 for a file that does not read as its kind."""
    data = await file.read(chat.settings.max_file_bytes + 1)
    made = await files.upload(db, chat, user.id, file.filename, data, conversation_id, project_id)
    return FilePublic.model_validate(made)


@router.get("/files", response_model=Page[FilePublic])
async def list_files(
    user: CurrentUser,
    db: DB,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    conversation_id: uuid.UUID | None = None,
    project_id: uuid.UUID | None = None,
) -> Page[FilePublic]:
    """The caller's files, newest first; with `conversation_id`, the chat's own (uploaded
    into it or attached in it), with `project_id`, the project's."""
    await files.check_places(db, user.id, conversation_id, project_id)
    before = decode_cursor(cursor) if cursor else None
    rows = await store.list_files(db, user.id, limit + 1, before, conversation_id, project_id)
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(
        data=[FilePublic.model_validate(f) for f in rows],
        next_cursor=encode_cursor(rows[-1].created_at, rows[-1].id) if more else None,
    )


@router.get("/files/{file_id}", response_model=FilePublic)
async def get_file(file: OwnedFile) -> FilePublic:
    return FilePublic.model_validate(file)


@router.get(
    "/files/{file_id}/content",
    response_class=Response,
    responses={200: {"description": "The file's bytes", "content": {"*/*": {}}}},
)
async def file_content(file: OwnedFile, chat: ChatStateDep) -> Response:
    """The bytes as uploaded. Plain text and PDFs may show in the browser; every other type
    is an attachment (downloaded, never rendered on this origin), and nothing is sniffed."""
    data = await asyncio.to_thread(chat.blobs.read, file.sha256)
    if data is None:
        raise not_found("file content")
    inline = file.content_type in INLINE_TYPES
    media_type = "text/plain; charset=utf-8" if file.content_type == "text/plain" else None
    return Response(
        content=data,
        media_type=media_type or file.content_type,
        headers={
            "Content-Disposition": content_disposition(file.name, inline),
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "private, no-cache",
        },
    )


def content_disposition(name: str, inline: bool) -> str:
    # RFC 6266: a plain-ASCII fallback name, and the real one percent-encoded (RFC 5987):
    # no quote, semicolon or line break of a user's file name reaches the header as itself.
    fallback = "".join(c if (c.isascii() and c.isalnum()) or c in "._- " else "_" for c in name)
    quoted = urllib.parse.quote(name, safe="")
    kind = "inline" if inline else "attachment"
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{quoted}"


@router.delete("/files/{file_id}", status_code=204)
async def delete_file(file: OwnedFile, db: DB, chat: ChatStateDep) -> Response:
    """The file, its passages, and its bytes unless another file has the same content."""
    await files.delete_file(db, chat, file)
    return Response(status_code=204)
