"""`fireside data overlap`: how many items of each evaluation set share a 50-character span
with the pretraining text and with the fine-tuning conversations, as a markdown table for the
report card. An eval whose questions (or answers) training saw measures recall, not skill.

The eval sets are a registry of (name, function giving the items), so a new eval adds one
line here. An item is one or more texts (a question and the answer a right reply states);
it shares a span when any of its texts does. Texts are checked apart, so no span is counted
across a question and its answer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from fireside.data.overlap import SPAN, OverlapSummary, SpanIndex, summarize
from fireside.errors import FiresideError

Items = Sequence[Sequence[str]]


class EvalSetUnavailable(FiresideError):
    """An eval set cannot be built here (no knowledge index, a package not installed)."""


@dataclass(frozen=True)
class EvalContext:
    knowledge_db: Path  # the look-up eval asks about what this index holds


def _tool_items(tasks: Sequence[object]) -> Items:
    return [(t.question, t.expected) for t in tasks]  # type: ignore[attr-defined]


def _arithmetic(ctx: EvalContext) -> Items:
    from fireside.eval.tool_eval import arithmetic_tasks

    return _tool_items(arithmetic_tasks())


def _lookups(ctx: EvalContext) -> Items:
    from fireside.eval.tool_eval import lookup_tasks

    if not ctx.knowledge_db.is_file():
        raise EvalSetUnavailable(f"no knowledge index at {ctx.knowledge_db}")
    return _tool_items(lookup_tasks(ctx.knowledge_db))


def _honesty(ctx: EvalContext) -> Items:
    from fireside.eval.tool_eval import honesty_tasks

    # The expected "I don't know" is the answer every honesty item shares; the question is
    # what must be new.
    return [(t.question,) for t in honesty_tasks()]


def _identity(ctx: EvalContext) -> Items:
    from fireside.eval.tool_eval import identity_tasks

    return [(t.question,) for t in identity_tasks()]


def _chat(ctx: EvalContext) -> Items:
    from fireside.eval.chat_eval import TASKS

    return [(t.question, t.answer) for t in TASKS]


def _humaneval_problems() -> list[dict[str, str]]:
    from fireside.eval.humaneval import HumanEvalUnavailable, load_problems

    try:
        return load_problems()
    except HumanEvalUnavailable as e:
        raise EvalSetUnavailable(str(e)) from None


def _humaneval_prompts(ctx: EvalContext) -> Items:
    return [(p["prompt"],) for p in _humaneval_problems()]


def _humaneval_solutions(ctx: EvalContext) -> Items:
    # What a memorised answer would repeat. Apart from the prompts: 50 characters of a
    # solution are often an idiom and its indentation (`for j in range(i + 1, len(l)):`), which
    # any Python corpus holds, and should not be read as the problem leaking.
    return [(p["canonical_solution"],) for p in _humaneval_problems()]


def _conversation(ctx: EvalContext) -> Items:
    from fireside.eval.conversation_eval import tasks

    if not ctx.knowledge_db.is_file():
        raise EvalSetUnavailable(f"no knowledge index at {ctx.knowledge_db}")
    return [(t.prompt,) for t in tasks(ctx.knowledge_db)]


def _programs(ctx: EvalContext) -> Items:
    from fireside.data.program_tasks import held_out_tasks

    return [(t.request,) for t in held_out_tasks()]


EVAL_SETS: dict[str, Callable[[EvalContext], Items]] = {
    "arithmetic (tool eval)": _arithmetic,
    "look-ups (tool eval)": _lookups,
    "honesty (tool eval)": _honesty,
    "identity (tool eval)": _identity,
    "chat eval": _chat,
    "conversation eval (60 prompts)": _conversation,
    "functions (100 held-out requests)": _programs,
    "HumanEval prompts": _humaneval_prompts,
    "HumanEval canonical solutions": _humaneval_solutions,
}


def register_eval_set(name: str, items: Callable[[EvalContext], Items]) -> None:
    """Add an eval set to every overlap report (a new eval module calls this once)."""
    if name in EVAL_SETS:
        raise ValueError(f"eval set {name!r} is already registered")
    EVAL_SETS[name] = items


@dataclass(frozen=True)
class OverlapRow:
    name: str
    items: int
    # One summary per training text (pretraining, SFT); None where it was not given.
    shared: tuple[OverlapSummary | None, ...]
    skipped: str | None = None  # why the set could not be built


def overlap_rows(
    indexes: Sequence[SpanIndex | None],
    ctx: EvalContext,
    sets: dict[str, Callable[[EvalContext], Items]] | None = None,
) -> list[OverlapRow]:
    rows = []
    for name, build in (sets if sets is not None else EVAL_SETS).items():
        try:
            items = build(ctx)
        except EvalSetUnavailable as e:
            rows.append(OverlapRow(name, 0, tuple(None for _ in indexes), skipped=str(e)))
            continue
        shared = tuple(summarize(ix, items) if ix is not None else None for ix in indexes)
        rows.append(OverlapRow(name, len(items), shared))
    return rows


def markdown(rows: Sequence[OverlapRow], columns: Sequence[str]) -> str:
    """The table: per eval set, how many items share a span with each training text."""
    head = " | ".join(f"sharing a {SPAN}-char span with {c}" for c in columns)
    lines = [f"| eval set | items | {head} |", "|---|---|" + "---|" * len(columns)]
    for r in rows:
        if r.skipped:
            cells = " | ".join("—" for _ in columns)
            lines.append(f"| {r.name} | skipped: {r.skipped} | {cells} |")
            continue
        cells = " | ".join(str(s) if s is not None else "not checked" for s in r.shared)
        lines.append(f"| {r.name} | {r.items} | {cells} |")
    return "\n".join(lines) + "\n"
