"""Uploaded files, their passages and which messages attached them: the SQL behind them.

Every query that takes a file id is scoped to the owner: someone else's file is simply not
found. Full-text search over passages works as message search does (store/search.py):
FTS5 + bm25 on SQLite, to_tsvector('simple') + ts_rank on PostgreSQL (migration 0011).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import CompoundSelect, and_, bindparam, delete, func, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from fireside.store.models import Conversation, File, FilePassage, Message, MessageFile


@dataclass(frozen=True)
class PassageHit:
    file_id: uuid.UUID
    file_name: str
    n: int  # the passage's number in its file
    page: int | None
    text: str


async def add_file(
    db: AsyncSession,
    user_id: uuid.UUID,
    passages: Iterable[tuple[str, int | None]],
    **fields: object,
) -> File:
    """The file's row and its passages (text, page), in the caller's transaction."""
    file = File(id=uuid.uuid4(), user_id=user_id, **fields)
    db.add(file)
    await db.flush()
    db.add_all(
        FilePassage(file_id=file.id, n=n, text=passage, page=page)
        for n, (passage, page) in enumerate(passages)
    )
    await db.flush()
    return file


async def owned_file(db: AsyncSession, user_id: uuid.UUID, file_id: uuid.UUID) -> File | None:
    found: File | None = await db.scalar(
        select(File).where(File.id == file_id, File.user_id == user_id)
    )
    return found


async def owned_files(
    db: AsyncSession, user_id: uuid.UUID, file_ids: Sequence[uuid.UUID]
) -> list[File]:
    """The caller's files among `file_ids`, in the order given (others' ids left out)."""
    if not file_ids:
        return []
    rows = await db.scalars(select(File).where(File.id.in_(file_ids), File.user_id == user_id))
    by_id = {f.id: f for f in rows}
    return [by_id[i] for i in dict.fromkeys(file_ids) if i in by_id]


async def list_files(
    db: AsyncSession,
    user_id: uuid.UUID,
    limit: int,
    before: tuple[datetime, uuid.UUID] | None,
    conversation_id: uuid.UUID | None = None,
    project_id: uuid.UUID | None = None,
) -> list[File]:
    """Newest first, keyset-paginated on (created_at, id)."""
    query = select(File).where(File.user_id == user_id)
    if conversation_id is not None:
        query = query.where(File.id.in_(_conversation_file_ids(conversation_id)))
    if project_id is not None:
        query = query.where(File.project_id == project_id)
    if before is not None:
        at, id_ = before
        query = query.where(or_(File.created_at < at, and_(File.created_at == at, File.id < id_)))
    query = query.order_by(File.created_at.desc(), File.id.desc()).limit(limit)
    return list(await db.scalars(query))


def _conversation_file_ids(conversation_id: uuid.UUID) -> CompoundSelect[uuid.UUID]:
    """Files uploaded into the conversation, and files its messages attached."""
    attached = (
        select(MessageFile.file_id)
        .join(Message, Message.id == MessageFile.message_id)
        .where(Message.conversation_id == conversation_id)
    )
    uploaded = select(File.id).where(File.conversation_id == conversation_id)
    return uploaded.union(attached)


async def conversation_file_ids(db: AsyncSession, conversation: Conversation) -> list[uuid.UUID]:
    """What an answer in the conversation may search: its own files and its project's."""
    query = select(File.id).where(
        File.user_id == conversation.user_id,
        or_(
            File.id.in_(_conversation_file_ids(conversation.id)),
            *(
                [File.project_id == conversation.project_id]
                if conversation.project_id is not None
                else []
            ),
        ),
    )
    return list(await db.scalars(query.order_by(File.created_at, File.id)))


async def files_in_conversation(db: AsyncSession, conversation_id: uuid.UUID) -> list[uuid.UUID]:
    """The conversation's own files (not its project's): uploaded into it, or attached."""
    return list(await db.scalars(_conversation_file_ids(conversation_id)))


async def user_bytes(db: AsyncSession, user_id: uuid.UUID) -> int:
    return int(await db.scalar(select(func.sum(File.size)).where(File.user_id == user_id)) or 0)


async def attach_files(
    db: AsyncSession,
    message_id: uuid.UUID,
    conversation_id: uuid.UUID,
    file_ids: Sequence[uuid.UUID],
) -> None:
    """Links the files to the message; a file uploaded into no chat and no project becomes
    this chat's (and goes when it is deleted). A project's file stays the project's."""
    db.add_all(MessageFile(message_id=message_id, file_id=f) for f in file_ids)
    await db.execute(
        update(File)
        .where(File.id.in_(file_ids), File.conversation_id.is_(None), File.project_id.is_(None))
        .values(conversation_id=conversation_id)
        .execution_options(synchronize_session=False)
    )


async def file_texts(db: AsyncSession, file_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, str]:
    """Each file's whole text, its passages joined (a paragraph break between them)."""
    if not file_ids:
        return {}
    rows = await db.execute(
        select(FilePassage.file_id, FilePassage.text)
        .where(FilePassage.file_id.in_(file_ids))
        .order_by(FilePassage.file_id, FilePassage.n)
    )
    parts: dict[uuid.UUID, list[str]] = {}
    for file_id, passage in rows:
        parts.setdefault(file_id, []).append(passage)
    return {file_id: "\n\n".join(p) for file_id, p in parts.items()}


async def delete_files(db: AsyncSession, files: Sequence[File]) -> set[str]:
    """Deletes the rows (passages and links with them), in the caller's transaction; the
    contents (sha256) they used, for `Blobs` to forget once committed."""
    ids = [f.id for f in files]
    if not ids:
        return set()
    # Passages first and by name (not only by the cascade), so FTS5's delete trigger runs.
    await db.execute(delete(FilePassage).where(FilePassage.file_id.in_(ids)))
    await db.execute(delete(MessageFile).where(MessageFile.file_id.in_(ids)))
    await db.execute(
        delete(File).where(File.id.in_(ids)).execution_options(synchronize_session=False)
    )
    return {f.sha256 for f in files}


async def files_where(
    db: AsyncSession,
    conversation_ids: Sequence[uuid.UUID] = (),
    project_id: uuid.UUID | None = None,
) -> list[File]:
    """Files uploaded into these conversations and attached in no other one, or uploaded
    into the project (and into no conversation)."""
    wanted: list[ColumnElement[bool]] = []
    if conversation_ids:
        elsewhere = (
            select(MessageFile.file_id)
            .join(Message, Message.id == MessageFile.message_id)
            .where(Message.conversation_id.not_in(conversation_ids))
        )
        wanted.append(and_(File.conversation_id.in_(conversation_ids), File.id.not_in(elsewhere)))
    if project_id is not None:
        wanted.append(and_(File.project_id == project_id, File.conversation_id.is_(None)))
    if not wanted:
        return []
    return list(await db.scalars(select(File).where(or_(*wanted))))


async def leave_conversations(db: AsyncSession, conversation_ids: Sequence[uuid.UUID]) -> None:
    """The files of deleted chats that stay (attached in other chats) belong to no chat."""
    if conversation_ids:
        await db.execute(
            update(File)
            .where(File.conversation_id.in_(conversation_ids))
            .values(conversation_id=None)
            .execution_options(synchronize_session=False)
        )


async def leave_project(db: AsyncSession, project_id: uuid.UUID) -> None:
    """The project's files that stay (those of chats moved out of it) belong to no project."""
    await db.execute(
        update(File)
        .where(File.project_id == project_id)
        .values(project_id=None)
        .execution_options(synchronize_session=False)
    )


async def sha_in_use(db: AsyncSession, digest: str) -> bool:
    return await db.scalar(select(File.id).where(File.sha256 == digest).limit(1)) is not None


# --- search ---

_WORD = re.compile(r"\w+")

SQLITE_SEARCH = text(
    """
    SELECT p.file_id, f.name, p.n, p.page, p.text
    FROM file_passages_fts
    JOIN file_passages p ON p.rowid = file_passages_fts.rowid
    JOIN files f ON f.id = p.file_id
    WHERE file_passages_fts MATCH :q AND f.user_id = :user_id AND p.file_id IN :ids
    ORDER BY bm25(file_passages_fts), p.file_id, p.n
    LIMIT :limit
    """
).bindparams(bindparam("ids", expanding=True))
POSTGRES_SEARCH = text(
    """
    SELECT p.file_id, f.name, p.n, p.page, p.text
    FROM file_passages p
    JOIN files f ON f.id = p.file_id,
         to_tsquery('simple', :q) AS query
    WHERE f.user_id = :user_id AND p.file_id IN :ids
          AND to_tsvector('simple', p.text) @@ query
    ORDER BY ts_rank(to_tsvector('simple', p.text), query) DESC, p.file_id, p.n
    LIMIT :limit
    """
).bindparams(bindparam("ids", expanding=True))


async def search_passages(
    db: AsyncSession,
    user_id: uuid.UUID,
    file_ids: Sequence[uuid.UUID],
    terms: Sequence[str],
    limit: int,
) -> list[PassageHit]:
    """The best passages of these files (the owner's only) for any of `terms`, best first:
    a passage with more of the words, and rarer ones, ranks higher. A term matches the words
    it begins (`zebra` finds "zebras"), the same on both backends; terms are words (\\w+), so
    no query syntax comes from input."""
    terms = [t for t in terms if _WORD.fullmatch(t)]
    if not file_ids or not terms:
        return []
    sqlite = db.get_bind().dialect.name == "sqlite"
    # Each word a prefix: an FTS5 phrase with `*`, a tsquery lexeme with `:*`.
    fts5, tsquery = " OR ".join(f'"{t}"*' for t in terms), " | ".join(f"'{t}':*" for t in terms)
    q = fts5 if sqlite else tsquery
    params = {
        "q": q,
        "user_id": user_id.hex if sqlite else user_id,
        "ids": [i.hex if sqlite else i for i in file_ids],
        "limit": limit,
    }
    rows = await db.execute(SQLITE_SEARCH if sqlite else POSTGRES_SEARCH, params)
    return [
        PassageHit(_uuid(r[0]), r[1], int(r[2]), None if r[3] is None else int(r[3]), r[4])
        for r in rows.all()
    ]


def _uuid(v: object) -> uuid.UUID:
    return v if isinstance(v, uuid.UUID) else uuid.UUID(str(v))
