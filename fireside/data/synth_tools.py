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

import contextlib
import hashlib
import itertools
import json
import random
import re
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fireside.data import synth
from fireside.data.problems import held_out_problems, problem
from fireside.data.synth import Conversation, assistant, user
from fireside.tools.knowledge import NO_RESULTS

RunTool = Callable[[str, dict[str, Any]], str]  # (tool name, arguments) -> what the model sees

IDENTITY_QUESTIONS = [
    *synth.IDENTITY_QUESTIONS,
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
                user(p.question),
                _call("calculator", {"expression": p.expression}),
                _tool(result),
                assistant(f"{p.expression} = {result}"),
            ]
        }


def first_hit_about(result: str, name: str) -> str | None:
    """The first line of a search result that is about `name`, without its `title: ` prefix."""
    for line in result.splitlines():
        title, sep, snippet = line.partition(": ")
        if sep and snippet and re.fullmatch(rf"{re.escape(name)}(\(\w+\))?", title):
            return snippet.strip()
    return None


_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def gist(snippet: str, min_chars: int = 40) -> str:
    """The snippet's first sentences, enough to say what the thing is: the answer a small model
    copies (shorter to copy is likelier copied right)."""
    out = ""
    for sentence in _SENTENCE.split(snippet):
        out = f"{out} {sentence}".strip()
        if len(out) >= min_chars:
            break
    return out


def held_out_entity(name: str) -> bool:
    """One name in fifty is kept out of fine-tuning, for the look-up evaluation."""
    digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") % 50 == 0


# Names a newcomer tries first are always taught, whatever their hash says.
ALWAYS_TAUGHT = frozenset(["tar", "ls", "grep", "cat", "cp", "mv", "rm", "ssh", "git", "python3"])
_MAN_TITLE = re.compile(r"([\w.+-]+)\((1|8)\)")
_PY_TITLE = re.compile(r"[a-z_][\w]*(\.[A-Za-z_]\w*)+")


def index_entities(knowledge_db: str | Path) -> list[Entity]:
    """Commands (man sections 1 and 8) and dotted Python names the index holds, sorted."""
    with contextlib.closing(sqlite3.connect(f"file:{knowledge_db}?mode=ro", uri=True)) as db:
        titles = [t for (t,) in db.execute("SELECT title FROM entries")]
    found: dict[str, Entity] = {}
    for title in titles:
        if title.startswith("gcloud"):
            continue  # thousands of generated cloud-CLI pages would drown the commands people use
        if m := _MAN_TITLE.fullmatch(title):
            found.setdefault(m.group(1), Entity(m.group(1), "command"))
        elif _PY_TITLE.fullmatch(title) and not any(p.startswith("_") for p in title.split(".")):
            found.setdefault(title, Entity(title, "function"))
    return sorted(found.values(), key=lambda e: e.name)


def split_entities(entities: Sequence[Entity]) -> tuple[list[Entity], list[Entity]]:
    """(taught, held out) by name."""
    taught = [e for e in entities if e.name in ALWAYS_TAUGHT or not held_out_entity(e.name)]
    held = [e for e in entities if e.name not in ALWAYS_TAUGHT and held_out_entity(e.name)]
    return taught, held


def lookups(rng: random.Random, run: RunTool, entities: Sequence[Entity]) -> Iterator[Conversation]:
    for entity in entities:
        result = run("search", {"query": entity.name})
        snippet = first_hit_about(result, entity.name)
        if snippet is None:
            continue  # the index ranks another page first: not a clean lesson in copying
        questions = COMMAND_QUESTIONS if entity.kind == "command" else FUNCTION_QUESTIONS
        yield {
            "messages": [
                user(rng.choice(questions).format(n=entity.name)),
                _call("search", {"query": entity.name}),
                _tool(result),
                assistant(f"`{entity.name}`: {gist(snippet)}"),
            ]
        }


_SYLLABLES = ["bra", "zo", "quim", "fle", "tor", "vax", "nix", "plu", "gri", "mo", "sku", "yel"]


def made_up_name(rng: random.Random) -> str:
    name = "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 3)))
    return name if rng.random() < 0.6 else f"{rng.choice(['os', 'json', 're', 'math'])}.{name}"


def unknowns(rng: random.Random, run: RunTool, n: int, exclude: set[str]) -> Iterator[Conversation]:
    """Questions whose answer search cannot find: the model must say it does not know."""
    made = tries = 0
    while made < n and tries < 50 * n:
        tries += 1
        name = made_up_name(rng)
        if name in exclude:
            continue
        result = run("search", {"query": name})
        # A result with hits is a near miss (synth_chat), answered by naming the closest.
        if result != NO_RESULTS:
            continue
        kind = "command" if "." not in name else "function"
        questions = COMMAND_QUESTIONS if kind == "command" else FUNCTION_QUESTIONS
        made += 1
        yield {
            "messages": [
                user(rng.choice(questions).format(n=name)),
                _call("search", {"query": name}),
                _tool(result),
                assistant(rng.choice(IDK).format(q=f"`{name}`")),
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
                user(rng.choice(PROGRAM_ASKS).format(t=task)),
                _call("python", {"code": code}),
                _tool(result),
                assistant(f"```python\n{code}\n```\nIt prints {output}."),
            ]
        }


def python_stdout(result: str) -> str | None:
    """What a clean run printed, from the python tool's result (its stdout, then
    `exit status: 0`), or None for a run that failed or wrote to stderr."""
    body, sep, status = result.rpartition("\n")
    if status != "exit status: 0" or not sep or "stderr:\n" in body:
        return None
    return body.strip() or None


def identity(rng: random.Random, n: int) -> Iterator[Conversation]:
    for _ in range(n):
        yield {
            "messages": [
                user(rng.choice(IDENTITY_QUESTIONS)),
                assistant(rng.choice(IDENTITY_ANSWERS)),
            ]
        }


def small_talk(pairs: Sequence[tuple[str, str]]) -> Iterator[Conversation]:
    for said, answer in pairs:
        if not (_OFF_LIMITS.search(said) or _OFF_LIMITS.search(answer)):
            yield {"messages": [user(said), assistant(answer)]}


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


# One epoch of fine-tuning, by kind. Calculator and look-ups carry the accuracy
# targets and copying arrives late, so they dominate; every skill is mixed from step one.
DEFAULT_COUNTS = {
    "calculator": 9000,
    "lookup": 8000,
    "unknown": 2500,
    "python": 1200,
    "functions": 6000,  # write a function, run it, fix it: synth_programs
    "docstrings": 2000,  # complete a signature and docstring, no tools: synth_programs
    "identity": 800,
    "small_talk_passes": 2,
    # synth_chat's kinds: useful where the index helps, honest where it cannot.
    "small_talk_chat": 2000,
    "world_idk": 2000,
    "howto": 1800,
    "what_does": 700,
    "definition": 800,
    "near_miss": 1500,
}
UNKNOWN_EVAL_SEED = 2_000_003


def unknown_eval_names(n: int = 20) -> list[str]:
    """Made-up names for the honesty evaluation; fine-tuning never asks about them."""
    rng = random.Random(UNKNOWN_EVAL_SEED)
    names: list[str] = []
    while len(names) < n:
        if (name := made_up_name(rng)) not in names:
            names.append(name)
    return names


def synthesize(
    output: str | Path,
    knowledge_db: str | Path,
    *,
    counts: Mapping[str, int] = DEFAULT_COUNTS,
    seed: int = 0,
) -> dict[str, int]:
    """Write the shuffled tool-use conversations (`{"messages", "tools"}` per line, what
    `fireside train sft` reads) to `output`; return how many of each kind."""
    # synth_programs imports this module.
    from fireside.data.synth_programs import docstring_conversations, function_conversations
    from fireside.tools import builtin_tools, tool_specs
    from fireside.tools.base import run_tool

    tools = builtin_tools(Path(knowledge_db))
    by_name = {t.name: t for t in tools}

    def run(name: str, arguments: dict[str, Any]) -> str:
        return run_tool(by_name[name], arguments)[0]

    rng = random.Random(seed)
    taught, _ = split_entities(index_entities(knowledge_db))
    # Commands are fewer than Python names and asked about more: each is taught twice.
    taught += [e for e in taught if e.kind == "command"]
    rng.shuffle(taught)
    passes = max(1, -(-counts["lookup"] // max(len(taught), 1)))
    chosen = (taught * passes)[: counts["lookup"]]
    held_problems = {p.expression for p in held_out_problems()}
    kinds: dict[str, list[Conversation]] = {
        "calculator": list(calculator(rng, run, counts["calculator"], held_problems)),
        "lookup": list(lookups(rng, run, chosen)),
        "unknown": list(unknowns(rng, run, counts["unknown"], set(unknown_eval_names()))),
        "python": list(programs(rng, run, counts["python"])),
        "functions": list(function_conversations(rng, run, counts.get("functions", 0))),
        "docstrings": list(docstring_conversations(rng, counts.get("docstrings", 0))),
        "identity": list(identity(rng, counts["identity"])),
        "small_talk": list(small_talk(chatterbot_pairs())) * counts["small_talk_passes"],
    }
    from fireside.data.synth_chat import chat_kinds

    kinds |= chat_kinds(rng, run, knowledge_db, taught, counts)
    specs = tool_specs(tools)
    # A conversation that says which tools it offers keeps them (none, for a stub to complete).
    rows = [{"tools": specs, **c} for convs in kinds.values() for c in convs]
    rng.shuffle(rows)
    path = Path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return {k: len(v) for k, v in kinds.items()}
