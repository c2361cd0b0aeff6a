"""Training metrics: one JSON line per record, TensorBoard scalars, and a loss-curve PNG.

On resume the log is cut back to the checkpoint's step, so `metrics.jsonl` always reads as
one uninterrupted run (a killed run's steps past its last checkpoint are trained again).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

METRICS_FILE = "metrics.jsonl"
LOSS_PNG = "loss.png"


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class MetricsLogger:
    """Appends records to RUN_DIR/metrics.jsonl and TensorBoard (RUN_DIR/tensorboard).

    Only the main rank logs; other ranks get a logger whose methods do nothing, so the training
    loop needs no `if rank == 0` around each call.
    """

    def __init__(
        self,
        run_dir: str | Path,
        *,
        resume_step: int = 0,
        enabled: bool = True,
        tensorboard: bool = True,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self._writer: Any = None
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        kept = [r for r in read_metrics(self.run_dir) if r.get("step", 0) <= resume_step]
        self._rewrite(kept)
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            # purge_step hides the killed run's events past the checkpoint in TensorBoard too.
            self._writer = SummaryWriter(
                str(self.run_dir / "tensorboard"),
                purge_step=resume_step + 1 if resume_step else None,
            )

    def _rewrite(self, records: list[dict[str, Any]]) -> None:
        path = self.run_dir / METRICS_FILE
        fd, tmp = tempfile.mkstemp(dir=self.run_dir, prefix=f".{METRICS_FILE}.", suffix=".tmp")
        with os.fdopen(fd, "w") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in records)
        os.replace(tmp, path)

    def log(self, step: int, **values: float | int | str) -> None:
        if not self.enabled:
            return
        record = {"step": step, **values}
        with open(self.run_dir / METRICS_FILE, "a") as fh:
            fh.write(json.dumps(record) + "\n")
        if self._writer is not None:
            for key, value in values.items():
                if isinstance(value, int | float) and not isinstance(value, bool):
                    self._writer.add_scalar(key, value, step)

    def text(self, step: int, tag: str, text: str) -> None:
        """Free text, such as sample generations: TensorBoard and a line in the JSONL."""
        if not self.enabled:
            return
        self.log(step, **{tag: text})
        if self._writer is not None:
            self._writer.add_text(tag, text, step)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self.enabled:
            plot_loss(self.run_dir)


def plot_loss(run_dir: str | Path, out: str | Path | None = None) -> Path | None:
    """Plot train (and validation) loss against step into RUN_DIR/loss.png."""
    records = read_metrics(run_dir)
    train = [(r["step"], r["loss"]) for r in records if "loss" in r]
    val = [(r["step"], r["val_loss"]) for r in records if "val_loss" in r]
    if not train and not val:
        return None
    import matplotlib

    matplotlib.use("Agg")  # no display on a training box
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        ax.plot(*zip(*train, strict=True), label="train", linewidth=1)
    if val:
        ax.plot(*zip(*val, strict=True), label="validation", marker="o", linewidth=1)
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend()
    path = Path(out) if out else Path(run_dir) / LOSS_PNG
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
