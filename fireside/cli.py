"""`fireside serve | chat | train | merge | export | quantize | eval | data | knowledge | admin`:
the command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from fireside.errors import FiresideError
from fireside.settings import Settings


def _serve(args: argparse.Namespace) -> int:
    overrides = {
        k: v for k, v in vars(args).items() if k in Settings.model_fields and v is not None
    }
    try:
        # Flags override FIRESIDE_* variables, and both are checked (a 0 or a negative size
        # is refused here, not deep inside the engine).
        settings = Settings(**overrides)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()
        )
        raise FiresideError(f"invalid settings: {problems}") from None
    from fireside.api.server import serve

    serve(settings)
    return 0


def _chat(args: argparse.Namespace) -> int:
    from fireside import chat_cli

    return chat_cli.run(args)


MODEL_HELP = (
    "model directory (HF format) or GGUF file (F32/F16/BF16, Q8_0, Q4_0, Q4_K, Q5_K, Q6_K "
    "tensors; a directory holding one .gguf too); default: the bundled model"
)


def _merge(args: argparse.Namespace) -> int:
    from fireside.model.lora import merge_adapter

    merge_adapter(args.model, args.adapter, args.output)
    print(f"merged model written to {args.output}", file=sys.stderr)
    return 0


CHAT_HELP = """\
Talk to a model in the terminal, or answer one PROMPT and exit.

  fireside chat                          a conversation: a line in, the reply streams out
  fireside chat "What is 15% of 240?"    one answer, printed, then exit
  fireside chat --json "..."             the whole exchange, tool steps included, as JSON

Tools (calculator, search, python) are on for models trained with them ("fireside_tools":
true in generation_config.json). The answer goes to stdout, tool steps to stderr."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fireside", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the OpenAI-compatible API and the chat app")
    serve.add_argument("--model", help=MODEL_HELP)
    serve.add_argument("--served-model-name", dest="served_model_name")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--api-key", dest="api_key")
    serve.add_argument("--device", help="cpu, cuda, or auto (default: CUDA if present)")
    serve.add_argument(
        "--max-num-seqs", type=int, dest="max_num_seqs", help="samples decoding at once (64)"
    )
    serve.add_argument(
        "--max-model-len", type=int, dest="max_model_len", help="cap on prompt + output tokens"
    )
    serve.add_argument(
        "--kv-cache-gib", type=float, dest="kv_cache_gib", help="KV cache memory in GiB (1)"
    )
    serve.add_argument(
        "--no-pack-weights",
        dest="pack_weights",
        action="store_false",
        default=None,
        help="CPU: no oneDNN-packed copy of the weights for batches (less memory, slower batching)",
    )
    serve.add_argument(
        "--quantize",
        choices=["int8", "int4"],
        help="CPU: quantize the weights at load (int8 = Q8_0, int4 = Q4_K/Q4_0; ggml kernels)",
    )
    serve.add_argument(
        "--lora",
        action="append",
        metavar="NAME=DIR",
        help="a LoRA adapter (PEFT format) served beside the base as model NAME; repeatable",
    )
    serve.set_defaults(func=_serve)
    _add_chat_parser(sub)

    from fireside.app.cli import add_admin_parser
    from fireside.data.cli import add_data_parser
    from fireside.eval.cli import add_eval_parser
    from fireside.model.cli import add_export_parser, add_quantize_parser
    from fireside.tools.cli import add_knowledge_parser
    from fireside.train.cli import add_train_parser

    add_data_parser(sub)
    add_knowledge_parser(sub)
    add_train_parser(sub)
    _add_merge_parser(sub)
    add_export_parser(sub)
    add_quantize_parser(sub)
    add_eval_parser(sub)
    add_admin_parser(sub)
    return parser


def _add_chat_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    chat = sub.add_parser(
        "chat",
        help="chat with a model in the terminal, or answer one PROMPT and exit",
        description=CHAT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    chat.add_argument("prompt", nargs="?", metavar="PROMPT", help="answer this once and exit")
    chat.add_argument("--model", help=MODEL_HELP)
    chat.add_argument("--json", action="store_true", help="with PROMPT: the whole exchange as JSON")
    tools = chat.add_mutually_exclusive_group()
    tools.add_argument(
        "--tools",
        dest="tools",
        action="store_true",
        default=None,
        help="use the built-in tools (default: when the model was trained with them)",
    )
    tools.add_argument("--no-tools", dest="tools", action="store_false", help="no tools")
    chat.add_argument("--max-steps", type=int, default=5, help="model turns per reply (tools)")
    chat.add_argument("--knowledge-db", help="the search tool's index (default: the data dir's)")
    chat.add_argument("--system", help="system prompt")
    chat.add_argument("--device", default="auto", help="cpu, cuda, or auto (CUDA if present)")
    chat.add_argument(
        "--quantize",
        choices=["int8", "int4"],
        help="CPU: quantize the weights at load (int8 = Q8_0, int4 = Q4_K/Q4_0)",
    )
    chat.add_argument("--max-tokens", type=int, default=512, help="longest reply, in tokens")
    chat.add_argument("--temperature", type=float, default=0.7, help="0 = greedy")
    chat.add_argument("--top-p", type=float, default=1.0)
    chat.add_argument("--top-k", type=int, default=0, help="0 = off")
    chat.add_argument("--min-p", type=float, default=0.0)
    chat.add_argument("--repetition-penalty", type=float, default=1.0)
    chat.add_argument("--seed", type=int, help="fix the sampling for reproducible replies")
    chat.set_defaults(func=_chat)


def _add_merge_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    merge = sub.add_parser(
        "merge",
        help="fold a LoRA adapter into its base model: a normal model directory",
        description="Write BASE + ADAPTER (W + alpha/r x BA) as a model directory that "
        "fireside serve and transformers load like any other.",
    )
    merge.add_argument("--model", required=True, help="the base model directory (HF format)")
    merge.add_argument(
        "--adapter", required=True, help="the adapter (adapter_config.json, its safetensors)"
    )
    merge.add_argument("--output", required=True, help="the merged model's new directory")
    merge.set_defaults(func=_merge)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except FiresideError as e:
        print(f"fireside: error: {e}", file=sys.stderr)
        return 2


def entry() -> None:
    """The `fireside` console script: commands that decode run under jemalloc where the
    machine has it (`fireside.allocator`); tests call `main` and stay in their process."""
    if len(sys.argv) > 1 and sys.argv[1] in ("serve", "chat"):
        from fireside.allocator import reexec_with_jemalloc

        reexec_with_jemalloc()
    sys.exit(main())


if __name__ == "__main__":
    entry()
