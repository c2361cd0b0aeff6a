"""Full-text search over one user's messages: SQLite FTS5 (bm25) or PostgreSQL full-text
(ts_rank), ranked, with a snippet around the matches."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

# Marks around matched words inside snippets; the caller escapes the text and turns these
# into markup (control characters cannot come from a search query's own words).
START, STOP = "\x02", "\x03"


@dataclass
class Hit:
    message_id: uuid.UUID
    conversation_id: uuid.UUID
    title: str
    role: str
    snippet: str
    created_at: datetime


def fts5_query(q: str) -> str:
    """The user's words as FTS5 phrases, each quoted: no operator or syntax error from input."""
    return " ".join('"' + w.replace('"', '""') + '"' for w in q.split())


SQLITE = text(
    f"""
    SELECT m.id, m.conversation_id, c.title, m.role,
           snippet(messages_fts, 0, '{START}', '{STOP}', '…', 16) AS snippet, m.created_at
    FROM messages_fts
    JOIN messages m ON m.rowid = messages_fts.rowid
    JOIN conversations c ON c.id = m.conversation_id
    WHERE messages_fts MATCH :q AND c.user_id = :user_id AND NOT c.temporary
    ORDER BY bm25(messages_fts), m.id
    LIMIT :limit OFFSET :offset
    """
)
POSTGRES = text(
    f"""
    SELECT m.id, m.conversation_id, c.title, m.role,
           ts_headline('simple', m.content, query,
                       'StartSel={START}, StopSel={STOP}, MaxWords=24, MinWords=8') AS snippet,
           m.created_at
    FROM messages m
    JOIN conversations c ON c.id = m.conversation_id,
         websearch_to_tsquery('simple', :q) AS query
    WHERE c.user_id = :user_id AND NOT c.temporary AND to_tsvector('simple', m.content) @@ query
    ORDER BY ts_rank(to_tsvector('simple', m.content), query) DESC, m.id
    LIMIT :limit OFFSET :offset
    """
)


async def search_messages(
    db: AsyncSession, user_id: uuid.UUID, q: str, limit: int, offset: int
) -> list[Hit]:
    sqlite = db.get_bind().dialect.name == "sqlite"
    query = fts5_query(q) if sqlite else q
    # Uuid columns are stored as 32 hex digits on SQLite, native uuid on PostgreSQL.
    params = {
        "q": query,
        "user_id": user_id.hex if sqlite else user_id,
        "limit": limit,
        "offset": offset,
    }
    rows = await db.execute(SQLITE if sqlite else POSTGRES, params)
    return [Hit(_uuid(r[0]), _uuid(r[1]), r[2], r[3], r[4] or "", _time(r[5])) for r in rows.all()]


def _uuid(v: object) -> uuid.UUID:
    return v if isinstance(v, uuid.UUID) else uuid.UUID(str(v))


def _time(v: object) -> datetime:
    t = v if isinstance(v, datetime) else datetime.fromisoformat(str(v))
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)  # SQLite keeps no timezone
