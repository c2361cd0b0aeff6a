"""`fireside train sft | dpo`: argument parsing only; the work is imported lazily."""

from __future__ import annotations

import argparse


def _finetune(args: argparse.Namespace) -> int:
    from pathlib import Path

    from fireside.train.finetune import FinetuneOptions

    lora = None
    if args.lora_rank is not None:
        from fireside.model.lora import lora_settings

        lora = lora_settings(args.lora_rank, args.lora_alpha, args.lora_targets)
    elif args.lora_alpha is not None or args.lora_targets is not None:
        from fireside.errors import TrainingError

        raise TrainingError("--lora-alpha and --lora-targets need --lora-rank (LoRA's rank r)")
    opts = FinetuneOptions(
        model=Path(args.model),
        data=args.data,
        output=Path(args.output),
        steps=args.steps,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        warmup=args.warmup,
        optimizer=args.optimizer,
        progress=not args.no_progress,
        max_len=args.max_len,
        seed=args.seed,
        save_every=args.save_every,
        keep_last=args.keep_last,
        device=args.device,
        lora=lora,
    )
    if args.stage == "sft":
        from fireside.train.sft import train_sft

        train_sft(opts)
    else:
        from fireside.train.dpo import train_dpo

        train_dpo(opts, beta=args.beta)
    return 0


def add_finetune_parsers(stages: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    for stage, help_text, lr in (
        ("sft", "supervised fine-tuning on conversations (assistant tokens only)", 1e-4),
        ("dpo", "preference tuning (DPO) against the frozen starting model", 1e-5),
    ):
        p = stages.add_parser(stage, help=help_text)
        p.add_argument("--model", required=True, help="starting model directory (HF format)")
        p.add_argument(
            "--data",
            required=True,
            action="append",
            metavar="FILE.jsonl[:WEIGHT]",
            help="JSONL data; repeat to mix files, WEIGHT = passes per epoch (default 1)",
        )
        p.add_argument("--output", required=True, help="RUN_DIR: checkpoints, metrics, model")
        p.add_argument("--steps", type=int, help="optimizer steps (default: --epochs)")
        p.add_argument("--epochs", type=float, default=1.0)
        p.add_argument("--batch-size", type=int, default=8, help="conversations per step")
        p.add_argument("--lr", type=float, default=lr)
        p.add_argument("--weight-decay", type=float, default=0.0)
        p.add_argument("--warmup", type=int, default=0, help="warmup steps")
        p.add_argument(
            "--optimizer",
            choices=["auto", "muon", "adamw"],
            default="auto",
            help="muon: Muon for hidden matrices + AdamW; auto: muon on CUDA, adamw on CPU",
        )
        p.add_argument("--max-len", type=int, help="tokens per sequence (default: the context)")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--save-every", type=int, default=100, help="checkpoint every N steps")
        p.add_argument("--keep-last", type=int, default=2, help="checkpoints kept")
        p.add_argument("--device", default="auto", help="auto, cpu, cuda")
        p.add_argument("--no-progress", action="store_true", help="no progress bar")
        lora = p.add_argument_group(
            "LoRA", "train a low-rank adapter (PEFT's format) instead of every weight"
        )
        lora.add_argument("--lora-rank", type=int, metavar="R", help="adapter rank; turns LoRA on")
        lora.add_argument(
            "--lora-alpha", type=int, metavar="A", help="scale alpha/R (default 2 x R)"
        )
        lora.add_argument(
            "--lora-targets",
            metavar="q,k,v,o,gate,up,down",
            help="projections to adapt, comma-separated (default: all seven)",
        )
        if stage == "dpo":
            p.add_argument("--beta", type=float, default=0.1, help="DPO temperature")
        p.set_defaults(func=_finetune)
