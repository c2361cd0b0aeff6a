"""`fireside data prepare | sources | synth-chat`: argument parsing only; the work is imported lazily."""

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
