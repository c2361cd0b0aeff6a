"""The `search` tool of one answer in a chat with files: the chat's (and its project's) file
passages first, ranked by the database's full-text search, then the machine's knowledge
index as `search` always reads it. Every passage the model is shown gets a number, running
on across the search steps of the answer, so the model can cite it as `[n]`:

    [1] report.pdf (page 2): …the passage…
    [2] notes.md: …

and the tool message stores the same list (`sources`) for the page to turn `[n]` into links.

Tool.run is synchronous and runs in a worker thread (tools/base.py call_tool). The passages
are read on the app's event loop (`asyncio.run_coroutine_threadsafe`) through the app's own
database: its async engine and connection pool (aiosqlite, asyncpg) belong to that loop, and a
second, synchronous path would need another driver and pool beside them for one query.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from fireside.app.state import ChatState
from fireside.store import files as store
from fireside.store.files import PassageHit
from fireside.tools.base import Tool, ToolError
from fireside.tools.knowledge import NO_RESULTS, query_terms, search_tool

PASSAGES = 3  # file passages per search
EXCERPT_CHARS = 700  # of each passage: three fit the result beside the knowledge hits
MAX_CHARS = 4000
TIMEOUT_S = 10.0
DESCRIPTION = (
    "Search the files of this chat, then this computer's documentation: commands, Python, "
    "dictionary. File passages come numbered: cite them as [n]."
)


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    if len(text) <= limit:
        return text
    cut = text[:limit]
    space = cut.rfind(" ")
    return (cut[:space] if space > limit // 2 else cut) + "…"


class FileSearch:
    """One answer's search over its conversation's files, keeping the sources it showed."""

    def __init__(
        self,
        chat: ChatState,
        user_id: uuid.UUID,
        file_ids: Sequence[uuid.UUID],
        loop: asyncio.AbstractEventLoop,
        knowledge: Tool | None = None,
    ) -> None:
        self.chat, self.user_id, self.file_ids, self.loop = chat, user_id, list(file_ids), loop
        self.knowledge = knowledge if knowledge is not None else search_tool()
        self.next_n = 1
        self._lock = threading.Lock()
        self._shown: dict[str, list[dict[str, Any]]] = {}  # result text -> its sources

    def tool(self) -> Tool:
        return Tool(
            name="search",
            description=DESCRIPTION,
            parameters=self.knowledge.parameters,
            run=self.run,
            timeout_s=TIMEOUT_S,
            max_chars=MAX_CHARS,
            prepare=self.knowledge.prepare,
        )

    async def passages(self, query: str) -> list[PassageHit]:
        terms = query_terms(query)
        async with self.chat.db.session() as db:
            return await store.search_passages(db, self.user_id, self.file_ids, terms, PASSAGES)

    def run(self, arguments: dict[str, Any]) -> str:
        future = asyncio.run_coroutine_threadsafe(self.passages(arguments["query"]), self.loop)
        try:
            hits = future.result(timeout=TIMEOUT_S)
        except FutureTimeout:
            future.cancel()
            raise ToolError("the search of this chat's files took too long") from None
        lines: list[str] = []
        sources: list[dict[str, Any]] = []
        with self._lock:  # one answer's steps run one at a time; the numbering stays whole
            for hit in hits:
                n, self.next_n = self.next_n, self.next_n + 1
                text = excerpt(" ".join(hit.text.split()))
                where = f" (page {hit.page})" if hit.page is not None else ""
                lines.append(f"[{n}] {hit.file_name}{where}: {text}")
                sources.append(
                    {
                        "n": n,
                        "file_id": str(hit.file_id),
                        "file_name": hit.file_name,
                        "passage": hit.n,
                        "page": hit.page,
                        "text": text,
                    }
                )
        known = self._knowledge(arguments, MAX_CHARS - sum(len(line) + 1 for line in lines))
        if known is not None:
            lines.append(known)
        result = "\n".join(lines) or NO_RESULTS
        if sources:
            self._shown[result] = sources
        return result

    def _knowledge(self, arguments: dict[str, Any], room: int) -> str | None:
        """The knowledge index's hits, as `search` reads them without files (None: none)."""
        try:
            found = self.knowledge.run(arguments)
        except ToolError:  # no index here: the files alone answer
            return None
        if found == NO_RESULTS or room < 100:
            return None
        return found[:room]

    def sources_for(self, result: str) -> list[dict[str, Any]] | None:
        """The numbered sources of a result this tool returned (None: not one of them)."""
        return self._shown.pop(result, None)
