"""`fireside eval`: argument parsing only; the work is imported lazily."""

from __future__ import annotations

import argparse


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


def add_eval_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
