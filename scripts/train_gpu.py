"""Train a recipe's model stages on a GPU machine within a wall-clock budget.

    fireside train recipe gpu-small --work runs/gpu --data-only     # here: corpus → shards
    (copy runs/gpu's tokenizer/, data/, sft.jsonl and markers to the GPU machine)
    python scripts/train_gpu.py --work runs/gpu --out model-out \\
        --pretrain-seconds 240 --sft-seconds 150                     # there

A rented GPU is paid by the minute and a lease can end at a fixed time, so the step counts come
from the machine rather than the recipe: a few probe steps of each stage measure the median step
time, and the run takes as many steps as fit the budget (the learning-rate schedule is planned
for exactly that many). The recipe's model settings (depth, sequence length, batch) are kept.
After pretraining, the base model is exported in bf16 to OUT/base; after SFT, the chat model
to OUT/model (and OUT/base is removed), so a run cut short still leaves the last finished stage.
`--pack MiB` also writes each exported model as a tar split into pieces of at most that size,
for transports that cap a file's size.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fireside.train.recipe import RECIPES, export, pretrain_argv, sft_argv


def fireside(*argv: str) -> None:
    """`fireside train ...` as a person would type it: the command line imports only the
    command it runs, so a GPU box needs torch and friends, not the web stack."""
    print("$ fireside " + " ".join(argv), flush=True)
    subprocess.run([sys.executable, "-m", "fireside.cli", *argv], check=True)


def median_step_seconds(run_dir: Path, skip: int = 3) -> float:
    """The median `step_s` in a run's metrics.jsonl after the first `skip` steps (kernel
    selection and allocator warm-up make the first steps slow)."""
    steps = []
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if "step_s" in record and record.get("step", 0) > skip:
            steps.append(float(record["step_s"]))
    if not steps:
        raise SystemExit(f"{run_dir}: the probe logged no step times")
    return statistics.median(steps)


def on(device: str, steps: int) -> dict[str, Any]:
    """A run on the GPU box: checkpointed once, at its end (writing optimizer state costs more
    than the steps between saves), one checkpoint kept."""
    return {"device": device, "save_every": 10 * steps, "keep_last": 1}


def steps_within(seconds: float, probe: Path, most: int) -> int:
    step_s = median_step_seconds(probe)
    steps = max(1, min(most, int(seconds / step_s)))
    print(
        f"{probe.name}: {step_s * 1000:.1f} ms/step → {steps} steps in {seconds:.0f} s", flush=True
    )
    return steps


def pack(model: Path, out: Path, piece_mib: int) -> None:
    archive = out / f"{model.name}.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(model, arcname=model.name)
    size = piece_mib * 2**20
    with archive.open("rb") as fh:
        for i, chunk in enumerate(iter(lambda: fh.read(size), b"")):
            (out / f"{model.name}.tar.{i:02d}").write_bytes(chunk)
    archive.unlink()


def deliver(
    run: Path,
    name: str,
    out: Path,
    piece_mib: int | None,
    *,
    tools: bool,
    loss_plot: Path | None = None,
) -> Path:
    """Export `run` in bf16 as OUT/name, or (with piece_mib) as OUT/name.tar.NN pieces alone."""
    if not piece_mib:
        return export(run, out / name, loss_plot=loss_plot, tools=tools)
    model = export(run, run.parent / name, loss_plot=loss_plot, tools=tools)
    pack(model, out, piece_mib)
    return out / f"{name}.tar.00"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--recipe", default="gpu-small", choices=sorted(RECIPES))
    p.add_argument("--work", type=Path, required=True, help="a --data-only work directory")
    p.add_argument("--out", type=Path, required=True, help="where the exported models go")
    p.add_argument("--pretrain-seconds", type=float, required=True)
    p.add_argument("--sft-seconds", type=float, required=True, help="0: stop after pretraining")
    p.add_argument(
        "--sft-max-epochs",
        type=float,
        default=4.0,
        help="at most this many passes over the conversations, however fast the GPU (4)",
    )
    p.add_argument("--pack", type=int, metavar="MiB", help="also write split tars of the models")
    p.add_argument("--device", default="cuda", help="cuda (cpu only to try the script out)")
    args = p.parse_args()
    r, work, out, dev = RECIPES[args.recipe], args.work, args.out, args.device
    out.mkdir(parents=True, exist_ok=True)
    runs = work / "gpu-runs"
    started = time.monotonic()

    fireside(
        *pretrain_argv(r, work, runs / "probe-pretrain", steps=12, eval_every=0, **on(dev, 12))
    )
    steps = steps_within(args.pretrain_seconds, runs / "probe-pretrain", most=10**9)
    pretrained = runs / "pretrain"
    fireside(
        *pretrain_argv(
            r,
            work,
            pretrained,
            steps=steps,
            eval_every=max(1, steps // 8),
            eval_tokens=2**20,
            **on(dev, steps),
        )
    )
    shutil.copy(pretrained / "metrics.jsonl", out / "pretrain-metrics.jsonl")
    deliver(pretrained, "base", out, args.pack, tools=False)
    print(f"pretrained {steps} steps; {time.monotonic() - started:.0f} s so far", flush=True)
    summary = {"recipe": args.recipe, "pretrain_steps": steps}
    if args.sft_seconds <= 0:  # the base model alone (to measure it, or to fine-tune elsewhere)
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        return 0

    fireside(*sft_argv(r, work, pretrained, runs / "probe-sft", steps=10, **on(dev, 10)))
    conversations = sum(1 for line in (work / "sft.jsonl").open() if line.strip())
    most = max(1, int(args.sft_max_epochs * conversations / r.sft_batch))
    sft_steps = steps_within(args.sft_seconds, runs / "probe-sft", most)
    tuned = runs / "sft"
    fireside(*sft_argv(r, work, pretrained, tuned, steps=sft_steps, **on(dev, sft_steps)))
    shutil.copy(tuned / "metrics.jsonl", out / "sft-metrics.jsonl")
    shutil.rmtree(out / "base", ignore_errors=True)  # the chat model supersedes it
    for piece in out.glob("base.tar.*"):
        piece.unlink()
    deliver(tuned, "model", out, args.pack, tools=True, loss_plot=pretrained / "loss.png")
    summary |= {"sft_steps": sft_steps, "seconds": round(time.monotonic() - started)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
