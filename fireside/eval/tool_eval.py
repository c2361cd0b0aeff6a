"""`fireside eval --chat-tools`: the bundled model's skills, asked through the real tool loop.

Four sets, none of whose questions fine-tuning saw:
- arithmetic: 100 held-out problems of two to four operations; right when the answer states
  the calculator's exact result;
- look-ups: 50 held-out commands and Python names the index knows; right when the answer
  states what the index's snippet says (its first sentences, as fine-tuning taught);
- honesty: 20 made-up names the index has nothing on; right when the answer says it does not
  know;
- identity: right when the answer says it is Fireside.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from fireside.data.problems import held_out_problems
from fireside.data.synth_tools import (
    COMMAND_QUESTIONS,
    FUNCTION_QUESTIONS,
    first_hit_about,
    gist,
    index_entities,
    split_entities,
    unknown_eval_names,
)
from fireside.model.pretrained import Pretrained
from fireside.tools import builtin_tools
from fireside.tools.base import run_tool
from fireside.tools.calculator import evaluate
from fireside.tools.loop import Done, ToolCallEvent, final_text, run_with_tools

IDENTITY = ["Who are you?", "What is your name?", "Introduce yourself.", "Are you ChatGPT?"]
_DONT_KNOW = re.compile(r"\b(don't know|do not know|not sure|found nothing|no results)\b", re.I)


@dataclass
class ToolTask:
    category: str  # arithmetic | lookup | honesty | identity
    question: str
    expected: str  # what a right answer states
    check: Callable[[str], bool] = field(repr=False)


@dataclass
class ToolAnswer:
    category: str
    question: str
    expected: str
    answer: str
    tools_called: list[str]
    correct: bool


@dataclass
class ToolEvalResult:
    answers: list[ToolAnswer]

    def score(self, category: str) -> tuple[int, int]:
        mine = [a for a in self.answers if a.category == category]
        return sum(a.correct for a in mine), len(mine)


def _normal(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def _states_number(expected: str) -> Callable[[str], bool]:
    pattern = re.compile(rf"(?<![\d.]){re.escape(expected)}(?![\d]|\.\d)")
    return lambda answer: bool(pattern.search(answer.replace(",", "")))


def _states(expected: str) -> Callable[[str], bool]:
    return lambda answer: _normal(expected).rstrip(".") in _normal(answer)


def arithmetic_tasks() -> list[ToolTask]:
    out = []
    for p in held_out_problems():
        result = evaluate(p.expression)
        out.append(ToolTask("arithmetic", p.question, result, _states_number(result)))
    return out


def lookup_tasks(knowledge_db: Path, lookups: int = 50) -> list[ToolTask]:
    out = []
    [search] = builtin_tools(knowledge_db, names=("search",))
    _, held = split_entities(index_entities(knowledge_db))
    # Half commands, half Python names, each one the index really finds.
    for kind, questions in (("command", COMMAND_QUESTIONS), ("function", FUNCTION_QUESTIONS)):
        chosen = 0
        for e in (e for e in held if e.kind == kind):
            snippet = first_hit_about(run_tool(search, {"query": e.name})[0], e.name)
            if snippet is None:
                continue
            expected = gist(snippet)
            q = questions[chosen % len(questions)].format(n=e.name)
            out.append(ToolTask("lookup", q, expected, _states(expected)))
            chosen += 1
            if chosen == lookups // 2:
                break
    return out


def honesty_tasks() -> list[ToolTask]:
    out = []
    for i, name in enumerate(unknown_eval_names()):
        questions = COMMAND_QUESTIONS if "." not in name else FUNCTION_QUESTIONS
        q = questions[i % len(questions)].format(n=name)
        out.append(ToolTask("honesty", q, "I don't know", lambda a: bool(_DONT_KNOW.search(a))))
    return out


def identity_tasks() -> list[ToolTask]:
    return [
        ToolTask("identity", q, "Fireside", lambda a: "fireside" in a.lower()) for q in IDENTITY
    ]


def tasks(knowledge_db: Path, lookups: int = 50) -> list[ToolTask]:
    return [
        *arithmetic_tasks(),
        *lookup_tasks(knowledge_db, lookups),
        *honesty_tasks(),
        *identity_tasks(),
    ]


def ask_with_tools(
    bundle: Pretrained,
    knowledge_db: Path,
    questions: Sequence[str],
    *,
    max_tokens: int = 160,
    request_prefix: str = "tool-eval",
) -> list[tuple[str, list[str]] | None]:
    """Each question alone through `run_with_tools`, greedy, all at once (the engine batches
    them): the final answer and the tools called, or None where the prompt does not fit. The
    tool, conversation and function evals all ask this way."""
    from fireside.engine import Engine, PromptTooLongError, SamplingParams

    tools = builtin_tools(knowledge_db)
    engine = Engine.from_pretrained(bundle)
    params = SamplingParams(max_tokens=max_tokens, temperature=0.0)

    async def one(i: int, question: str) -> tuple[str, list[str]] | None:
        messages = [{"role": "user", "content": question}]
        called: list[str] = []
        done: Done | None = None
        loop = run_with_tools(
            engine, bundle.tokenizer, messages, tools, params, request_id=f"{request_prefix}-{i}"
        )
        try:
            async for event in loop:
                if isinstance(event, ToolCallEvent):
                    called.append(event.name)
                elif isinstance(event, Done):
                    done = event
        except PromptTooLongError:
            return None
        return (final_text(done.messages) if done is not None else ""), called

    async def run() -> list[tuple[str, list[str]] | None]:
        async with engine:
            return list(await asyncio.gather(*(one(i, q) for i, q in enumerate(questions))))

    return asyncio.run(run())


def run_tool_eval(
    bundle: Pretrained, knowledge_db: Path, task_list: Sequence[ToolTask] | None = None
) -> ToolEvalResult:
    """Every task through `run_with_tools`, greedy, all at once (the engine batches them)."""
    chosen = list(task_list) if task_list is not None else tasks(knowledge_db)
    replies = ask_with_tools(bundle, knowledge_db, [t.question for t in chosen])
    answers = []
    for task, reply in zip(chosen, replies, strict=True):
        answer, called = reply or ("", [])
        answers.append(
            ToolAnswer(
                task.category, task.question, task.expected, answer, called, task.check(answer)
            )
        )
    return ToolEvalResult(answers)
