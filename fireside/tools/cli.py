"""`fireside knowledge build | add | search`: argument parsing only; the work is imported lazily."""

from __future__ import annotations

import argparse
from pathlib import Path


def _db(args: argparse.Namespace) -> Path:
    from fireside.tools.knowledge import default_index_path

    return Path(args.db) if args.db else default_index_path()


def _build(args: argparse.Namespace) -> int:
    from fireside.tools.knowledge import build_index, default_sources

    chosen = {name: entries for name, entries in default_sources().items() if name in args.sources}
    db = _db(args)
    counts = build_index(db, chosen)
    print(f"{db}: " + ", ".join(f"{n:,} {kind}" for kind, n in counts.items()))
    return 0


def _add(args: argparse.Namespace) -> int:
    from fireside.errors import FiresideError
    from fireside.tools.extract import directory_files
    from fireside.tools.knowledge import add_entries

    root = Path(args.dir)
    if not root.is_dir():
        raise FiresideError(f"{root} is not a directory")
    db = _db(args)
    skipped: list[Path] = []
    n = add_entries(db, directory_files(root, skipped=skipped))
    print(f"{db}: {n:,} entries from {root}")
    if skipped:
        print(f"skipped {len(skipped)} (symbolic links and files that are not regular files):")
        for path in skipped:
            print(f"  {path}")
    return 0


def _search(args: argparse.Namespace) -> int:
    from fireside.errors import FiresideError
    from fireside.tools.base import ToolError
    from fireside.tools.knowledge import KnowledgeIndex, asked_name, format_hits

    try:
        hits = KnowledgeIndex(_db(args)).search(args.query, args.limit)
    except ToolError as e:
        raise FiresideError(str(e)) from None
    if args.verbose:
        for h in hits:
            print(f"{h.score:8.2f}  {h.id}  {h.source}")
    print(format_hits(hits, asked_name(args.query)))
    return 0


def add_knowledge_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    knowledge = sub.add_parser(
        "knowledge", help="the local knowledge index the `search` tool reads"
    )
    actions = knowledge.add_subparsers(dest="action", required=True)
    db_help = "index file (default: knowledge.db in FIRESIDE_DATA_DIR, ~/.local/share/fireside)"

    build = actions.add_parser(
        "build",
        help="index this machine's man pages, Python docstrings and dictionaries",
        description="Rebuild the index from what the machine holds; entries added with "
        "`fireside knowledge add` are kept.",
    )
    build.add_argument("--db", help=db_help)
    build.add_argument(
        "--sources",
        nargs="+",
        choices=["man", "python", "dict"],
        default=["man", "python", "dict"],
        help="what to index (default: all)",
    )
    build.set_defaults(func=_build)

    add = actions.add_parser(
        "add",
        help="add a directory of your own Markdown and text files (e.g. text from PDFs)",
        description="Index every .md, .markdown, .txt, .text and .rst file under DIR, in "
        "chunks of about 1,500 characters. Adding the same files again replaces them. For "
        "PDFs, extract their text first (e.g. `pdftotext file.pdf`).",
    )
    add.add_argument("dir", metavar="DIR")
    add.add_argument("--db", help=db_help)
    add.set_defaults(func=_add)

    search = actions.add_parser("search", help="search the index as the `search` tool does")
    search.add_argument("query", metavar="QUERY")
    search.add_argument("--db", help=db_help)
    search.add_argument("--limit", type=int, default=3)
    search.add_argument("-v", "--verbose", action="store_true", help="show scores, ids, sources")
    search.set_defaults(func=_search)
