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

    from fireside.data.cli import add_data_parser
    from fireside.eval.cli import add_eval_parser
    from fireside.train.cli import add_train_parser

    add_data_parser(sub)
    add_train_parser(sub)
    add_eval_parser(sub)
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
