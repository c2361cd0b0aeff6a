"""`fireside data synth-chat`: chat and code fine-tuning data made from what this machine carries.

No chat data set can be downloaded here, so conversations are built from local facts whose
answers are right by construction: arithmetic, man pages' NAME lines ("ls - list directory
contents"), and standard-library functions with docstrings (task: the docstring; answer: the
source). Enough to teach a small model the turn format and short, on-topic answers.
"""

from __future__ import annotations

import ast
import gzip
import json
import random
import re
import sysconfig
from collections.abc import Iterator
from pathlib import Path
from typing import Any

Conversation = dict[str, Any]

IDENTITY_QUESTIONS = [
    "Who are you?",
    "What are you?",
    "What is your name?",
    "Introduce yourself.",
    "Are you ChatGPT?",
]
IDENTITY_ANSWER = (
    "I am Fireside, a small language model trained from scratch on the text and code that "
    "came with this computer. I can chat, answer short questions and write some Python."
)
GREETINGS = ["Hello!", "Hi", "Hey there", "Good morning", "Hello, how are you?"]
GREETING_ANSWERS = [
    "Hello! How can I help you today?",
    "Hi! What would you like to talk about?",
    "Hello! Ask me anything about Python or the command line.",
]


# `.SH NAME` (quoted or not), maybe a formatting request line, then `name \- what`
# (the dash spelled \-, \(em or -).
_NAME_LINE = re.compile(
    r'^\.SH\s+"?NAME"?[ \t]*\n(?:\.[A-Za-z]+[^\n]*\n)?(.+?)\s+(?:\\-|\\\(em|-)\s+(.+?)\s*$', re.M
)


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


def identity(rng: random.Random) -> Iterator[Conversation]:
    for q in IDENTITY_QUESTIONS:
        yield {"messages": [user(q), assistant(IDENTITY_ANSWER)]}
    for g in GREETINGS:
        yield {"messages": [user(g), assistant(rng.choice(GREETING_ANSWERS))]}


def arithmetic(rng: random.Random, n: int) -> Iterator[Conversation]:
    ops = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}
    for _ in range(n):
        a, b, op = rng.randint(0, 99), rng.randint(0, 99), rng.choice(list(ops))
        q = rng.choice(["What is {a} {op} {b}?", "Compute {a} {op} {b}.", "{a} {op} {b} = ?"])
        yield {
            "messages": [
                user(q.format(a=a, op=op, b=b)),
                assistant(f"{a} {op} {b} = {ops[op](a, b)}"),
            ]
        }


def man_pages(
    root: Path = Path("/usr/share/man/man1"), limit: int = 5000
) -> Iterator[Conversation]:
    """'What does the `ls` command do?' answered from the page's NAME line."""
    for path in sorted(root.glob("*.1*.gz"))[:limit]:
        try:
            text = gzip.decompress(path.read_bytes()).decode("utf-8", "replace")
        except (OSError, EOFError, gzip.BadGzipFile):
            continue
        # The NAME section in roff: `.SH NAME` then `name \- description`.
        m = _NAME_LINE.search(text)
        if not m:
            continue
        names = re.sub(r"\\f[BIRP]|\\", "", m.group(1)).strip()
        what = re.sub(r"\\f[BIRP]|\\[-&]|\\", "", m.group(2)).strip().rstrip(".")
        command = names.split(",")[0].strip()
        if not re.fullmatch(r"[\w.+\-]{1,40}", command) or len(what) < 8:
            continue
        yield {
            "messages": [
                user(f"What does the `{command}` command do?"),
                assistant(f"`{command}`: {what}."),
            ]
        }


def stdlib_functions(limit: int = 5000, max_lines: int = 25) -> Iterator[Conversation]:
    """'Write a Python function f(x) that <docstring>' answered with the standard library's code."""
    root = Path(sysconfig.get_paths()["stdlib"])
    count = 0
    for path in sorted(root.glob("*.py")):
        try:
            source = path.read_text(encoding="utf-8")
            tree = ast.parse(source)
        except (OSError, UnicodeDecodeError, SyntaxError, ValueError):
            continue
        for node in tree.body:
            if not isinstance(node, ast.FunctionDef) or node.name.startswith("_"):
                continue
            doc = ast.get_docstring(node)
            if not doc or node.end_lineno is None:
                continue
            if node.end_lineno - node.lineno + 1 > max_lines:
                continue
            summary = doc.strip().split("\n\n")[0].replace("\n", " ")
            code = ast.get_source_segment(source, node)
            if not code or len(summary) < 10:
                continue
            args = ast.unparse(node.args)
            task = f"Write a Python function `{node.name}({args})`: {summary}"
            yield {"messages": [user(task), assistant(f"```python\n{code}\n```")]}
            count += 1
            if count >= limit:
                return


def synthesize(output: Path, seed: int = 0, arithmetic_n: int = 1500) -> dict[str, int]:
    """Write the mixed, shuffled conversations to `output` (JSONL); return counts per kind."""
    rng = random.Random(seed)
    kinds = {
        "identity": list(identity(rng)) * 20,  # few distinct facts, repeated so they stick
        "arithmetic": list(arithmetic(rng, arithmetic_n)),
        "man-pages": list(man_pages()),
        "stdlib-code": list(stdlib_functions()),
    }
    rows = [c for convs in kinds.values() for c in convs]
    rng.shuffle(rows)
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return {k: len(v) for k, v in kinds.items()}
