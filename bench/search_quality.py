"""How well the `search` tool answers: how-do-I questions, bare names and made-up names.

    .venv/bin/python bench/search_quality.py [--db /work/runs/gpu/knowledge.db] [--misses]

Three counts on a real index, each over the search exactly as the model calls it:
- how-do-I: the 176 (task, name) rows of `chat_phrases.HOWTO`, searched with the task's key
  words (as `synth_chat.found_tasks` does); the expected name first (top-1) or in the top 3.
  Rows whose name the index does not hold are counted apart: no ranking can find them.
- look-ups: every entity `synth_tools.index_entities` returns, searched by its bare name (as
  the tool eval does); the entity ranked first.
- made-up names: `synth_tools.made_up_name` names (the honesty eval's and 300 more) whose
  search finds a hit about them; this must stay 0.
- command questions: a few everyday tasks in words ("kill process") and the man page that
  answers each, ranked first; a check that questions about commands do not lose to Python.
- world questions (`synth_chat.world_questions`, "capital of France") answered `no results`:
  more is better, since the index holds nothing about them.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import sqlite3
import time
from pathlib import Path

from fireside.data.chat_phrases import HOWTO
from fireside.data.synth_chat import base_name, key_words, world_questions
from fireside.data.synth_tools import (
    first_hit_about,
    index_entities,
    made_up_name,
    unknown_eval_names,
)
from fireside.tools.knowledge import KnowledgeIndex, format_hits

DEFAULT_DB = Path("/work/runs/gpu/knowledge.db")
COMMAND_TASKS = [
    ("list files directory", "ls(1)"),
    ("extract tar archive", "tar(1)"),
    ("git commit", "git-commit(1)"),
    ("find files by name", "find(1)"),
    ("copy files", "cp(1)"),
    ("search text in files", "grep(1)"),
    ("disk usage", "du(1)"),
    ("kill process", "kill(1)"),
    ("compress file gzip", "gzip(1)"),
    ("sort lines", "sort(1)"),
    ("count lines words", "wc(1)"),
    ("change file permissions", "chmod(1)"),
    ("remove files", "rm(1)"),
    ("make directory", "mkdir(1)"),
    ("show running processes", "ps(1)"),
    ("download url", "wget(1)"),
]


def howto_counts(index: KnowledgeIndex, show_misses: bool) -> tuple[int, int, int]:
    """(top-1, top-3, rows whose name the index holds) over the how-do-I table."""
    with contextlib.closing(sqlite3.connect(f"file:{index.db_path}?mode=ro", uri=True)) as db:
        titles = {base_name(t) for (t,) in db.execute("SELECT title FROM entries")}
    top1 = top3 = 0
    for task, name in HOWTO:
        names = [base_name(h.title) for h in index.search(key_words(task))]
        top1 += names[:1] == [name]
        top3 += name in names
        if show_misses and names[:1] != [name] and name in titles:
            print(f"  miss: {key_words(task)!r} -> {names} (want {name})")
    return top1, top3, sum(name in titles for _, name in HOWTO)


def lookup_count(index: KnowledgeIndex) -> tuple[int, int]:
    """(entities ranked first by their bare name, entities)."""
    entities = index_entities(index.db_path)
    first = 0
    for e in entities:
        hits = index.search(e.name, limit=1)
        first += first_hit_about(format_hits(hits), e.name) is not None
    return first, len(entities)


def made_up_found(index: KnowledgeIndex, extra: int = 300) -> tuple[int, int]:
    """(made-up names whose search finds a hit about them, names tried)."""
    rng = random.Random(1234)
    names = list(dict.fromkeys(unknown_eval_names() + [made_up_name(rng) for _ in range(extra)]))
    found = [n for n in names if first_hit_about(format_hits(index.search(n)), n) is not None]
    return len(found), len(names)


def command_count(index: KnowledgeIndex) -> int:
    """Command tasks whose man page ranks first."""
    return sum([h.title for h in index.search(q, limit=1)] == [want] for q, want in COMMAND_TASKS)


def world_no_results(index: KnowledgeIndex) -> tuple[int, int]:
    """(world questions whose key words find nothing, questions)."""
    questions = world_questions()
    return sum(not index.search(key_words(q)) for q, _ in questions), len(questions)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--db", type=Path, default=DEFAULT_DB)
    ap.add_argument("--misses", action="store_true", help="print each how-do-I row missed")
    args = ap.parse_args()
    if not args.db.is_file():
        raise SystemExit(f"no index at {args.db}; build one with `fireside knowledge build`")
    index = KnowledgeIndex(args.db)
    start = time.perf_counter()
    top1, top3, held = howto_counts(index, args.misses)
    print(f"how-do-I: top-1 {top1}/{len(HOWTO)}, top-3 {top3}/{len(HOWTO)} ({held} in the index)")
    first, entities = lookup_count(index)
    print(f"look-ups: {first}/{entities} entities ranked first by their bare name")
    found, tried = made_up_found(index)
    print(f"made-up names: {found}/{tried} found (must be 0)")
    print(f"command questions: {command_count(index)}/{len(COMMAND_TASKS)} first")
    empty, asked = world_no_results(index)
    print(f"world questions: {empty}/{asked} no results")
    print(f"{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
