"""The local knowledge index: SQLite FTS5, ranked by BM25, and the `search` tool over it.

One table holds every entry (title, summary and body searched; id, kind and source kept).
`build_index` writes a new file beside the old one and renames it into place, keeping the
entries a user added with `fireside knowledge add`, so a half-built index is never read.

A query keeps its content words (question words like "what" and "does" dropped). An entry
whose exact name the query gives comes first (`tar`, `os.path.join`), but in a longer query
only a word that looks like code counts as a name: "list files directory" asks about listing
files, not about `list`. The rest rank by BM25 over any of the words, where a row must hold
most of them, with a bonus where a word is its name or query words stand side by side in its
title or summary. No row left is `no results`, which is how the model learns to say it does
not know. A query that is one name (`frobnicate-ctl`) which no entry bears gets its hits under
a line saying so (`no entry is named ...`): whether `pg_ctl` is `frobnicate-ctl` is a string
comparison the search can make and a small model cannot, so the tool says it, and the model
learns to pass it on ("I found nothing on frobnicate-ctl; the closest is pg_ctl ...").
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import json
import logging
import os
import re
import sqlite3
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from fireside.settings import data_dir
from fireside.tools.base import Tool, ToolError
from fireside.tools.extract import Entry

log = logging.getLogger(__name__)

NO_RESULTS = "no results"
NOT_NAMED = "no entry is named `{name}`; the closest:"
_NOT_NAMED_START = NOT_NAMED.split("`")[0]
EXACT = -1000.0  # a hit's score when the query names it exactly
USER_KIND = "file"
# BM25 weights of the indexed columns (title, summary, text): a word in the title or in the
# one-line summary says more about an entry than one in its long body.
WEIGHTS = (5.0, 5.0, 1.0)
CANDIDATES = 50  # rows BM25 ranks first, re-ranked below
NAME_BONUS = 1.5  # for a row that a query word names and that holds most of the words
PHRASE_BONUS = 0.3  # per pair of query words near each other in a title or summary
NESTED_PENALTY = 0.1  # per level below module.function: `pdb.Pdb.do_up` is rarely the answer
# C programming pages (man sections 2 and 3: `sqrt(3)`, `div(3)`) answer few of the questions
# asked here; a plain "square root of x" means Python's, a command's page still ranks.
C_API_FACTOR = 0.6
_C_API_TITLE = re.compile(r".*\([23]\w*\)")
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
_CODE = re.compile(r"`([^`]+)`|([\w.:+-]+)\(")  # `tar`, len(): written as code
_CODELIKE = re.compile(r"\w[._:+-]|_")  # os.path, pg_ctl, ssh-keygen, c++
_SCHEMA = """
CREATE VIRTUAL TABLE IF NOT EXISTS entries USING fts5(
    title, summary, text, id UNINDEXED, kind UNINDEXED, source UNINDEXED,
    tokenize = 'porter unicode61'
);
CREATE TABLE IF NOT EXISTS names (name TEXT NOT NULL, entry INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS names_by_name ON names (name);
"""


class Row(NamedTuple):
    title: str
    source: str
    summary: str
    id: str
    score: float
    kind: str
    rowid: int


def _prior(row: Row) -> float:
    """How likely an entry of its kind and depth is the answer, as a factor on its score."""
    if row.kind == "python":
        return 1 / (1 + NESTED_PENALTY * max(row.title.count(".") - 1, 0))
    return C_API_FACTOR if _C_API_TITLE.fullmatch(row.title) else 1.0


@dataclass(frozen=True)
class Hit:
    title: str
    source: str
    snippet: str
    id: str = ""
    score: float = 0.0  # lower is better: EXACT for an exact name, else minus the rank's score

    @property
    def named(self) -> bool:
        return self.score <= EXACT


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
    """Words of a query that may be an entry's exact name: `tar`, `json.dumps`, `os.path`.
    A one-word query is a name; in a longer one only a word that looks like code is (dotted,
    underscored, hyphenated, in backticks, before parentheses): common words are names too
    ("list", "file", "copy"), and "list files in a directory" is not about `list`."""
    words = [n.rstrip(".:-").lower() for n in _NAME.findall(query)]
    words = [n for n in words if n and n not in STOPWORDS]
    if len(query_terms(query)) == 1:
        names = words
    else:
        code = {n.rstrip(".:-").lower() for m in _CODE.finditer(query) for n in _NAME.findall(m[0])}
        names = [w for w in words if w in code or _CODELIKE.search(w)]
    # "json dumps" may mean json.dumps, "git commit" git-commit: adjacent words joined.
    plain = [w for w in words if _WORD.fullmatch(w)]
    joined = [f"{a}{sep}{b}" for a, b in itertools.pairwise(plain) for sep in ".-"]
    return list(dict.fromkeys(names + joined))


def wants_python(query: str) -> bool:
    """Whether the query names the language ("python json dumps"): then Python entries first."""
    return "python" in _WORD.findall(query.lower())


def _most(n: int) -> int:
    """How many of a query's n words a ranked row must hold: both of two, half of more."""
    return min(n, max(2, (n + 1) // 2))


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

    def _named(self, db: sqlite3.Connection, names: list[str], limit: int) -> list[Row]:
        # An exact name outranks any score: "tar" is tar(1), not every page that mentions tar.
        # The longest name matched first (json.dumps before json), then shorter titles.
        if not names:
            return []
        marks = ", ".join("?" * len(names))
        sql = (
            f"SELECT e.title, e.source, e.summary, e.id, {EXACT}, e.kind, e.rowid FROM names n "
            "JOIN entries e ON e.rowid = n.entry "
            f"WHERE n.name IN ({marks}) "
            "ORDER BY length(n.name) DESC, length(e.title), e.title LIMIT ?"
        )
        return [Row(*r) for r in db.execute(sql, (*names, limit))]

    def _ranked(self, db: sqlite3.Connection, terms: list[str]) -> list[Row]:
        """BM25 over the rows holding any of the terms, re-ranked: a row must hold most of
        them; a term that is its name ("kill process": kill(1)) and query words side by side
        in its title or summary count extra; and priors on kind."""
        quoted = [_quote(t) for t in terms]
        columns = "title, source, summary, id, bm25(entries, ?, ?, ?) AS score, kind, rowid"
        match = " OR ".join(quoted)
        sql = f"SELECT {columns} FROM entries WHERE entries MATCH ? ORDER BY score LIMIT ?"
        rows = [Row(*r) for r in db.execute(sql, (*WEIGHTS, match, CANDIDATES))]
        marks = ", ".join("?" * len(terms))
        sql = (
            f"SELECT {columns} FROM entries WHERE entries MATCH ? "
            f"AND rowid IN (SELECT entry FROM names WHERE name IN ({marks}))"
        )
        named = [Row(*r) for r in db.execute(sql, (*WEIGHTS, match, *terms))]
        named_ids, have = {r.rowid for r in named}, {r.rowid for r in rows}
        rows += [r for r in named if r.rowid not in have]
        rowids = json.dumps([r.rowid for r in rows])

        def holding(matches: Iterable[str]) -> Counter[int]:
            """How many of the FTS5 queries each of `rows` matches."""
            sql = (
                "SELECT rowid FROM entries "
                "WHERE entries MATCH ? AND rowid IN (SELECT value FROM json_each(?))"
            )
            return Counter(i for m in matches for (i,) in db.execute(sql, (m, rowids)))

        if len(terms) > 1:  # most of the words: "capital of france" is not every "capital"
            held = holding(quoted)
            rows = [r for r in rows if held[r.rowid] >= _most(len(terms))]
        near = holding(
            f"{{title summary}} : NEAR({a} {b}, 2)" for a, b in itertools.pairwise(quoted)
        )
        # bm25 is negative, better lower: a factor over 1 raises a row, under 1 lowers it.
        rescored = [
            r._replace(
                score=r.score
                * (1 + PHRASE_BONUS * near[r.rowid])
                * (NAME_BONUS if r.rowid in named_ids else 1.0)
                * _prior(r)
            )
            for r in rows
        ]
        return sorted(rescored, key=lambda r: r.score)

    def search(self, query: str, limit: int = 3) -> list[Hit]:
        terms = query_terms(query)
        if not terms or limit < 1:
            return []
        with contextlib.closing(self._connect()) as db:
            rows = self._named(db, query_names(query), limit)
            ranked = self._ranked(db, terms)
        seen = {r.id for r in rows}
        rows += [r for r in ranked if r.id not in seen]
        if wants_python(query):  # "python tar" asks for tarfile, not tar(1)
            rows.sort(key=lambda r: r.kind != "python")
        return [
            Hit(title=r.title, source=r.source, snippet=r.summary, id=r.id, score=r.score)
            for r in rows[:limit]
        ]


def asked_name(query: str) -> str | None:
    """The name a query of one name asks about (`frobnicate-ctl`, "os.path.join"), else None."""
    name = query.strip().strip("`'\"?!,;").rstrip(".:-")
    return name if _NAME.fullmatch(name) and name.lower() not in STOPWORDS else None


def format_hits(hits: list[Hit], asked: str | None = None) -> str:
    """What the model reads: `title: snippet`, one hit a line, or exactly `no results`; under
    a `no entry is named` line when `asked` (a query of one name) names none of them."""
    if not hits:
        return NO_RESULTS
    lines = [f"{h.title}: {h.snippet}" for h in hits]
    if asked is not None and not any(h.named for h in hits):
        lines.insert(0, NOT_NAMED.format(name=asked))
    return "\n".join(lines)


def result_hits(result: str) -> list[str]:
    """The hit lines of a search result (without its `no entry is named` line)."""
    if result == NO_RESULTS:
        return []
    lines = result.splitlines()
    return lines[1:] if lines and lines[0].startswith(_NOT_NAMED_START) else lines


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
        query = arguments["query"]
        return format_hits(index.search(query, limit), asked_name(query))

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
