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
