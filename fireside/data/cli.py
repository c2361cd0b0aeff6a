"""`fireside data prepare | sources | synth-chat | dedup | overlap`: argument parsing only; the
work is imported lazily."""

from __future__ import annotations

import argparse
import json


def _prepare(args: argparse.Namespace) -> int:
    from fireside.data.prepare import prepare
    from fireside.model.tokenizer import Tokenizer

    manifest = prepare(
        args.input,
        Tokenizer.from_dir(args.tokenizer),
        args.output,
        val_fraction=args.val_fraction,
        seed=args.seed,
        shard_tokens=args.shard_tokens,
        overwrite=args.overwrite,
        progress=not args.no_progress,
        max_document_chars=args.max_document_chars,
    )
    splits = manifest["splits"]
    print(
        f"{args.output}: train {splits['train']['documents']} documents / "
        f"{splits['train']['tokens']:,} tokens, val {splits['val']['documents']} / "
        f"{splits['val']['tokens']:,}; {manifest['duplicates_removed']} duplicates removed"
    )
    for name, s in manifest["sources"].items():
        print(f"  {name}: {s['documents']} documents, {s['tokens']:,} tokens")
    return 0


def _sources(args: argparse.Namespace) -> int:
    from fireside.data.sources import RECIPES, gather

    if args.output is None:
        for recipe in RECIPES.values():
            print(f"{recipe.name:16} {recipe.licence:28} {recipe.description}")
        return 0
    summary = gather(args.output, names=args.recipe, max_files=args.max_files)
    print(json.dumps(summary, indent=2))
    return 0


def _synth_chat(args: argparse.Namespace) -> int:
    from pathlib import Path

    from fireside.data.synth import synthesize

    counts = synthesize(Path(args.output), seed=args.seed, arithmetic_n=args.arithmetic)
    print(f"{args.output}: {sum(counts.values())} conversations " + json.dumps(counts))
    return 0


def _dedup(args: argparse.Namespace) -> int:
    from pathlib import Path

    from fireside.data.held_out import dedup_held_out

    reports = dedup_held_out(
        [Path(p) for p in args.train],
        [Path(p) for p in args.held_out],
        [Path(p) for p in args.output] if args.output else None,
        unit=args.unit,
        report=Path(args.report) if args.report else None,
    )
    for r in reports:
        print(r.line())
    return 0


def _overlap(args: argparse.Namespace) -> int:
    from pathlib import Path

    from fireside.data.held_out import training_texts
    from fireside.data.overlap import SpanIndex
    from fireside.eval.overlap import EvalContext, markdown, overlap_rows
    from fireside.tools.knowledge import default_index_path

    columns = ["pretraining", "SFT"]
    indexes = [
        SpanIndex(training_texts([Path(p) for p in paths])) if paths else None
        for paths in (args.train, args.sft)
    ]
    db = Path(args.knowledge_db) if args.knowledge_db else default_index_path()
    table = markdown(overlap_rows(indexes, EvalContext(knowledge_db=db)), columns)
    if args.output:
        Path(args.output).write_text(table, encoding="utf-8")
    print(table, end="")
    return 0


def add_data_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    data = sub.add_parser("data", help="gather a corpus and prepare token shards")
    actions = data.add_subparsers(dest="action", required=True)

    prep = actions.add_parser(
        "prepare",
        help="clean, deduplicate, shuffle and tokenize into shards",
        description="Clean, deduplicate, shuffle and tokenize the inputs into DATA_DIR, holding "
        "out --val-fraction of the documents (at least one) for validation. A text file longer "
        "than --max-document-chars is split into documents at blank lines, so a single large "
        "file (e.g. nanoGPT's Shakespeare) works: a random slice of its pieces is held out.",
    )
    prep.add_argument("--input", nargs="+", required=True, help="files, directories or globs")
    prep.add_argument("--tokenizer", required=True, help="tokenizer directory")
    prep.add_argument("--output", required=True, help="DATA_DIR to create")
    prep.add_argument("--val-fraction", type=float, default=0.005)
    prep.add_argument(
        "--max-document-chars",
        type=int,
        default=32_000,
        help="split longer text files into documents of at most this many characters (32000)",
    )
    prep.add_argument("--seed", type=int, default=0)
    prep.add_argument("--shard-tokens", type=int, default=100_000_000)
    prep.add_argument("--overwrite", action="store_true", help="replace an existing DATA_DIR")
    prep.add_argument("--no-progress", action="store_true")
    prep.set_defaults(func=_prepare)

    src = actions.add_parser(
        "sources", help="gather text and code from installed packages (no download)"
    )
    src.add_argument("--output", help="corpus directory to write; omit to list the recipes")
    src.add_argument("--recipe", nargs="+", help="recipes to run (default: all available)")
    src.add_argument("--max-files", type=int, help="files per recipe at most")
    src.set_defaults(func=_sources)

    synth = actions.add_parser(
        "synth-chat", help="chat and code SFT conversations made from local facts (no download)"
    )
    synth.add_argument("--output", required=True, help="JSONL file to write")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--arithmetic", type=int, default=1500, help="arithmetic conversations")
    synth.set_defaults(func=_synth_chat)

    dedup = actions.add_parser(
        "dedup",
        help="drop held-out text that shares a 50-character span with the training text",
        description="Write a copy of each held-out file without the paragraphs (or lines) that "
        "share a 50-character span with the training files, checked again until none does; "
        "prints bytes kept and how many random 100-character spans occur in training, before "
        "and after. Training JSONL is read by its `text` fields (or message contents).",
    )
    dedup.add_argument("--train", nargs="+", required=True, help="training files (JSONL, text)")
    dedup.add_argument("--held-out", nargs="+", required=True, help="held-out text files")
    dedup.add_argument(
        "--output", nargs="+", help="one per held-out file (default: NAME.dedup.txt beside it)"
    )
    dedup.add_argument("--unit", choices=("paragraph", "line"), default="paragraph")
    dedup.add_argument("--report", help="also write the figures as JSON here")
    dedup.set_defaults(func=_dedup)

    overlap = actions.add_parser(
        "overlap",
        help="how many items of each eval set share a 50-character span with training",
        description="A markdown table for the report card: per eval set (tool evals, chat "
        "eval, HumanEval), how many items share a 50-character span with the pretraining "
        "text (--train) and with the fine-tuning conversations (--sft).",
    )
    overlap.add_argument("--train", nargs="+", help="pretraining files (JSONL, text)")
    overlap.add_argument("--sft", nargs="+", help="fine-tuning conversations (JSONL)")
    overlap.add_argument("--knowledge-db", help="index the look-up eval asks about")
    overlap.add_argument("--output", help="also write the table here")
    overlap.set_defaults(func=_overlap)
