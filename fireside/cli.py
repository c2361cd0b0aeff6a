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
