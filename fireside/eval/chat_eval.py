"""A small chat eval: questions with one checkable answer, asked through the chat template.

It is a smoke test of instruction following, not a benchmark: does the fine-tuned model answer
in the chat format, stop at its end token, and get easy facts and sums right?
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass

from fireside.eval.generate import generate_all
from fireside.model.pretrained import Pretrained


@dataclass(frozen=True)
class ChatTask:
    category: str
    question: str
    answer: str


def _arithmetic() -> list[ChatTask]:
    pairs = [(2, 3), (7, 5), (12, 9), (20, 22), (31, 14), (8, 8)]
    tasks = [ChatTask("arithmetic", f"What is {a} + {b}?", str(a + b)) for a, b in pairs]
    tasks += [ChatTask("arithmetic", f"What is {a} times {b}?", str(a * b)) for a, b in pairs[:4]]
    return tasks


TASKS: tuple[ChatTask, ...] = (
    *_arithmetic(),
    ChatTask("facts", "What is the capital of France?", "Paris"),
    ChatTask("facts", "What is the capital of Japan?", "Tokyo"),
    ChatTask("facts", "What is the capital of Italy?", "Rome"),
    ChatTask("facts", "How many days are there in a week?", "7"),
    ChatTask("facts", "What colour is the sky on a clear day?", "blue"),
    ChatTask("facts", "What is the chemical symbol for water?", "H2O"),
    ChatTask("facts", "Which planet do we live on?", "Earth"),
    ChatTask("language", "What is the opposite of hot?", "cold"),
    ChatTask("language", "What is the plural of mouse?", "mice"),
    ChatTask("language", "Spell the word 'cat' backwards.", "tac"),
    ChatTask("code", "In Python, what keyword defines a function?", "def"),
    ChatTask("code", "What does len([1, 2, 3]) return in Python?", "3"),
)


def is_correct(task: ChatTask, reply: str) -> bool:
    """Arithmetic: the first number in the reply; otherwise: the answer as a whole word."""
    if task.category == "arithmetic":
        numbers = re.findall(r"-?\d+", reply)
        return bool(numbers) and numbers[0] == task.answer
    return re.search(rf"(?<!\w){re.escape(task.answer)}(?!\w)", reply, re.IGNORECASE) is not None


@dataclass
class ChatAnswer:
    task: ChatTask
    reply: str
    correct: bool


@dataclass
class ChatEvalResult:
    accuracy: float
    by_category: dict[str, float]
    answers: list[ChatAnswer]


def run_chat_eval(
    bundle: Pretrained, tasks: tuple[ChatTask, ...] = TASKS, max_new_tokens: int = 32
) -> ChatEvalResult:
    prompts = [
        bundle.tokenizer.render_chat(
            [{"role": "user", "content": task.question}], add_generation_prompt=True
        ).ids
        for task in tasks
    ]
    replies = generate_all(bundle, prompts, max_new_tokens)
    answers = [
        ChatAnswer(task, reply or "", is_correct(task, reply or ""))
        for task, reply in zip(tasks, replies, strict=True)
    ]
    groups: dict[str, list[bool]] = defaultdict(list)
    for a in answers:
        groups[a.task.category].append(a.correct)
    return ChatEvalResult(
        accuracy=sum(a.correct for a in answers) / max(1, len(answers)),
        by_category={k: sum(v) / len(v) for k, v in groups.items()},
        answers=answers,
    )
