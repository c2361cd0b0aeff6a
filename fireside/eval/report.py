"""The report card: markdown with tables and plots, written into the run directory.

Inputs are whatever exists: the run's metrics JSONL (loss curves), and the results of
`fireside eval` (bits per byte, HumanEval, chat). `eval.json` keeps the same numbers for
machines; `report.md` is for people.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fireside.eval.bpb import BPBResult, TextBPB
from fireside.eval.chat_eval import ChatEvalResult
from fireside.eval.conversation_eval import GROUPS, ConversationEvalResult
from fireside.eval.humaneval import HumanEvalResult
from fireside.eval.programs_eval import ProgramEvalResult
from fireside.eval.special_tokens import SpecialTokenCount
from fireside.eval.tool_eval import ToolEvalResult
from fireside.model.checkpoint import write_json
from fireside.model.config import ModelConfig

METRICS_FILES = ("metrics.jsonl",)
TOOL_ROWS = {
    "arithmetic": "arithmetic through the calculator (held out)",
    "lookup": "look-ups through search (held out)",
    "honesty": "says it does not know",
    "identity": "identity",
}

CONVERSATION_ROWS = {
    "small_talk": "conversation: small talk (held out)",
    "world": "conversation: says it does not know world facts",
    "answerable": "conversation: how-do-I and what-is from the index",
    "near_miss": "conversation: near-miss names told apart",
}


@dataclass
class EvalResults:
    bpb: BPBResult | None = None
    texts: list[TextBPB] = field(default_factory=list)
    humaneval: HumanEvalResult | None = None
    chat: ChatEvalResult | None = None
    tools: ToolEvalResult | None = None
    conversation: ConversationEvalResult | None = None
    programs: ProgramEvalResult | None = None
    # Per eval, how many answers hold a special token's text (every eval should say 0).
    special_tokens: dict[str, SpecialTokenCount] = field(default_factory=dict)
    overlap: str | None = None  # `fireside data overlap`'s markdown table


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """The run's logged metrics; unreadable lines are skipped (a killed run may leave half a line)."""
    rows: list[dict[str, Any]] = []
    for name in METRICS_FILES:
        path = run_dir / name
        if not path.is_file():
            continue
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict) and isinstance(row.get("step"), int | float):
                rows.append(row)
    return rows


def run_stage(run_dir: Path) -> tuple[str, str] | None:
    """(task, starting model) from the newest checkpoint's fingerprint, for SFT and DPO runs."""
    checkpoints = sorted((run_dir / "checkpoints").glob("step-*"))
    if not checkpoints:
        return None
    try:
        meta = json.loads((checkpoints[-1] / "meta.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    fp = meta.get("fingerprint", {})
    if "task" not in fp or "base_model" not in fp:
        return None
    return str(fp["task"]), str(fp["base_model"])


def loss_series(rows: list[dict[str, Any]]) -> dict[str, list[tuple[float, float]]]:
    """Every numeric metric whose name mentions loss or bpb, as (step, value) points."""
    series: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for row in rows:
        for key, value in row.items():
            if key == "step" or not isinstance(value, int | float) or isinstance(value, bool):
                continue
            if ("loss" in key or "bpb" in key) and math.isfinite(value):
                series[key].append((float(row["step"]), float(value)))
    return dict(series)


def plot_losses(series: dict[str, list[tuple[float, float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only; no display on a training box
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, points in sorted(series.items()):
        xs, ys = zip(*points, strict=True)
        ax.plot(xs, ys, label=name, marker="." if len(points) < 30 else None)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_chat(chat: ChatEvalResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted(chat.by_category)
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.bar(names, [100 * chat.by_category[n] for n in names], color="#c8553d")
    ax.set_ylim(0, 100)
    ax.set_ylabel("accuracy (%)")
    ax.set_title("chat eval by category")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _cell(text: str, width: int = 60) -> str:
    text = text.replace("|", "\\|").replace("\n", "⏎")
    return text if len(text) <= width else text[: width - 1] + "…"


def write_report(run_dir: Path, model_dir: Path, config: ModelConfig, results: EvalResults) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    lines = [
        f"# Report card: {model_dir.resolve().name}",
        "",
        f"Generated {datetime.now(UTC):%Y-%m-%d %H:%M UTC} from `{model_dir}`.",
        "",
        "## Model",
        "",
        "| | |",
        "|---|---|",
        f"| architecture | {config.architecture} |",
        f"| parameters | {config.num_parameters() / 1e6:.2f} M |",
        f"| layers x width | {config.num_hidden_layers} x {config.hidden_size} |",
        f"| heads (kv) | {config.num_attention_heads} ({config.num_key_value_heads}) |",
        f"| vocabulary | {config.vocab_size} |",
        f"| context | {config.max_position_embeddings} |",
    ]
    stage = run_stage(model_dir)
    if stage:
        lines.append(f"| stage | {stage[0]}, started from `{stage[1]}` |")
    lines.append("")

    series = loss_series(read_metrics(run_dir))
    if series:
        plot_losses(series, run_dir / "loss_curve.png")
        lines += ["## Training", "", "| metric | first | last | points |", "|---|---|---|---|"]
        for name, points in sorted(series.items()):
            lines.append(f"| {name} | {points[0][1]:.4f} | {points[-1][1]:.4f} | {len(points)} |")
        lines += ["", "![loss curve](loss_curve.png)", ""]

    lines += ["## Evaluation", "", "| eval | score | detail |", "|---|---|---|"]
    if results.bpb:
        b = results.bpb
        lines.append(
            f"| validation bits per byte | {b.bits_per_byte:.4f} | "
            f"{b.tokens} tokens, {b.bytes} bytes, {b.documents} documents |"
        )
    for t in results.texts:
        verdict = "beats" if t.model.bits_per_byte < t.xz_bits_per_byte else "does not beat"
        lines.append(
            f"| bits per byte, {_cell(Path(t.path).name)} | {t.model.bits_per_byte:.4f} | "
            f"xz -9e: {t.xz_bits_per_byte:.4f} ({verdict} xz); {t.model.bytes} bytes |"
        )
    if results.humaneval:
        h = results.humaneval
        n_pass = sum(p.passed for p in h.problems)
        lines.append(
            f"| HumanEval pass@1 | {100 * h.pass_at_1:.1f}% | {n_pass}/{len(h.problems)} "
            f"problems, greedy, {h.mode} |"
        )
    if results.chat:
        c = results.chat
        n_ok = sum(a.correct for a in c.answers)
        lines.append(f"| chat eval | {100 * c.accuracy:.1f}% | {n_ok}/{len(c.answers)} correct |")
    if results.tools:
        for category, what in TOOL_ROWS.items():
            right, n = results.tools.score(category)
            if n:
                lines.append(f"| {what} | {100 * right / n:.1f}% | {right}/{n} right |")
    if results.conversation:
        for group in GROUPS:
            right, n = results.conversation.score(group)
            if n:
                what = CONVERSATION_ROWS[group]
                lines.append(f"| {what} | {100 * right / n:.1f}% | {right}/{n} right |")
    if results.programs:
        right, n = results.programs.score()
        lines.append(
            f"| functions written and tested (held out) | {100 * right / max(n, 1):.1f}% | "
            f"{right}/{n} pass their hidden tests |"
        )
    lines.append("")
    if results.conversation:
        lines += conversation_table(results.conversation)
    if results.special_tokens:
        lines += ["### Special-token text in answers", ""]
        lines += ["| eval | answers holding any | first found |", "|---|---|---|"]
        for name, count in results.special_tokens.items():
            lines.append(f"| {name} | {count} | {_cell(count.example or '')} |")
        lines.append("")
    if results.overlap:
        lines += ["### Eval sets' overlap with training", "", results.overlap.rstrip(), ""]
    if results.tools:
        lines += ["## Tool skills, every answer", "", "| question | expected | answer | tools | |"]
        lines.append("|---|---|---|---|---|")
        for ans in results.tools.answers:
            mark = "✓" if ans.correct else "✗"
            lines.append(
                f"| {_cell(ans.question)} | {_cell(ans.expected)} | {_cell(ans.answer)} | "
                f"{', '.join(ans.tools_called)} | {mark} |"
            )
        lines.append("")

    if results.programs:
        lines += ["## Functions, every answer", "", "| request | answer | tools | outcome |"]
        lines.append("|---|---|---|---|")
        for answer in results.programs.answers:
            lines.append(
                f"| {_cell(answer.request)} | {_cell(answer.answer)} | "
                f"{', '.join(answer.tools_called)} | {answer.status} |"
            )
        lines.append("")

    if results.humaneval:
        statuses: dict[str, int] = defaultdict(int)
        for p in results.humaneval.problems:
            statuses[p.status] += 1
        lines += ["### HumanEval", "", "| outcome | problems |", "|---|---|"]
        lines += [f"| {k} | {v} |" for k, v in sorted(statuses.items())]
        lines += ["", "| task | outcome | completion (start) |", "|---|---|---|"]
        for p in results.humaneval.problems:
            lines.append(f"| {p.task_id} | {p.status} | `{_cell(p.completion.strip(), 50)}` |")
        lines.append("")

    if results.chat:
        plot_chat(results.chat, run_dir / "chat_eval.png")
        lines += ["### Chat eval", "", "| category | accuracy |", "|---|---|"]
        for name, acc in sorted(results.chat.by_category.items()):
            lines.append(f"| {name} | {100 * acc:.0f}% |")
        lines += ["", "![chat eval](chat_eval.png)", ""]
        lines += ["| question | expected | reply | |", "|---|---|---|---|"]
        for a in results.chat.answers:
            mark = "✓" if a.correct else "✗"
            lines.append(
                f"| {_cell(a.task.question)} | {a.task.answer} | {_cell(a.reply)} | {mark} |"
            )
        lines.append("")

    write_json(
        run_dir / "eval.json",
        {
            "model": str(model_dir),
            "bpb": asdict(results.bpb) if results.bpb else None,
            "texts": [asdict(t) for t in results.texts],
            "humaneval": asdict(results.humaneval) if results.humaneval else None,
            "chat": asdict(results.chat) if results.chat else None,
            "tools": asdict(results.tools) if results.tools else None,
            "conversation": asdict(results.conversation) if results.conversation else None,
            "programs": asdict(results.programs) if results.programs else None,
            "special_tokens": {k: asdict(v) for k, v in results.special_tokens.items()},
            "overlap": results.overlap,
        },
    )
    path = run_dir / "report.md"
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines), encoding="utf-8")
    tmp.replace(path)
    return path


def conversation_table(result: ConversationEvalResult) -> list[str]:
    """Every prompt, its rule and the answer, for the model card."""
    verdict = "passes" if result.passed() else "does not pass"
    lines = [
        "## Conversations, every answer",
        "",
        f"The model {verdict} (85% of small talk and 85% of the rest).",
        "",
        "| group | prompt | rule | answer | tools | |",
    ]
    lines.append("|---|---|---|---|---|---|")
    for a in result.answers:
        mark = "✓" if a.correct else "✗"
        lines.append(
            f"| {a.group} | {_cell(a.prompt)} | {_cell(a.rule)} | {_cell(a.answer)} | "
            f"{', '.join(a.tools_called)} | {mark} |"
        )
    return [*lines, ""]
