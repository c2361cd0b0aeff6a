"""`fireside serve | worker | chat | train | merge | export | quantize | eval | data | knowledge |
admin`: the command line."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from fireside.errors import FiresideError
from fireside.settings import Settings


def _serve(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    from fireside.server import serve

    serve(settings)
    return 0


def settings_from(args: argparse.Namespace) -> Settings:
    """Flags override FIRESIDE_* variables, and both are checked (a 0 or a negative size is
    refused here, not deep inside the engine)."""
    overrides = {
        k: v for k, v in vars(args).items() if k in Settings.model_fields and v is not None
    }
    try:
        return Settings(**overrides)
    except ValidationError as e:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()
        )
        raise FiresideError(f"invalid settings: {problems}") from None


def _worker(args: argparse.Namespace) -> int:
    from fireside.worker.server import WorkerOptions, run_worker

    if args.port is None and "FIRESIDE_PORT" not in os.environ:
        args.port = 50051  # gRPC's customary port, not the HTTP server's 8000
    settings = settings_from(args)
    options = WorkerOptions(
        metrics_port=args.metrics_port,
        ssl_certfile=args.ssl_certfile,
        ssl_keyfile=args.ssl_keyfile,
        ssl_ca_certs=args.ssl_ca_certs,
    )
    run_worker(settings, options)
    return 0


def _add_worker_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    worker = sub.add_parser(
        "worker",
        help="serve a model to gateways over gRPC (no web stack)",
        description="Load a model into the engine and serve it over gRPC "
        "(fireside.worker.v1.ModelWorker and grpc.health.v1.Health) to `fireside serve "
        "--workers` gateways.",
    )
    _add_engine_flags(worker)
    worker.add_argument("--metrics-port", dest="metrics_port", type=int,
                        help="HTTP port for /metrics, /livez and /readyz (default: none)")  # fmt: skip
    worker.add_argument("--ssl-certfile", dest="ssl_certfile", help="TLS: the server's certificate")
    worker.add_argument("--ssl-keyfile", dest="ssl_keyfile", help="TLS: its private key")
    worker.add_argument("--ssl-ca-certs", dest="ssl_ca_certs",
                        help="TLS: require client certificates signed by this CA (mutual TLS)")  # fmt: skip
    worker.set_defaults(func=_worker)


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


def _add_engine_flags(parser: argparse.ArgumentParser) -> None:
    """The model and engine-sizing flags `serve` and `worker` share (Settings fields)."""
    parser.add_argument("--model", help=MODEL_HELP)
    parser.add_argument("--served-model-name", dest="served_model_name")
    parser.add_argument("--host")
    parser.add_argument("--port", type=int)
    parser.add_argument("--device", help="cpu, cuda, or auto (default: CUDA if present)")
    parser.add_argument(
        "--max-num-seqs", type=int, dest="max_num_seqs", help="samples decoding at once (64)"
    )
    parser.add_argument(
        "--max-model-len", type=int, dest="max_model_len", help="cap on prompt + output tokens"
    )
    parser.add_argument(
        "--kv-cache-gib", type=float, dest="kv_cache_gib", help="KV cache memory in GiB (1)"
    )
    parser.add_argument(
        "--no-pack-weights",
        dest="pack_weights",
        action="store_false",
        default=None,
        help="CPU: no oneDNN-packed copy of the weights for batches (less memory, slower batching)",
    )
    parser.add_argument(
        "--quantize",
        choices=["int8", "int4"],
        help="CPU: quantize the weights at load (int8 = Q8_0, int4 = Q4_K/Q4_0; ggml kernels)",
    )
    parser.add_argument(
        "--lora",
        action="append",
        metavar="NAME=DIR",
        help="a LoRA adapter (PEFT format) served beside the base as model NAME; repeatable",
    )


def _add_serve_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = sub.add_parser("serve", help="run the OpenAI-compatible API and the chat app")
    _add_engine_flags(serve)
    serve.add_argument("--api-key", dest="api_key")
    serve.add_argument(
        "--workers",
        help="host:port,... of `fireside worker` processes: this gateway loads no model and "
        "sends generation to them (gRPC)",
    )
    serve.add_argument(
        "--worker-ca", dest="worker_ca", help="CA that signed the workers' certificates (TLS)"
    )
    serve.add_argument(
        "--worker-cert", dest="worker_cert", help="client certificate for workers under mutual TLS"
    )
    serve.add_argument("--worker-key", dest="worker_key", help="the --worker-cert's private key")
    serve.add_argument("--ssl-certfile", dest="ssl_certfile", help="serve HTTPS: certificate (PEM)")
    serve.add_argument("--ssl-keyfile", dest="ssl_keyfile", help="serve HTTPS: private key (PEM)")
    serve.add_argument(
        "--forwarded-allow-ips",
        dest="forwarded_allow_ips",
        help="proxies whose X-Forwarded-* headers are believed: addresses/networks, "
        "comma-separated, '*' any, '' none (default: 127.0.0.1,::1)",
    )
    serve.add_argument(
        "--log-format", dest="log_format", choices=["text", "json"], help="logs on stderr (text)"
    )
    serve.set_defaults(func=_serve)


# Commands whose parsers live beside their code: (module, function adding the parser, help).
# Only the command being run has its module imported, so `fireside worker` on a GPU image never
# imports the web stack that `fireside admin` needs, and `fireside --help` imports none of them.
LAZY_COMMANDS: dict[str, tuple[str, str, str]] = {
    "data": ("fireside.data.cli", "add_data_parser", "gather a corpus and prepare token shards"),
    "knowledge": (
        "fireside.tools.cli",
        "add_knowledge_parser",
        "the local knowledge index the `search` tool reads",
    ),
    "train": ("fireside.train.cli", "add_train_parser", "train a tokenizer or a model"),
    "eval": ("fireside.eval.cli", "add_eval_parser", "evaluate a model and write its report card"),
    "export": (
        "fireside.model.cli",
        "add_export_parser",
        "write a model as a GGUF file llama.cpp loads",
    ),
    "quantize": (
        "fireside.model.cli",
        "add_quantize_parser",
        "write a model's weights quantized (int8, int4) as GGUF",
    ),
    "admin": (
        "fireside.app.cli",
        "add_admin_parser",
        "administer the chat app: accounts, feedback, model versions",
    ),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; with `command`, only that lazy command's module is imported (the others
    are listed by name and help alone)."""
    parser = argparse.ArgumentParser(prog="fireside", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_serve_parser(sub)
    _add_worker_parser(sub)
    _add_chat_parser(sub)
    _add_merge_parser(sub)
    for name, (module, add, help_text) in LAZY_COMMANDS.items():
        if name == command:
            getattr(importlib.import_module(module), add)(sub)
        else:
            sub.add_parser(name, help=help_text, add_help=False)
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
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv[0] if argv else None)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except FiresideError as e:
        print(f"fireside: error: {e}", file=sys.stderr)
        return 2


def entry() -> None:
    """The `fireside` console script: commands that decode run under jemalloc where the
    machine has it (`fireside.allocator`); tests call `main` and stay in their process."""
    if len(sys.argv) > 1 and sys.argv[1] in ("serve", "worker", "chat"):
        from fireside.allocator import reexec_with_jemalloc

        reexec_with_jemalloc()
    sys.exit(main())


if __name__ == "__main__":
    entry()
