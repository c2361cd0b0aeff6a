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
    from fireside.api.server import serve

    serve(settings)
    return 0


def _chat(args: argparse.Namespace) -> int:
    from fireside.engine import cli_chat

    return cli_chat.run(args)


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
    _add_chat_parser(sub)

    from fireside.data.cli import add_data_parser
    from fireside.train.cli import add_train_parser

    add_data_parser(sub)
    add_train_parser(sub)
    return parser


def _add_chat_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    chat = sub.add_parser("chat", help="chat with a model in the terminal, streamed")
    chat.add_argument("--model", required=True, help="model directory (HF format)")
    chat.add_argument("--system", help="system prompt")
    chat.add_argument("--device", default="auto", help="cpu, cuda, or auto (CUDA if present)")
    chat.add_argument("--max-tokens", type=int, default=512, help="longest reply, in tokens")
    chat.add_argument("--temperature", type=float, default=0.7, help="0 = greedy")
    chat.add_argument("--top-p", type=float, default=1.0)
    chat.add_argument("--top-k", type=int, default=0, help="0 = off")
    chat.add_argument("--min-p", type=float, default=0.0)
    chat.add_argument("--repetition-penalty", type=float, default=1.0)
    chat.add_argument("--seed", type=int, help="fix the sampling for reproducible replies")
    chat.set_defaults(func=_chat)


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
