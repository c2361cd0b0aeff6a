"""Matmul kernels for decode on CPU: the MKL sgemm behind `F.linear` against oneDNN's matmul,
on plain and packed weights (what `fireside.model.serving` chooses between).

    .venv/bin/python bench/matmul.py            # the projections of bench/engine.py's model

One pass runs every projection of the model once for a batch of M rows, as one decode step
does; the weights together far exceed the caches, so each pass streams them from memory.
Prints the median time of a pass, the bandwidth it reaches, and its speed against F.linear,
with a streaming reduction over as many bytes as the ceiling. All variants alternate within
each repeat, so a busy spell slows them alike.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

Pass = Callable[[], object]


def projection_shapes(args: argparse.Namespace) -> list[tuple[int, int]]:
    """[out, in] of every projection a decode step runs: fused q/k/v, o, fused gate/up and
    down per layer, then the LM head."""
    h, f = args.hidden, args.intermediate
    return [(3 * h, h), (h, h), (2 * f, h), (h, f)] * args.layers + [(args.vocab, h)]


def make_pass(weights: list[Tensor], rows: int, kernel: str) -> Pass:
    inputs = {w.shape[1]: torch.randn(1, rows, w.shape[1]) for w in weights}
    onednn = torch.ops.mkldnn._linear_pointwise
    if kernel == "packed":
        weights = [torch.ops.mkldnn._reorder_linear_weight(w, rows) for w in weights]

    def run() -> None:
        for w in weights:
            x = inputs[w.shape[1]]
            if kernel == "F.linear":
                F.linear(x, w)
            else:
                onednn(x, w, None, "none", [], "")

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--intermediate", type=int, default=2048)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    torch.manual_seed(0)
    weights = [torch.randn(o, i) for o, i in projection_shapes(args)]
    nbytes = sum(w.numel() for w in weights) * 4
    stream = torch.ones(nbytes // 4)
    kernels = ["F.linear", "oneDNN", "packed"]
    print(
        f"{len(weights)} projections, {nbytes / 1e6:.0f} MB fp32, "
        f"{torch.get_num_threads()} threads, medians of {args.repeats}"
    )
    print(f"\n{'rows':>4} {'kernel':>9} {'ms/pass':>8} {'GB/s':>6} {'vs F.linear':>11}")
    with torch.inference_mode():
        for rows in args.rows:
            passes: dict[str, Pass] = {k: make_pass(weights, rows, k) for k in kernels}
            passes["stream"] = stream.sum
            times: dict[str, list[float]] = {k: [] for k in passes}
            for fn in passes.values():
                fn()  # warm-up: primitive creation, first touch
            for _ in range(args.repeats):
                for name, fn in passes.items():
                    start = time.perf_counter()
                    fn()
                    times[name].append(time.perf_counter() - start)
            base = statistics.median(times["F.linear"])
            for name, ts in times.items():
                t = statistics.median(ts)
                print(
                    f"{rows:4} {name:>9} {t * 1e3:8.2f} {nbytes / t / 1e9:6.1f} {base / t:10.2f}x"
                )


if __name__ == "__main__":
    main()
