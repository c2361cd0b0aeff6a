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
            data=Path(args.data) if args.data else None,
            bpb_tokens=args.bpb_tokens,
            humaneval_limit=args.humaneval_limit,
            humaneval_timeout_s=args.humaneval_timeout,
            humaneval_mode=args.humaneval_mode,
            chat=not args.no_chat,
            chat_tools=args.chat_tools,
            conversation=args.conversation,
            programs=args.programs,
            knowledge_db=Path(args.knowledge_db) if args.knowledge_db else None,
            overlap=Path(args.overlap) if args.overlap else None,
            device=resolve_device(args.device),
        )
    )
    return 0


def add_eval_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ev = sub.add_parser("eval", help="evaluate a model and write its report card")
    ev.add_argument("--model", required=True, help="model or run directory (HF format)")
    ev.add_argument("--output", help="where report.md goes; default: the model directory")
    held_out = ev.add_mutually_exclusive_group()
    held_out.add_argument(
        "--data", metavar="DATA_DIR", help="bits per byte on the val split of `data prepare`"
    )
    held_out.add_argument(
        "--text", nargs="+", default=[], metavar="PATH", help="bits per byte on raw text files"
    )
    ev.add_argument("--bpb-tokens", type=int, help="score at most this many held-out tokens")
    ev.add_argument(
        "--humaneval-limit", type=int, help="first N HumanEval problems (default all, 0 skips)"
    )
    ev.add_argument(
        "--humaneval-mode",
        choices=["completion", "chat"],
        default="completion",
        help="completion: continue the prompt (base models); chat: ask in a user turn",
    )
    ev.add_argument("--humaneval-timeout", type=float, default=10.0, help="seconds per program")
    ev.add_argument("--no-chat", action="store_true", help="skip the chat eval")
    ev.add_argument(
        "--chat-tools",
        action="store_true",
        help="the tool skills through the tool loop: held-out arithmetic, look-ups, honesty, identity",
    )
    ev.add_argument(
        "--conversation",
        action="store_true",
        help="60 held-out prompts: small talk, honest 'I don't know', how-do-I, near-miss names",
    )
    ev.add_argument(
        "--programs",
        action="store_true",
        help="100 held-out function-writing requests through the tool loop, code run on hidden tests",
    )
    ev.add_argument(
        "--knowledge-db", help="the search tool's index (default: the data directory's)"
    )
    ev.add_argument(
        "--overlap", help="`fireside data overlap --output` table to include in the report card"
    )
    ev.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default auto)")
    ev.set_defaults(func=_eval)
