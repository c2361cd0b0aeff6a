"""Function-writing tasks, the conversations made from them, and `fireside eval --programs`:
references pass their hidden tests and bugs fail them in the sandbox, held-out requests stay out
of training, and the evaluation's rule scores a right answer 1 and a wrong one 0."""

from __future__ import annotations

import json
import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import torch

from fireside.data.program_families import FAMILIES
from fireside.data.program_tasks import (
    ASKS,
    Params,
    ProgramTask,
    all_params,
    held_out_key,
    held_out_tasks,
    make_task,
    random_params,
    random_task,
    request_text,
)
from fireside.data.synth_programs import function_conversations, what_went_wrong
from fireside.data.synth_tools import synthesize
from fireside.eval.programs_eval import check_answer, last_python_block, run_programs_eval
from fireside.eval.report import EvalResults, write_report
from fireside.model import Tokenizer, Transformer, load_pretrained, save_pretrained
from fireside.sandbox import Limits, run_python
from fireside.tools import builtin_tools, tool_specs
from fireside.tools.base import run_tool
from fireside.tools.extract import python_source_entries
from fireside.tools.knowledge import build_index
from tests.conftest import tiny_config

FAST = Limits(timeout_s=10.0, cpu_s=5, memory_bytes=512 << 20)
BUNDLED = Path(__file__).parent.parent / "fireside" / "assets" / "fireside-tiny"


def _reference(name: str, **consts: int | str) -> Any:
    """A family's reference solution as a function, under its first name and arguments."""
    family = next(f for f in FAMILIES if f.name == name)
    params = Params(family, family.functions[0], family.args[0], tuple(consts.items()))
    scope: dict[str, Any] = {}
    exec(params.define(family.body), scope)
    return scope[params.function]


def test_references_give_the_answers_worked_out_by_hand() -> None:
    # The hidden tests' expected values come from the references, so they must be right.
    assert _reference("count_vowels")("Apple pIE") == 4
    assert _reference("is_palindrome")("Level") is True
    assert _reference("is_anagram")("aab", "abb") is False
    assert _reference("caesar", k=3)("xyz") == "abc"
    assert _reference("second_largest")([4, 9, 9, 1, 3]) == 4
    assert _reference("running_total")([1, 2, 3]) == [1, 3, 6]
    assert _reference("chunk", k=2)([1, 2, 3, 4, 5]) == [[1, 2], [3, 4], [5]]
    assert _reference("merge_sum")({"x": 1, "y": 2}, {"y": 5}) == {"x": 1, "y": 7}
    assert _reference("gcd")(12, 18) == 6
    assert [_reference("is_prime")(n) for n in (0, 1, 2, 9, 25, 29)] == [0, 0, 1, 0, 0, 1]
    assert [_reference("is_power_of_two")(n) for n in (0, 1, 2, 6, 64)] == [0, 1, 1, 0, 1]
    assert _reference("fizzbuzz", k=3, m=5)(30) == "FizzBuzz"
    assert _reference("collatz_steps")(6) == 8
    assert _reference("time_to_minutes")("01:30") == 90
    assert _reference("format_seconds")(65) == "1:05"
    assert _reference("parse_pairs", k=";")("a=1;b=22") == {"a": 1, "b": 22}
    assert _reference("file_extension")("archive.tar.gz") == "gz"


def _sandbox_status(code: str) -> str:
    return run_python(code, FAST).status


def test_every_family_passes_its_hidden_tests_and_its_bugs_fail_them() -> None:
    assert len(FAMILIES) >= 40 and len({f.name for f in FAMILIES}) == len(FAMILIES)
    tasks = [make_task(random_params(random.Random(i), f), random.Random(i)) for i, f in
             enumerate(FAMILIES)]  # fmt: skip
    programs = [t.test_program(t.solution) for t in tasks]
    bugs = [(t.key, t.test_program(b)) for t in tasks for b in t.bugs]
    with ThreadPoolExecutor(max_workers=2) as pool:
        right = list(pool.map(_sandbox_status, programs))
        wrong = list(pool.map(_sandbox_status, [p for _, p in bugs]))
    assert [t.key for t, s in zip(tasks, right, strict=True) if s != "passed"] == []
    assert [k for (k, _), s in zip(bugs, wrong, strict=True) if s == "passed"] == []
    assert all(len(t.tests) >= 5 and not set(t.examples) & {c for c, _ in t.tests} for t in tasks)


def test_thousands_of_distinct_requests() -> None:
    taught = [p for f in FAMILIES for p in all_params(f) if not held_out_key(p.key)]
    requests = [request_text(p, ask) for p in taught for ask in range(len(ASKS))]
    assert len(set(requests)) == len(requests) > 4000


def test_held_out_requests_never_reach_training() -> None:
    held = held_out_tasks()
    assert len(held) == 100 and len({t.request for t in held}) == 100
    assert all(held_out_key(t.key) for t in held) and len({t.family for t in held}) >= 40
    assert held_out_tasks()[7] == held[7]  # fixed: the same 100 every time
    rng = random.Random(0)
    trained = [random_task(rng) for _ in range(5000)]
    assert not any(held_out_key(t.key) for t in trained)
    assert not {t.request for t in trained} & {t.request for t in held}


@pytest.fixture(scope="module")
def knowledge(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = '"""Widgets."""\n' + "".join(
        f'def part{i}(x):\n    """Return widget {i}."""\n' for i in range(20)
    )
    db = tmp_path_factory.mktemp("kb") / "k.db"
    build_index(db, {"python": python_source_entries("widgets", source, "widgets.py")})
    return db


def test_conversations_run_the_real_tool_and_fix_their_bugs(knowledge: Path) -> None:
    [python] = builtin_tools(knowledge, names=("python",))

    def run(name: str, arguments: dict[str, Any]) -> str:
        return run_tool(python, arguments)[0]

    convs = list(function_conversations(random.Random(3), run, 40))
    assert len(convs) == 40
    fixed = [c for c in convs if len(c["messages"]) == 6]
    assert 3 <= len(fixed) <= 20  # about a quarter start with a bug
    bundled = Tokenizer.from_dir(BUNDLED)
    specs = tool_specs(builtin_tools(knowledge))
    for conv in convs:
        messages = conv["messages"]
        calls = [m["tool_calls"][0]["function"] for m in messages if m.get("tool_calls")]
        results = [m["content"] for m in messages if m["role"] == "tool"]
        # Every tool result is what the real tool says to that call.
        assert results == [run_tool(python, c["arguments"])[0] for c in calls]
        assert (
            results[-1].endswith("exit status: 0") and "```python\ndef " in messages[-1]["content"]
        )
        if len(messages) == 6:
            assert results[0] != results[1] and messages[3]["content"].endswith("Let me fix it.")
        # It fits the bundled model's context with the tools listed.
        assert len(bundled.render_chat(messages, tools=specs).ids) <= 1024


def test_what_went_wrong_names_the_call_or_the_error() -> None:
    task = held_out_tasks()[0]
    wrong = "\n".join(["nope", *task.example_outputs[1:]]) + "\nexit status: 0"
    assert what_went_wrong(task, wrong) == (
        f"{task.examples[0]} printed nope, but it should be {task.example_outputs[0]}. Let me fix it."
    )
    crash = "stderr:\nTraceback (most recent call last):\nTypeError: bad\nexit status: 1"
    assert what_went_wrong(task, crash) == "That raised TypeError. Let me fix it."
    right = "\n".join(task.example_outputs) + "\nexit status: 0"
    assert what_went_wrong(task, right) is None


def test_synthesize_makes_the_functions_kind_without_held_out_requests(
    knowledge: Path, tmp_path: Path
) -> None:
    out = tmp_path / "sft.jsonl"
    counts = {"calculator": 2, "lookup": 2, "unknown": 1, "python": 1, "functions": 12,
              "identity": 1, "small_talk_passes": 1}  # fmt: skip
    made = synthesize(out, knowledge, counts=counts)
    assert made["functions"] == 12
    asked = {json.loads(line)["messages"][0]["content"] for line in out.read_text().splitlines()}
    functions = {q for q in asked if "function `" in q or "in Python: it" in q}
    assert len(functions) >= 12
    assert not asked & {t.request for t in held_out_tasks()}


def _answer(code: str) -> str:
    return f"Here it is.\n```python\n{code}\n```\nRunning it printed something."


def test_the_rule_scores_a_right_answer_1_and_a_wrong_one_0() -> None:
    task: ProgramTask = held_out_tasks()[3]
    assert check_answer(task, _answer(task.solution), FAST) == "passed"
    assert check_answer(task, _answer(task.bugs[0]), FAST) == "failed"
    assert check_answer(task, "I would write a loop.", FAST) == "no code"
    # The last block is the answer: a wrong try then the fix passes; the reverse fails.
    assert check_answer(task, _answer(task.bugs[0]) + _answer(task.solution), FAST) == "passed"
    assert check_answer(task, _answer(task.solution) + _answer(task.bugs[0]), FAST) == "failed"
    renamed = task.solution.replace(f"def {task.function}(", "def something_else(")
    assert check_answer(task, _answer(renamed), FAST) == "failed"
    assert last_python_block("```python\nx = 1") == "x = 1"


def test_the_eval_runs_end_to_end_on_a_tiny_model(
    tmp_path: Path, tokenizer: Tokenizer, knowledge: Path
) -> None:
    torch.manual_seed(0)
    model = Transformer(tiny_config(tokenizer.vocab_size, max_position_embeddings=1024))
    model.init_weights(std=0.5)
    save_pretrained(model, tokenizer, tmp_path / "model")
    bundle = load_pretrained(tmp_path / "model")
    chosen = held_out_tasks()[:3]
    result = run_programs_eval(bundle, knowledge, chosen, max_tokens=48)
    assert [a.request for a in result.answers] == [t.request for t in chosen]
    for task, answer in zip(chosen, result.answers, strict=True):
        assert answer.status == check_answer(task, answer.answer, FAST)
    right, n = result.score()
    assert n == 3 and 0 <= right <= 3
    report = write_report(tmp_path / "card", tmp_path / "model", model.config,
                          EvalResults(programs=result))  # fmt: skip
    assert "functions written and tested (held out)" in report.read_text()
    saved = json.loads((tmp_path / "card" / "eval.json").read_text())["programs"]["answers"]
    assert [a["request"] for a in saved] == [t.request for t in chosen]
