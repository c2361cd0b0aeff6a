"""`fireside export --gguf` and `fireside quantize`: a model written as one GGUF file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gguf import GGMLQuantizationType as QType

from fireside.model.gguf_export import EXPORT_DTYPES, QUANTIZE_DTYPES

MODEL_HELP = "model directory (HF format) or GGUF file"


def add_export_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    export = sub.add_parser(
        "export",
        help="write a model in another format (GGUF, for llama.cpp and Ollama)",
        description="Write MODEL as one GGUF file that llama.cpp, Ollama and Fireside load: "
        "llama.cpp's tensor names and metadata, the tokenizer and chat template inside.",
    )
    export.add_argument("--gguf", required=True, metavar="OUT.gguf", help="the file to write")
    export.add_argument("model", metavar="MODEL", help=MODEL_HELP)
    export.add_argument(
        "--dtype",
        choices=EXPORT_DTYPES,
        default="f32",
        help="the matrices' type (vectors stay f32); q4_k falls back to q4_0 for rows that are "
        "not a multiple of 256 (default f32)",
    )
    export.set_defaults(func=_export)


def add_quantize_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    quantize = sub.add_parser(
        "quantize",
        help="write a model's weights at 8 or 4 bits, as a GGUF file",
        description="Write MODEL as a quantized GGUF file (what fireside serve --model, "
        "llama.cpp and Ollama load): int8 is Q8_0; int4 is Q4_K (Q4_0 where rows are not "
        "a multiple of 256), the embeddings and output head at higher precision.",
    )
    quantize.add_argument("model", metavar="MODEL", help=MODEL_HELP)
    quantize.add_argument("output", metavar="OUT", help="the .gguf file to write")
    quantize.add_argument("--dtype", choices=QUANTIZE_DTYPES, required=True)
    quantize.set_defaults(func=_quantize)


def _export(args: argparse.Namespace) -> int:
    return _write(args.model, Path(args.gguf), args.dtype)


def _quantize(args: argparse.Namespace) -> int:
    return _write(args.model, Path(args.output), args.dtype)


def _write(model: str, out: Path, dtype: str) -> int:
    from fireside.model.gguf_export import write_gguf
    from fireside.model.pretrained import load_pretrained

    bundle = load_pretrained(model, device="cpu")
    counts = write_gguf(bundle, out, dtype)
    kinds = ", ".join(f"{n} {QType(t).name}" for t, n in sorted(counts.items()))
    size = out.stat().st_size / 2**20
    print(f"wrote {out} ({size:.1f} MiB; tensors: {kinds})", file=sys.stderr)
    return 0
