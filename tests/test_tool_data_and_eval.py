"""The bundled model's tool-use data (right by construction, held-out sets kept out) and the
evaluation that asks the held-out questions through the tool loop."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fireside.data.problems import held_out_problems
from fireside.data.synth_tools import (
    first_hit_about,
    gist,
    held_out_entity,
    index_entities,
    python_stdout,
    synthesize,
    unknown_eval_names,
)
from fireside.eval.tool_eval import ToolTask, _states, _states_number, run_tool_eval, tasks
from fireside.model import Tokenizer, load_pretrained
from fireside.tools import builtin_tools
from fireside.tools.base import run_tool
from fireside.tools.calculator import evaluate
from fireside.tools.extract import python_source_entries
from fireside.tools.knowledge import build_index
from fireside.train.chat_data import LengthReport, load_sft_file

SMALL = {
    "calculator": 40,
    "lookup": 60,
    "unknown": 10,
    "python": 4,
    "identity": 3,
    "small_talk_passes": 1,
}


@pytest.fixture(scope="module")
def knowledge(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An index of 300 documented functions: enough that some fall in the held-out fiftieth."""
    source = '"""Tools for widgets."""\n' + "".join(
        f'def part{i}(x):\n    """Return widget number {i} for x. It is never empty."""\n'
        for i in range(300)
    )
    db = tmp_path_factory.mktemp("kb") / "k.db"
    build_index(db, {"python": python_source_entries("widgets", source, "widgets.py")})
    return db


def test_answers_are_checked_the_way_the_model_card_says() -> None:
    states_36 = _states_number("36")
    assert states_36("15% of 240 = 36") and states_36("It is 36.")
    assert not states_36("360") and not states_36("3.6") and not states_36("36.5")
    assert _states_number("0.3")("0.1 + 0.2 = 0.3")
    says = _states("tar - an archiving utility.")
    assert says("`tar`: TAR - an  archiving utility") and not says("tar - a compression tool")
    assert gist("Short. Then a longer second sentence here. A third.") == (
        "Short. Then a longer second sentence here."
    )
    assert python_stdout("5050\nexit status: 0") == "5050"
    assert python_stdout("stderr:\nTraceback\nexit status: 1") is None
    assert first_hit_about("tar(1): an archiver\nptar(1): another", "tar") == "an archiver"
    assert first_hit_about("ptar(1): another", "tar") is None


def test_synthesized_conversations_are_right_by_construction(
    knowledge: Path, tmp_path: Path, tokenizer: Tokenizer
) -> None:
    out = tmp_path / "sft.jsonl"
    counts = synthesize(out, knowledge, counts=SMALL)
    assert counts["calculator"] == 40 and counts["lookup"] > 0 and counts["unknown"] == 10
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    tools = {t.name: t for t in builtin_tools(knowledge)}
    held_problems = {p.expression for p in held_out_problems()}
    asked: set[str] = set()
    for row in rows:
        assert [t["function"]["name"] for t in row["tools"]] == ["calculator", "search", "python"]
        messages = row["messages"]
        if len(messages) != 4:
            continue
        call = messages[1]["tool_calls"][0]["function"]
        # The tool's result in the data is what the real tool says to that call.
        assert messages[2]["content"] == run_tool(tools[call["name"]], call["arguments"])[0]
        if call["name"] == "calculator":
            expr = call["arguments"]["expression"]
            assert expr not in held_problems
            assert messages[3]["content"] == f"{expr} = {evaluate(expr)}"
        elif call["name"] == "search":
            asked.add(call["arguments"]["query"])
    assert not any(held_out_entity(name) for name in asked if name.startswith("widgets."))
    assert not asked & set(unknown_eval_names())
    # And `fireside train sft` reads the file, with the assistant's turns as targets.
    examples = load_sft_file(out, tokenizer, 512, LengthReport())
    assert len(examples) == len(rows) and all(sum(e.mask) > 0 for e in examples)


def test_evaluation_asks_only_held_out_questions(knowledge: Path) -> None:
    chosen = tasks(knowledge, lookups=4)
    by = {c: [t for t in chosen if t.category == c] for c in ("arithmetic", "lookup", "honesty")}
    assert len(by["arithmetic"]) == 100 and len(by["honesty"]) == 20
    assert all(
        t.expected == evaluate(p.expression)
        for t, p in zip(by["arithmetic"], held_out_problems(), strict=True)
    )
    held = [e.name for e in index_entities(knowledge) if held_out_entity(e.name)]
    assert by["lookup"] and all(
        any(f"`{n}`" in t.question or f" {n} " in f" {t.question} " for n in held)
        for t in by["lookup"]
    )


def test_the_evaluation_runs_each_question_through_the_tool_loop(
    tiny_model_dir: Path, knowledge: Path
) -> None:
    bundle = load_pretrained(tiny_model_dir)
    chosen = [
        ToolTask("identity", "Who are you?", "Fireside", lambda a: "fireside" in a.lower()),
        ToolTask("arithmetic", "What is 2 + 2?", "4", _states_number("4")),
    ]
    result = run_tool_eval(bundle, knowledge, chosen)
    assert [a.question for a in result.answers] == ["Who are you?", "What is 2 + 2?"]
    for task, answer in zip(chosen, result.answers, strict=True):
        assert isinstance(answer.answer, str) and answer.correct == task.check(answer.answer)
    assert result.score("identity")[1] == 1
