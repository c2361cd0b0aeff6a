"""Synthesized chat data is well-formed and its answers are right by construction."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

from fireside.data.synth import arithmetic, stdlib_functions, synthesize
from fireside.model import Tokenizer
from fireside.train.chat_data import LengthReport, load_sft_file


def test_arithmetic_answers_are_correct() -> None:
    import random

    for conv in arithmetic(random.Random(1), 200):
        question, answer = (m["content"] for m in conv["messages"])
        a, op, b = re.search(r"(\d+) ([-+*]) (\d+)", question).groups()  # type: ignore[union-attr]
        assert answer == f"{a} {op} {b} = {eval(f'{a} {op} {b}')}"


def test_code_answers_define_the_requested_function() -> None:
    convs = list(stdlib_functions(limit=50))
    assert len(convs) == 50
    for conv in convs:
        task, answer = (m["content"] for m in conv["messages"])
        name = re.search(r"`(\w+)\(", task).group(1)  # type: ignore[union-attr]
        code = answer.removeprefix("```python\n").removesuffix("\n```")
        tree = ast.parse(code)
        assert isinstance(tree.body[0], ast.FunctionDef) and tree.body[0].name == name


def test_synthesized_file_is_valid_sft_data(tmp_path: Path, tokenizer: Tokenizer) -> None:
    out = tmp_path / "chat.jsonl"
    counts = synthesize(out, seed=3, arithmetic_n=50)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == sum(counts.values()) and counts["stdlib-code"] > 100
    report = LengthReport()
    examples = load_sft_file(out, tokenizer, max_len=4096, report=report)
    assert len(examples) == len(rows) and report.truncated == report.dropped == 0
    assert all(any(ex.mask) for ex in examples)
