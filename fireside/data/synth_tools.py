"""Chat fine-tuning conversations that teach a small model to use its tools, right by
construction: every tool result in them is what the real tool returned, and every final answer
is copied from that result.

A model of a few million parameters cannot store many facts, but it can learn to ask a tool
and to copy what comes back. So the data teaches four habits, mixed from the first step:
calculate through `calculator`, look things up through `search` and answer from the snippet,
check a program by running it with `python`, and say "I don't know" when search finds nothing
about what was asked. Identity and small talk need no tool.
"""

from __future__ import annotations

import itertools
import json
import random
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from fireside.data.problems import held_out_problems, problem

Conversation = dict[str, Any]
RunTool = Callable[[str, dict[str, Any]], str]  # (tool name, arguments) -> what the model sees

IDENTITY_QUESTIONS = [
    "Who are you?",
    "What are you?",
    "What is your name?",
    "Introduce yourself.",
    "Are you ChatGPT?",
    "Tell me about yourself.",
    "Who made you?",
    "What can you do?",
    "How big are you?",
    "Are you a person?",
    "What should I call you?",
    "Hi! Who am I talking to?",
]
IDENTITY_ANSWERS = [
    "I am Fireside, a small language model made by the Fireside pipeline and trained on the "
    "text and code that came with this computer. I know few facts by heart, so I use tools: a "
    "calculator, a Python sandbox and a search over this machine's documentation.",
    "I'm Fireside, a small assistant trained from scratch by the Fireside pipeline on a laptop's "
    "own documentation and code. I am small, so I calculate with a calculator, run code in a "
    "sandbox and look things up in the local documentation rather than guess.",
]
IDK = [
    "I don't know. I searched this computer's documentation for {q} and found nothing about it.",
    "I don't know: the local documentation has nothing about {q}.",
    "Sorry, I don't know. My search found nothing about {q}.",
]
SMALL_TALK_FILES = ("greetings.yml", "conversations.yml", "emotion.yml", "humor.yml")
# Small talk must not contradict who the model is, nor teach it to state facts it cannot check.
_OFF_LIMITS = re.compile(r"\b(robot|bot|ai|computer|human|name|born|age|old|made|program)\b", re.I)


@dataclass(frozen=True)
class Entity:
    """Something the search tool knows: a command or a Python function, by the name a user
    would ask about, and how a question should name it."""

    name: str
    kind: str  # "command" | "function"


COMMAND_QUESTIONS = [
    "What does the `{n}` command do?",
    "What is `{n}`?",
    "What is the {n} command used for?",
    "Explain the `{n}` command.",
    "what does {n} do",
    "Tell me what `{n}` does.",
]
FUNCTION_QUESTIONS = [
    "What does `{n}` do?",
    "What does the Python function `{n}` do?",
    "Explain `{n}` in Python.",
    "What is {n} for?",
    "What does {n}() do in Python?",
]


def _user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def _assistant(text: str) -> dict[str, Any]:
    return {"role": "assistant", "content": text}


def _call(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"type": "function", "function": {"name": name, "arguments": arguments}}],
    }


def _tool(content: str) -> dict[str, Any]:
    return {"role": "tool", "content": content}


def calculator(
    rng: random.Random, run: RunTool, n: int, exclude: set[str]
) -> Iterator[Conversation]:
    made = 0
    while made < n:
        p = problem(rng)
        if p.expression in exclude:
            continue
        result = run("calculator", {"expression": p.expression})
        if result.startswith("error"):
            continue  # a division by zero and the like: not what this skill is about
        made += 1
        yield {
            "messages": [
                _user(p.question),
                _call("calculator", {"expression": p.expression}),
                _tool(result),
                _assistant(f"{p.expression} = {result}"),
            ]
        }


def first_hit_about(result: str, name: str) -> str | None:
    """The first line of a search result that is about `name`, without its `title: ` prefix."""
    for line in result.splitlines():
        title, sep, snippet = line.partition(": ")
        if sep and snippet and re.search(rf"(^|[\s.(]){re.escape(name)}\b", title):
            return snippet.strip()
    return None


def lookups(rng: random.Random, run: RunTool, entities: Sequence[Entity]) -> Iterator[Conversation]:
    for entity in entities:
        result = run("search", {"query": entity.name})
        snippet = first_hit_about(result, entity.name)
        if snippet is None:
            continue  # the index ranks another page first: not a clean lesson in copying
        questions = COMMAND_QUESTIONS if entity.kind == "command" else FUNCTION_QUESTIONS
        yield {
            "messages": [
                _user(rng.choice(questions).format(n=entity.name)),
                _call("search", {"query": entity.name}),
                _tool(result),
                _assistant(f"`{entity.name}`: {snippet}"),
            ]
        }


_SYLLABLES = ["bra", "zo", "quim", "fle", "tor", "vax", "nix", "plu", "gri", "mo", "sku", "yel"]


def made_up_name(rng: random.Random) -> str:
    name = "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 3)))
    return name if rng.random() < 0.6 else f"{rng.choice(['os', 'json', 're', 'math'])}.{name}"


def unknowns(rng: random.Random, run: RunTool, n: int, exclude: set[str]) -> Iterator[Conversation]:
    """Questions whose answer search cannot find: the model must say it does not know."""
    made = 0
    while made < n:
        name = made_up_name(rng)
        if name in exclude:
            continue
        result = run("search", {"query": name})
        if first_hit_about(result, name) is not None:
            continue
        kind = "command" if "." not in name else "function"
        questions = COMMAND_QUESTIONS if kind == "command" else FUNCTION_QUESTIONS
        made += 1
        yield {
            "messages": [
                _user(rng.choice(questions).format(n=name)),
                _call("search", {"query": name}),
                _tool(result),
                _assistant(rng.choice(IDK).format(q=f"`{name}`")),
            ]
        }


# Small programs whose output a user wants to know; (task, code) templates over a number.
PROGRAMS: list[tuple[str, str]] = [
    ("the sum of the integers from 1 to {n}", "print(sum(range(1, {n} + 1)))"),
    ("the factorial of {m}", "import math\nprint(math.factorial({m}))"),
    (
        "how many primes are below {n}",
        "print(sum(all(k % d for d in range(2, int(k ** 0.5) + 1)) for k in range(2, {n})))",
    ),
    (
        "the {m}th Fibonacci number",
        "a, b = 0, 1\nfor _ in range({m}):\n    a, b = b, a + b\nprint(a)",
    ),
    ("the sum of the squares from 1 to {n}", "print(sum(k * k for k in range(1, {n} + 1)))"),
    ("the number of digits in 2 to the power {n}", "print(len(str(2 ** {n})))"),
    ("{n} in binary", "print(bin({n})[2:])"),
    ("the sum of the digits of {n}", "print(sum(int(c) for c in str({n})))"),
    (
        "the largest divisor of {n} smaller than {n}",
        "print(max(d for d in range(1, {n}) if {n} % d == 0))",
    ),
    ("'{w}' reversed", "print('{w}'[::-1])"),
    ("how many vowels '{w}' has", "print(sum(c in 'aeiou' for c in '{w}'))"),
    ("'{w}' in upper case", "print('{w}'.upper())"),
]
PROGRAM_ASKS = [
    "Write a Python program that prints {t}, and tell me what it prints.",
    "Use Python to find {t}.",
    "Run some Python to compute {t}.",
    "What is {t}? Check it with Python.",
]
_WORDS = ["fireside", "python", "laptop", "window", "library", "engine", "garden", "kitchen"]


def programs(rng: random.Random, run: RunTool, n: int) -> Iterator[Conversation]:
    made = 0
    while made < n:
        task, code = rng.choice(PROGRAMS)
        values = {"n": rng.randint(10, 500), "m": rng.randint(3, 30), "w": rng.choice(_WORDS)}
        task, code = task.format(**values), code.format(**values)
        result = run("python", {"code": code})
        output = python_stdout(result)
        if output is None:
            continue
        made += 1
        yield {
            "messages": [
                _user(rng.choice(PROGRAM_ASKS).format(t=task)),
                _call("python", {"code": code}),
                _tool(result),
                _assistant(f"```python\n{code}\n```\nIt prints {output}."),
            ]
        }


def python_stdout(result: str) -> str | None:
    """What a successful run printed, from the python tool's result, or None."""
    try:
        parsed = json.loads(result)
    except json.JSONDecodeError:
        return None
    if not isinstance(parsed, dict) or parsed.get("exit_code") != 0:
        return None
    out = str(parsed.get("stdout", "")).strip()
    return out or None


def identity(rng: random.Random, n: int) -> Iterator[Conversation]:
    for _ in range(n):
        yield {
            "messages": [
                _user(rng.choice(IDENTITY_QUESTIONS)),
                _assistant(rng.choice(IDENTITY_ANSWERS)),
            ]
        }


def small_talk(pairs: Sequence[tuple[str, str]]) -> Iterator[Conversation]:
    for said, answer in pairs:
        if not (_OFF_LIMITS.search(said) or _OFF_LIMITS.search(answer)):
            yield {"messages": [_user(said), _assistant(answer)]}


def chatterbot_pairs() -> list[tuple[str, str]]:
    """(utterance, reply) pairs from chatterbot-corpus's English small-talk files (BSD)."""
    import importlib.resources

    import yaml

    data = importlib.resources.files("chatterbot_corpus") / "data" / "english"
    pairs = []
    for name in SMALL_TALK_FILES:
        doc = yaml.safe_load((data / name).read_text(encoding="utf-8"))
        for convo in doc.get("conversations", []):
            texts = [str(t).strip() for t in convo]
            pairs += [(a, b) for a, b in itertools.pairwise(texts) if a and b]
    return pairs


def mixture(
    rng: random.Random,
    run: RunTool,
    entities: Sequence[Entity],
    counts: Mapping[str, int],
    small_talk_pairs: Sequence[tuple[str, str]] = (),
) -> dict[str, list[Conversation]]:
    """Every kind of conversation, `counts[kind]` of each (lookups: one per entity, repeated
    `counts['lookup_passes']` times with new phrasings). Held-out problems never appear."""
    held = {p.expression for p in held_out_problems()}
    kinds: dict[str, list[Conversation]] = {
        "calculator": list(calculator(rng, run, counts["calculator"], held)),
        "lookup": [
            c for _ in range(counts.get("lookup_passes", 1)) for c in lookups(rng, run, entities)
        ],
        "unknown": list(unknowns(rng, run, counts["unknown"], set())),
        "python": list(programs(rng, run, counts["python"])),
        "identity": list(identity(rng, counts["identity"])),
        "small_talk": list(small_talk(small_talk_pairs)) * counts.get("small_talk_passes", 1),
    }
    return kinds
