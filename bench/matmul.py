"""Matmul kernels for decode on CPU: the MKL sgemm behind `F.linear` against oneDNN's matmul on
plain and packed weights and numpy's BLAS (what `fireside.model.serving` chooses between).

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

import numpy as np
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
    if kernel == "BLAS":
        # numpy's BLAS (sgemv for one row, sgemm for more), as serving.linear calls it.
        arrays = [w.numpy() for w in weights]
        rows_of = {i: x[0].numpy() for i, x in inputs.items()}

        def blas() -> None:
            for w in arrays:
                x = rows_of[w.shape[1]]
                if rows == 1:
                    np.dot(w, x[0])
                else:
                    np.dot(x, w.T)

        return blas

    def run() -> None:
        for w in weights:
            x = inputs[w.shape[1]]
            if kernel == "F.linear":
                F.linear(x, w)
            else:
                onednn(x, w, None, "none", [], "")

    return run


def timed(name: str, fn: Pass) -> float:
    """Seconds one pass takes. numpy's BLAS runs on its own threads with torch's pool at one
    thread, as a one-row serving step does; its threads spin for ~0.1 s after a call, so the
    next kernel waits them out rather than share the cores with them."""
    threads = torch.get_num_threads()
    if name == "BLAS":
        torch.set_num_threads(1)
    start = time.perf_counter()
    fn()
    elapsed = time.perf_counter() - start
    if name == "BLAS":
        torch.set_num_threads(threads)
        time.sleep(0.3)
    return elapsed


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
    kernels = ["F.linear", "oneDNN", "packed", "BLAS"]
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
            for name, fn in passes.items():
                timed(name, fn)  # warm-up: primitive creation, first touch
            for _ in range(args.repeats):
                for name, fn in passes.items():
                    times[name].append(timed(name, fn))
            base = statistics.median(times["F.linear"])
            for name, ts in times.items():
                t = statistics.median(ts)
                print(
                    f"{rows:4} {name:>9} {t * 1e3:8.2f} {nbytes / t / 1e9:6.1f} {base / t:10.2f}x"
                )


if __name__ == "__main__":
    main()
