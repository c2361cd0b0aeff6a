"""The model recipe's data: the pretraining mix and the arithmetic problems' held-out set."""

from __future__ import annotations

import json
from pathlib import Path

from fireside.data.mix import held_out, mix
from fireside.data.problems import held_out_problems, problem


def _write(path: Path, texts: list[str]) -> None:
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))


def test_mix_draws_each_share_and_never_trains_on_held_out_documents(tmp_path: Path) -> None:
    prose = [f"Document {i} says something about topic {i * 7}." for i in range(3000)]
    code = [f"def f{i}(x):\n    return x * {i}\n" for i in range(3000)]
    _write(tmp_path / "man-pages.jsonl", prose)
    _write(tmp_path / "python-stdlib.jsonl", code)
    report = mix(tmp_path, tmp_path / "mix", {"man-pages": 20_000, "python-stdlib": 5_000})

    train = [
        json.loads(line)
        for line in (tmp_path / "mix" / "train.jsonl").read_text().split("\n")
        if line
    ]
    sources = {row["source"] for row in train}
    assert sources == {"man-pages", "python-stdlib"}
    assert 20_000 <= report.train_chars["man-pages"] < 20_200
    assert 5_000 <= report.train_chars["python-stdlib"] < 5_200
    held_prose = (tmp_path / "mix" / "held-out-prose.txt").read_text()
    held_code = (tmp_path / "mix" / "held-out-code.txt").read_text()
    assert held_prose and held_code
    assert not any(held_out(row["text"]) for row in train)
    assert all(row["text"] not in held_prose + held_code for row in train)


def test_held_out_problems_are_fixed_distinct_and_never_drawn_for_training() -> None:
    problems = held_out_problems()
    assert problems == held_out_problems()
    assert len({p.expression for p in problems}) == 100
    for p in problems:
        ops = sum(p.expression.count(f" {op} ") for op in "+-*/")
        assert 2 <= ops <= 4, p.expression
    import random

    rng = random.Random(0)
    drawn = [problem(rng) for _ in range(500)]
    assert any("%" in p.expression for p in drawn)
    assert any("times" in p.question or "plus" in p.question for p in drawn)
