"""`fireside serve | chat | train | eval | data | bench`: the command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from fireside.errors import FiresideError
from fireside.settings import Settings


def _serve(args: argparse.Namespace) -> int:
    settings = Settings()
    overrides = {
        k: v for k, v in vars(args).items() if k in Settings.model_fields and v is not None
    }
    settings = settings.model_copy(update=overrides)
    print(
        "fireside serve: the OpenAI-compatible server is not built yet (issue: API server). "
        f"It will serve {settings.model or 'the bundled model'} on http://{settings.host}:{settings.port}.",
        file=sys.stderr,
    )
    return 2


def _eval(args: argparse.Namespace) -> int:
    from pathlib import Path

    from fireside.eval.run import EvalOptions, evaluate, resolve_device

    evaluate(
        EvalOptions(
            model=Path(args.model),
            output=Path(args.output) if args.output else None,
            texts=[Path(p) for p in args.text],
            humaneval_limit=args.humaneval_limit,
            humaneval_timeout_s=args.humaneval_timeout,
            chat=not args.no_chat,
            device=resolve_device(args.device),
        )
    )
    return 0


def _add_eval_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ev = sub.add_parser("eval", help="evaluate a model and write its report card")
    ev.add_argument("--model", required=True, help="model or run directory (HF format)")
    ev.add_argument("--output", help="where report.md goes; default: the model directory")
    ev.add_argument(
        "--text", nargs="+", default=[], metavar="PATH", help="held-out text for bits per byte"
    )
    ev.add_argument(
        "--humaneval-limit", type=int, help="first N HumanEval problems (default all, 0 skips)"
    )
    ev.add_argument("--humaneval-timeout", type=float, default=10.0, help="seconds per program")
    ev.add_argument("--no-chat", action="store_true", help="skip the chat eval")
    ev.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default auto)")
    ev.set_defaults(func=_eval)


def _finetune(args: argparse.Namespace) -> int:
    from pathlib import Path

    from fireside.train.finetune import FinetuneOptions

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
        muon=not args.adamw_only,
        max_len=args.max_len,
        seed=args.seed,
        save_every=args.save_every,
        keep_last=args.keep_last,
        device=args.device,
    )
    if args.stage == "sft":
        from fireside.train.sft import train_sft

        train_sft(opts)
    else:
        from fireside.train.dpo import train_dpo

        train_dpo(opts, beta=args.beta)
    return 0


def _add_finetune_parsers(stages: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
        p.add_argument("--adamw-only", action="store_true", help="AdamW for all weights, no Muon")
        p.add_argument("--max-len", type=int, help="tokens per sequence (default: the context)")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--save-every", type=int, default=100, help="checkpoint every N steps")
        p.add_argument("--keep-last", type=int, default=2, help="checkpoints kept")
        p.add_argument("--device", default="auto")
        if stage == "dpo":
            p.add_argument("--beta", type=float, default=0.1, help="DPO temperature")
        p.set_defaults(func=_finetune)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fireside", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the OpenAI-compatible API and the chat app")
    serve.add_argument("--model", help="model directory (HF format); default: the bundled model")
    serve.add_argument("--served-model-name", dest="served_model_name")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--api-key", dest="api_key")
    serve.set_defaults(func=_serve)
    train = sub.add_parser("train", help="train a model: sft, dpo")
    _add_finetune_parsers(train.add_subparsers(dest="stage", required=True))
    _add_eval_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except FiresideError as e:
        print(f"fireside: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
