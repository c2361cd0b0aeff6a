"""The local knowledge index: SQLite FTS5, ranked by BM25, and the `search` tool over it.

One table holds every entry (title, summary and body searched; id, kind and source kept).
`build_index` writes a new file beside the old one and renames it into place, keeping the
entries a user added with `fireside knowledge add`, so a half-built index is never read.

A query keeps its content words (question words like "what" and "does" dropped). A row must
match all of them; if none does, a row whose *title* holds one of them still counts
("python json dumps" finds `json.dumps`). Anything else is `no results`, which is how the
model learns to say it does not know.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import logging
import os
import re
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fireside.settings import data_dir
from fireside.tools.base import Tool, ToolError
from fireside.tools.extract import Entry

log = logging.getLogger(__name__)

NO_RESULTS = "no results"
USER_KIND = "file"
# BM25 weights of the indexed columns (title, summary, text): a title match ranks first.
WEIGHTS = (10.0, 2.0, 1.0)
_WORD = re.compile(r"\w+", re.UNICODE)
STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "can",
        "command",
        "commands",
        "could",
        "describe",
        "did",
        "do",
        "does",
        "doing",
        "done",
        "explain",
        "for",
        "from",
        "function",
        "give",
        "how",
        "i",
        "in",
        "is",
        "it",
        "its",
        "me",
        "method",
        "module",
        "my",
        "of",
        "on",
        "or",
        "please",
        "python",
        "tell",
        "that",
        "the",
        "this",
        "to",
        "use",
        "used",
        "using",
        "what",
        "whats",
        "when",
        "where",
        "which",
        "who",
        "why",
        "will",
        "with",
        "would",
        "you",
        "your",
    ]
)
_NAME = re.compile(r"[\w][\w.:+-]*")
_SCHEMA = """
CREATE VIRTUAL TABLE IF NOT EXISTS entries USING fts5(
    title, summary, text, id UNINDEXED, kind UNINDEXED, source UNINDEXED,
    tokenize = 'porter unicode61'
);
CREATE TABLE IF NOT EXISTS names (name TEXT NOT NULL, entry INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS names_by_name ON names (name);
"""


@dataclass(frozen=True)
class Hit:
    title: str
    source: str
    snippet: str
    id: str = ""
    score: float = 0.0  # BM25 as FTS5 gives it: lower is better


def default_index_path() -> Path:
    return data_dir() / "knowledge.db"


def query_terms(query: str) -> list[str]:
    """The content words of a query, lower-cased, in order, without repeats."""
    seen: dict[str, None] = {}
    for word in _WORD.findall(query.lower()):
        if word not in STOPWORDS:
            seen.setdefault(word, None)
    return list(seen)


def query_names(query: str) -> list[str]:
    """Words of a query that may be an entry's exact name: `tar`, `json.dumps`, `os.path`."""
    words = [n.rstrip(".:-").lower() for n in _NAME.findall(query)]
    words = [n for n in words if n and n not in STOPWORDS]
    # "json dumps" may mean json.dumps: adjacent words joined by a dot are candidates too.
    joined = [f"{a}.{b}" for a, b in itertools.pairwise(words)]
    return list(dict.fromkeys(words + joined))


def _quote(term: str) -> str:
    return '"' + term.replace('"', '""') + '"'


def _insert(db: sqlite3.Connection, kind: str, entries: Iterable[Entry]) -> int:
    seen: set[str] = set()
    for e in entries:
        if e.id in seen:
            continue
        seen.add(e.id)
        cursor = db.execute(
            "INSERT INTO entries (title, summary, text, id, kind, source) VALUES (?, ?, ?, ?, ?, ?)",
            (e.title, e.summary, e.text, e.id, kind, e.source),
        )
        db.executemany(
            "INSERT INTO names (name, entry) VALUES (?, ?)",
            [(name, cursor.lastrowid) for name in e.names],
        )
    return len(seen)


def build_index(
    db_path: Path, extractors: Mapping[str, Iterable[Entry]], keep_user_entries: bool = True
) -> dict[str, int]:
    """(Re)build the index from named extractors ({kind: entries}) → entries per kind.
    Entries added by `add_entries` (kind "file") survive a rebuild."""
    db_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = db_path.with_name(f".{db_path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    counts: dict[str, int] = {}
    try:
        with contextlib.closing(sqlite3.connect(tmp)) as db:
            db.executescript(_SCHEMA)
            if keep_user_entries and db_path.is_file():
                # A user's files carry no names, so their entries copy over alone.
                db.execute("ATTACH DATABASE ? AS old", (str(db_path),))
                db.execute(
                    "INSERT INTO entries (title, summary, text, id, kind, source) "
                    "SELECT title, summary, text, id, kind, source FROM old.entries WHERE kind = ?",
                    (USER_KIND,),
                )
                db.commit()
                db.execute("DETACH DATABASE old")
            for kind, entries in extractors.items():
                counts[kind] = _insert(db, kind, entries)
            db.execute("INSERT INTO entries (entries) VALUES ('optimize')")
            db.commit()
        os.replace(tmp, db_path)
    finally:
        tmp.unlink(missing_ok=True)
    return counts


def add_entries(db_path: Path, entries: Iterable[Entry]) -> int:
    """Add (or replace, by id) a user's own entries."""
    db_path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.closing(sqlite3.connect(db_path)) as db:
        db.executescript(_SCHEMA)
        entries = list(entries)
        ids = [(e.id,) for e in entries]
        db.executemany(
            "DELETE FROM names WHERE entry IN (SELECT rowid FROM entries WHERE id = ?)", ids
        )
        db.executemany("DELETE FROM entries WHERE id = ?", ids)
        n = _insert(db, USER_KIND, entries)
        db.commit()
    return n


class KnowledgeIndex:
    def __init__(self, db_path: Path) -> None:
        self.db_path = Path(db_path)

    def _connect(self) -> sqlite3.Connection:
        if not self.db_path.is_file():
            raise ToolError(
                f"there is no knowledge index at {self.db_path}; run `fireside knowledge build`"
            )
        # Read-only: a search never creates or changes the file.
        return sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True)

    def count(self) -> dict[str, int]:
        with contextlib.closing(self._connect()) as db:
            rows = db.execute("SELECT kind, count(*) FROM entries GROUP BY kind").fetchall()
        return {kind: n for kind, n in rows}

    def _rows(self, db: sqlite3.Connection, match: str, limit: int) -> list[Any]:
        sql = (
            "SELECT title, source, summary, id, bm25(entries, ?, ?, ?) AS score FROM entries "
            "WHERE entries MATCH ? ORDER BY score LIMIT ?"
        )
        return db.execute(sql, (*WEIGHTS, match, limit)).fetchall()

    def _named(self, db: sqlite3.Connection, names: list[str], limit: int) -> list[Any]:
        # An exact name outranks any score: "tar" is tar(1), not every page that mentions tar.
        # The longest name matched first (json.dumps before json), then shorter titles.
        marks = ", ".join("?" * len(names))
        sql = (
            "SELECT e.title, e.source, e.summary, e.id, -1000.0 FROM names n "
            "JOIN entries e ON e.rowid = n.entry "
            f"WHERE n.name IN ({marks}) "
            "ORDER BY length(n.name) DESC, length(e.title), e.title LIMIT ?"
        )
        return db.execute(sql, (*names, limit)).fetchall()

    def search(self, query: str, limit: int = 3) -> list[Hit]:
        terms = query_terms(query)
        if not terms or limit < 1:
            return []
        quoted = [_quote(t) for t in terms]
        with contextlib.closing(self._connect()) as db:
            rows = self._named(db, query_names(query), limit)
            ranked = self._rows(db, " AND ".join(quoted), limit)
            if not ranked and not rows and len(terms) > 1:
                ranked = self._rows(db, "title : (" + " OR ".join(quoted) + ")", limit)
        seen = {r[3] for r in rows}
        rows += [r for r in ranked if r[3] not in seen]
        return [
            Hit(title=r[0], source=r[1], snippet=r[2], id=r[3], score=r[4]) for r in rows[:limit]
        ]


def format_hits(hits: list[Hit]) -> str:
    """What the model reads: `title: snippet`, one hit a line, or exactly `no results`."""
    if not hits:
        return NO_RESULTS
    return "\n".join(f"{h.title}: {h.snippet}" for h in hits)


def default_sources() -> dict[str, Iterable[Entry]]:
    """What `fireside knowledge build` indexes: man pages, the standard library, dictionaries."""
    from fireside.tools.extract import dictionaries, man_pages, python_stdlib

    return {"man": man_pages(), "python": python_stdlib(), "dict": dictionaries()}


def ensure_index(db_path: Path) -> None:
    """Build the index from this machine's documentation if there is none yet, once: a fresh
    install's first search should find `tar`, not fail. A lock file keeps two processes (a
    server and a terminal chat) from building it twice."""
    if db_path.is_file():
        return
    db_path.parent.mkdir(parents=True, exist_ok=True)
    with open(db_path.with_name(db_path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not db_path.is_file():
            log.warning("building the knowledge index at %s (once; about a minute)", db_path)
            build_index(db_path, default_sources())


def search_tool(db_path: Path | None = None, limit: int = 3) -> Tool:
    """`search` over `db_path`; without one, over the data directory's index, built on first use."""
    path = db_path or default_index_path()
    index = KnowledgeIndex(path)

    def run(arguments: dict[str, Any]) -> str:
        return format_hits(index.search(arguments["query"], limit))

    return Tool(
        name="search",
        description="Search this computer's documentation: commands, Python, dictionary.",
        parameters={
            "type": "object",
            "properties": {"query": {"type": "string"}},
            "required": ["query"],
        },
        run=run,
        timeout_s=10.0,
        max_chars=1200,
        prepare=None if db_path else lambda: ensure_index(path),
    )
